"""Settings that act (mode, SVMs, nodes, passwords) and who may see and change what."""

from __future__ import annotations

from ndmpd.protocol.client import NdmpClient
from tests.rest.test_api_basics import SESSIONS, add_user, assert_error, client, fits_swagger
from tests.serverproc import ServerProcess, start_server

NDMP = "/api/protocols/ndmp"


def _auth(server: ServerProcess, password: str, how: str = "md5") -> int:
    with NdmpClient("127.0.0.1", server.port, timeout=5) as c:
        assert c.open().error == 0
        reply = c.auth_md5("admin", password) if how == "md5" else c.auth_text("admin", password)
        return reply.error


def test_svm_settings_act_at_once_and_survive_restart(server: ServerProcess) -> None:
    password = server.ndmp_password()
    with client(server) as c:
        svm = c.get(f"{NDMP}/svms").json()["records"][0]["svm"]
        href = f"{NDMP}/svms/{svm['uuid']}"
        assert _auth(server, password) == 0
        assert _auth(server, password, "text") != 0  # TEXT is off by default
        r = c.patch(href, json={"authentication_types": ["plaintext"]})
        assert r.status_code == 200
        assert _auth(server, password, "text") == 0
        assert _auth(server, password) != 0
        assert c.patch(href, json={"authentication_types": ["challenge"], "enabled": False})
        assert _auth(server, password) != 0
        body = c.get(href).json()
        fits_swagger(body, "ndmp_svm")
        assert body["enabled"] is False and body["authentication_types"] == ["challenge"]
        assert c.patch(href, json={}).status_code == 200  # spec quirk Q3: a no-op
        r = c.patch(href, json={"authentication_types": ["plaintext_sso", "challenge"]})
        assert_error(r, 400, "65601551", "authentication_types")
        r = c.patch(href, json={"authentication_types": []})
        assert_error(r, 400, "262185")
        r = c.patch(href, json={"authentication_types": ["challenge", "challenge"]})
        assert_error(r, 400, "262222")
        assert_error(c.patch(f"{NDMP}/svms/{'0' * 36}", json={}), 404, "4")
    server.stop()
    again = start_server(server.base)
    try:
        assert _auth(again, password) != 0
        with client(again) as c:
            assert c.get(href).json()["enabled"] is False
            # the collection PATCH: by filter, and by records
            r = c.patch(f"{NDMP}/svms", params={"svm.name": "svm*"}, json={"enabled": True})
            assert r.status_code == 200 and r.json()["num_records"] == 1
            assert _auth(again, password) == 0
            assert_error(c.patch(f"{NDMP}/svms", json={"enabled": False}), 400, "262212")
            assert c.get(href).json()["enabled"] is True
            r = c.patch(
                f"{NDMP}/svms",
                json={"records": [{"svm": {"uuid": svm["uuid"]}, "enabled": False}]},
            )
            assert r.status_code == 200 and r.json()["num_records"] == 1
            assert c.get(href).json()["enabled"] is False
            r = c.patch(f"{NDMP}/svms", json={"records": [{"svm": {"uuid": "x"}}]})
            assert_error(r, 404, "4")
    finally:
        again.stop()


def test_mode_switch_changes_endpoints_and_owner(server: ServerProcess) -> None:
    with client(server) as c:
        assert_error(c.get(f"{NDMP}/nodes"), 400, "68812801")
        node = c.get("/api/cluster/nodes").json()["records"][0]
        assert_error(c.get(f"{NDMP}/nodes/{node['uuid']}"), 400, "68812801")
        assert c.patch(NDMP, json={}).status_code == 200  # no-op
        assert c.get(NDMP).json()["mode"] == "svm"
        assert c.patch(NDMP, json={"mode": "node"}).status_code == 200
        assert c.get(NDMP).json()["mode"] == "node"
        assert_error(c.get(f"{NDMP}/svms"), 400, "65601536")
        svm = c.get("/api/svm/svms").json()["records"][0]
        assert_error(c.get(f"{NDMP}/svms/{svm['uuid']}"), 400, "65601536")
        assert_error(c.get(f"{NDMP}/svms/{svm['uuid']}/passwords/admin"), 400, "65601536")
        nodes = c.get(f"{NDMP}/nodes", params={"fields": "*"}).json()
        fits_swagger(nodes, "ndmp_node_response")
        rec = nodes["records"][0]
        assert rec["node"]["uuid"] == node["uuid"] and "password" not in rec
        href = f"{NDMP}/nodes/{node['uuid']}"
        assert_error(c.patch(href, json={"enabled": True}), 400, "68812800")
        r = c.patch(href, json={"user": "ndmpuser", "password": "Node-Pw-1"})
        assert r.status_code == 200
        one = c.get(href).json()
        fits_swagger(one, "ndmp_node")
        assert one["user"] == "ndmpuser" and "password" not in one
        assert "Node-Pw-1" not in c.get(href, params={"fields": "**"}).text
        assert_error(c.get(href, params={"fields": "password"}), 400, "262249")
        assert_error(c.get(f"{NDMP}/nodes?password=x"), 400, "262202")
        r = c.patch(href, json={"authentication_types": ["plaintext"]})
        assert_error(r, 400, "262185", "authentication_types")  # challenge stays on
        with NdmpClient("127.0.0.1", server.port, timeout=5) as n:
            assert n.open().error == 0
            assert n.auth_md5("ndmpuser", "Node-Pw-1").error == 0
        r = c.patch(f"{NDMP}/nodes", params={"node.name": "*"}, json={"enabled": False})
        assert r.status_code == 200 and r.json()["num_records"] == 1
        r = c.patch(f"{NDMP}/nodes", json={"records": [{"node": {"uuid": node["uuid"]}}]})
        assert r.status_code == 200
        assert c.get(href).json()["enabled"] is False
        with NdmpClient("127.0.0.1", server.port, timeout=5) as n:
            assert n.open().error == 0
            assert n.auth_md5("ndmpuser", "Node-Pw-1").error != 0
        assert_error(c.get(f"{NDMP}/nodes/{'0' * 36}"), 404, "4")
        assert "Node-Pw-1" not in server.log_text()
        assert c.patch(NDMP, json={"mode": "svm"}).status_code == 200
        assert c.get(f"{NDMP}/svms").status_code == 200


def test_password_endpoint(shared_server: ServerProcess) -> None:
    with client(shared_server) as c:
        svm = c.get("/api/svm/svms").json()["records"][0]
        base = f"{NDMP}/svms/{svm['uuid']}/passwords"
        body = c.get(f"{base}/admin").json()
        assert body["password"] == shared_server.ndmp_password()
        assert body["user"] == "admin" and body["svm"]["uuid"] == svm["uuid"]
        assert body["_links"]["self"]["href"] == f"{base}/admin"
        assert_error(c.get(f"{base}/nobody"), 404, "4", "user")
        assert_error(c.get(f"{base}/ndmp+user%2Fx"), 404, "4", "user")
        assert_error(c.get(f"{NDMP}/svms/{'0' * 36}/passwords/admin"), 404, "4")
        assert_error(c.get(f"{base}"), 404, "4")  # no collection


def test_roles_and_svm_scoped_users(tmp_path) -> None:
    srv = start_server(tmp_path / "srv", svms={"svm1": ["vol1"], "svm2": ["vol2"]})
    try:
        ro = add_user(srv, "viewer", "readonly")
        svm_admin = add_user(srv, "vsadmin", "admin", "svm2")
        add_user(srv, "other", "admin", "svm1")
        with client(srv) as admin:
            svms = {s["name"]: s["uuid"] for s in admin.get("/api/svm/svms").json()["records"]}
            node = admin.get("/api/cluster/nodes").json()["records"][0]["uuid"]
        # a readonly user reads everything and changes nothing
        with client(srv, "viewer", ro) as c:
            assert c.get(f"{NDMP}/svms").json()["num_records"] == 2
            assert c.get(SESSIONS).status_code == 200
            assert_error(c.patch(NDMP, json={"mode": "node"}), 403, "6")
            assert_error(c.patch(f"{NDMP}/svms/{svms['svm1']}", json={}), 403, "6")
            assert_error(c.request("DELETE", SESSIONS, params={"id": "1"}), 403, "6")
            assert_error(c.get(f"{NDMP}/svms/{svms['svm1']}/passwords/admin"), 403, "6")
        # an SVM administrator sees and touches its own SVM only
        svm2_pw = srv.ndmp_password("vsadmin", "svm2")
        with NdmpClient("127.0.0.1", srv.port) as own, NdmpClient("127.0.0.1", srv.port) as mine:
            own.open()
            assert own.auth_md5("admin", srv.ndmp_password("admin", "svm1")).error == 0
            mine.open()
            assert mine.auth_md5("vsadmin", svm2_pw).error == 0
            with client(srv, "vsadmin", svm_admin) as c:
                names = [r["svm"]["name"] for r in c.get(f"{NDMP}/svms").json()["records"]]
                assert names == ["svm2"]
                assert [r["name"] for r in c.get("/api/svm/svms").json()["records"]] == ["svm2"]
                assert_error(c.get(f"{NDMP}/svms/{svms['svm1']}"), 404, "4")
                assert c.get(f"{NDMP}/svms/{svms['svm2']}").status_code == 200
                sessions = c.get(SESSIONS, params={"fields": "svm.name"}).json()["records"]
                assert [s["svm"]["name"] for s in sessions] == ["svm2"]
                with client(srv) as admin:
                    every = admin.get(SESSIONS).json()["records"]
                assert len(every) == 2
                foreign = next(s for s in every if s["uuid"] == svms["svm1"])
                assert_error(c.get(foreign["_links"]["self"]["href"]), 404, "4")
                r = c.request("DELETE", SESSIONS, params={"id": foreign["id"]})
                assert r.status_code == 200 and r.json()["num_records"] == 0
                assert_error(c.patch(NDMP, json={"mode": "node"}), 403, "6")
                assert c.get(NDMP).status_code == 200
                r = c.patch(f"{NDMP}/svms/{svms['svm2']}", json={"enabled": True})
                assert r.status_code == 200
                assert_error(c.get(f"{NDMP}/nodes"), 403, "6")
                assert_error(c.get(f"{NDMP}/nodes/{node}"), 403, "6")
                base = f"{NDMP}/svms/{svms['svm2']}/passwords"
                assert c.get(f"{base}/vsadmin").json()["password"] == svm2_pw
                assert_error(c.get(f"{base}/admin"), 404, "4")  # never a cluster user's
                assert_error(c.get(f"{NDMP}/svms/{svms['svm1']}/passwords/other"), 404, "4")
    finally:
        srv.stop()


def test_svm_tunnelling_headers_scope_a_request_to_one_svm(tmp_path) -> None:
    """X-Dot-SVM-Name / X-Dot-SVM-UUID (spec §3.1): the request sees one SVM, as on its LIF."""
    srv = start_server(tmp_path / "srv", svms={"svm1": ["vol1"], "svm2": ["vol2"]})
    try:
        vs = add_user(srv, "vsadmin", "admin", "svm2")
        with client(srv) as admin:
            svms = {s["name"]: s["uuid"] for s in admin.get("/api/svm/svms").json()["records"]}
        with NdmpClient("127.0.0.1", srv.port) as one, NdmpClient("127.0.0.1", srv.port) as two:
            assert one.open().error == 0 and two.open().error == 0
            assert one.auth_md5("admin", srv.ndmp_password("admin", "svm1")).error == 0
            assert two.auth_md5("vsadmin", srv.ndmp_password("vsadmin", "svm2")).error == 0
            by_name, by_uuid = {"X-Dot-SVM-Name": "svm2"}, {"X-Dot-SVM-UUID": svms["svm2"]}
            for headers in (by_name, by_uuid, {**by_name, **by_uuid}):
                with client(srv) as c:
                    c.headers.update(headers)
                    got = c.get(SESSIONS, params={"fields": "svm.name"}).json()["records"]
                    assert [s["svm"]["name"] for s in got] == ["svm2"], headers
                    names = [r["svm"]["name"] for r in c.get(f"{NDMP}/svms").json()["records"]]
                    assert names == ["svm2"]
                    assert_error(c.get(f"{NDMP}/svms/{svms['svm1']}"), 404, "4")
                    assert_error(c.patch(NDMP, json={"mode": "node"}), 403, "6")  # cluster only
            with client(srv) as c:
                assert len(c.get(SESSIONS).json()["records"]) == 2  # no header: every SVM
                c.headers["X-Dot-SVM-Name"] = "svm1"
                c.headers["X-Dot-SVM-UUID"] = svms["svm2"]
                assert_error(c.get(SESSIONS), 400, "2")
                del c.headers["X-Dot-SVM-UUID"]
                c.headers["X-Dot-SVM-Name"] = "nosuch"
                assert_error(c.get(SESSIONS), 400, "2", "X-Dot-SVM-Name")
                del c.headers["X-Dot-SVM-Name"]
                c.headers["X-Dot-SVM-UUID"] = "0" * 36
                assert_error(c.get(SESSIONS), 400, "2", "X-Dot-SVM-UUID")
            with client(srv, "vsadmin", vs) as c:  # an SVM user stays in its own SVM
                c.headers["X-Dot-SVM-Name"] = "svm1"
                assert_error(c.get(SESSIONS), 403, "6")
                c.headers["X-Dot-SVM-Name"] = "svm2"
                assert len(c.get(SESSIONS).json()["records"]) == 1
    finally:
        srv.stop()
