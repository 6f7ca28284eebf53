"""The REST app over real HTTP: conventions (HAL, errors, methods), cluster endpoints, OpenAPI.

Also home of the helpers the other `test_api_*` modules share: an authenticated client, live NDMP
sessions, and validation of every response against ONTAP's swagger subset and our OpenAPI.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ndmpd.protocol.client import NdmpClient
from tests.rest.test_schema import SWAGGER, check
from tests.serverproc import ADMIN_PASSWORD, ServerProcess

SESSIONS = "/api/protocols/ndmp/sessions"
# Fields the 9.7/9.8-era swagger lacks: ONTAP 9.9's session `uuid` and our documented extension.
SESSION_EXTRAS = ("uuid", "ndmpd_backup_engine")


# -- helpers shared by the test_api_* modules ------------------------------------------------


def client(
    server: ServerProcess,
    user: str = "admin",
    password: str = ADMIN_PASSWORD,
    *,
    accept: str | None = None,
) -> httpx.Client:
    assert server.rest_url, "the server printed no REST URL"
    headers = {"Accept": accept} if accept else {}
    return httpx.Client(
        base_url=server.rest_url, auth=(user, password), headers=headers, timeout=10
    )


def add_user(server: ServerProcess, name: str, role: str, svm: str | None = None) -> str:
    password = f"{name}-Pw-12345"
    args = ["user", "add", name, "--role", role, "--password-stdin"]
    if svm:
        args += ["--svm", svm]
    out = server.cli(*args, input=password + "\n")
    assert out.returncode == 0, out.stderr
    return password


@cache
def swagger() -> dict[str, Any]:
    return yaml.safe_load(Path(SWAGGER).read_text())["definitions"]


def fits_swagger(body: Any, definition: str, extras: tuple[str, ...] = ()) -> None:
    """Assert `body` fits ONTAP's definition; `extras` are record fields ONTAP's subset lacks."""
    allowed: set[str] = set()
    if definition.endswith("_response"):
        for i in range(len(body.get("records", []))):
            allowed |= {f"records[{i}].{name}" for name in extras}
    else:
        allowed |= set(extras)
    check(body, swagger()[definition], swagger(), "", allowed)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The ONTAP error object of a failed response (asserting the envelope's shape)."""
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["code"], str) and err["code"].isdigit(), err
    assert isinstance(err["message"], str) and err["message"], err
    fits_swagger(body, "error_response")
    return err


def assert_error(response: httpx.Response, status: int, code: str, target: str | None = None):
    assert response.status_code == status, (response.status_code, response.text)
    err = error_of(response)
    assert err["code"] == code, err
    if target is not None:
        assert err.get("target") == target, err
    return err


def ndmp_session(server: ServerProcess, password: str, user: str = "admin") -> NdmpClient:
    """A connected, authenticated NDMP control connection (MD5)."""
    c = NdmpClient("127.0.0.1", server.port, timeout=10)
    assert c.open().error == 0
    reply = c.auth_md5(user, password)
    assert reply.error == 0, reply
    return c


@contextlib.contextmanager
def ndmp_sessions(server: ServerProcess, count: int) -> Iterator[list[NdmpClient]]:
    password = server.ndmp_password()
    clients = [ndmp_session(server, password) for _ in range(count)]
    try:
        yield clients
    finally:
        for c in clients:
            c.close()


# -- tests ------------------------------------------------------------------------------------


def test_cluster_answers_ansible_probe_and_links_resolve(shared_server: ServerProcess) -> None:
    with client(shared_server) as c:
        r = c.get("/api/cluster", params={"fields": "version"})
        assert r.status_code == 200
        version = r.json()["version"]
        assert version["full"].startswith("NetApp Release 9.19.1: ndmpd ")
        assert (version["generation"], version["major"], version["minor"]) == (9, 19, 1)
        cluster = c.get("/api/cluster").json()
        assert cluster["name"] and cluster["uuid"]
        nodes = c.get("/api/cluster/nodes").json()
        assert nodes["num_records"] == 1
        node = nodes["records"][0]
        assert c.get(node["_links"]["self"]["href"]).json()["uuid"] == node["uuid"]
        assert node["uuid"] != cluster["uuid"]
        svms = c.get("/api/svm/svms", params={"fields": "*"}).json()["records"]
        assert [s["name"] for s in svms] == ["svm1"]
        assert svms[0]["ndmp"] == {"allowed": True}
        one = c.get(svms[0]["_links"]["self"]["href"]).json()
        assert one["uuid"] == svms[0]["uuid"] and one["state"] == "running"
        ndmp_svm = c.get("/api/protocols/ndmp/svms").json()["records"][0]
        assert c.get(ndmp_svm["svm"]["_links"]["self"]["href"]).status_code == 200
        assert c.get("/api/svm/svms?ndmp.allowed=true").json()["num_records"] == 1
        assert c.get("/api/svm/svms?ndmp.allowed=False").json()["num_records"] == 0


def test_hal_versus_plain_json(shared_server: ServerProcess) -> None:
    with client(shared_server) as hal, client(shared_server, accept="application/json") as plain:
        r = hal.get("/api/protocols/ndmp/svms", params={"fields": "*"})
        assert r.headers["content-type"] == "application/hal+json"
        body = r.json()
        assert body["_links"]["self"]["href"].startswith("/api/protocols/ndmp/svms")
        assert "_links" in body["records"][0] and "_links" in body["records"][0]["svm"]
        fits_swagger(body, "ndmp_svm_response")
        r = plain.get("/api/protocols/ndmp/svms", params={"fields": "*"})
        assert r.headers["content-type"] == "application/json"
        assert "_links" not in r.text
        fits_swagger(r.json(), "ndmp_svm_response")
        mode = plain.get("/api/protocols/ndmp").json()
        assert mode == {"mode": "svm"}
        fits_swagger(mode, "cluster_ndmp_properties")
        # `*/*` (the netapp-ontap client) is HAL
        r = hal.get("/api/protocols/ndmp", headers={"Accept": "*/*"})
        assert r.json()["_links"]["self"]["href"] == "/api/protocols/ndmp"


def test_errors_use_ontap_envelope(shared_server: ServerProcess) -> None:
    with client(shared_server) as c:
        assert_error(c.get("/api/no/such/thing"), 404, "4")
        assert_error(c.get(f"{SESSIONS}?type.name=x"), 400, "262179", "type.name")
        assert_error(c.get(f"{SESSIONS}?fields=size"), 400, "262197", "fields")
        r = c.get(f"{SESSIONS}?fields=size&ignore_unknown_fields=true")
        assert r.status_code == 200
        assert_error(c.get("/api/protocols/ndmp/svms?max_records=0"), 400, "262185")
        assert_error(c.get(f"{SESSIONS}?return_timeout=121"), 400, "262185", "return_timeout")
        r = c.patch("/api/protocols/ndmp", content=b"{not json", headers={"Content-Type": "x"})
        assert_error(r, 400, "262199")
        r = c.patch("/api/protocols/ndmp", json=[1, 2])
        assert_error(r, 400, "262199")
        assert_error(c.patch("/api/protocols/ndmp", json={"mode": "x"}), 400, "262185", "mode")
        assert_error(c.patch("/api/protocols/ndmp", json={"bogus": 1}), 400, "262179", "bogus")
        svm = c.get("/api/protocols/ndmp/svms").json()["records"][0]["svm"]
        r = c.patch(f"/api/protocols/ndmp/svms/{svm['uuid']}", json={"svm": {"name": "x"}})
        assert_error(r, 400, "262196")
        assert_error(c.get("/api/protocols/ndmp/svms/not-a-uuid"), 404, "4")
        r = c.request("GET", "/api/protocols/ndmp", content=b'{"mode": "svm"}')
        assert_error(r, 400, "262198")


def test_methods_options_head(shared_server: ServerProcess) -> None:
    with client(shared_server) as c:
        r = c.post(SESSIONS, json={})
        err = assert_error(r, 405, "3")
        assert "POST" in err["message"]
        assert set(r.headers["allow"].split(", ")) == {"GET", "DELETE", "HEAD", "OPTIONS"}
        r = c.put("/api/protocols/ndmp", json={"mode": "svm"})
        assert_error(r, 405, "3")
        assert set(r.headers["allow"].split(", ")) == {"GET", "PATCH", "HEAD", "OPTIONS"}
        r = c.options("/api/protocols/ndmp/svms")
        assert r.status_code == 200
        assert set(r.headers["allow"].split(", ")) == {"GET", "PATCH", "HEAD", "OPTIONS"}
        get = c.get("/api/cluster")
        head = c.head("/api/cluster")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(get.content))
        assert c.request("TRACE", "/api/cluster").status_code == 405
        # repeated slashes are one (Ansible sends `/api//protocols/...`)
        assert c.get("/api//protocols/ndmp").json()["mode"] == "svm"
        # a trailing slash is another path, never a redirect
        assert_error(c.get("/api/cluster/"), 404, "4")


def test_authentication_required(shared_server: ServerProcess) -> None:
    url = shared_server.rest_url
    for i, headers in enumerate(
        (
            {},
            {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()},
            {"Authorization": "Basic !!!"},
            {"Authorization": "Bearer abc"},
            {"Authorization": "Basic " + base64.b64encode(b"nobody:x").decode()},
        )
    ):
        # Each variant from its own loopback address, within the failures that are not slowed.
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{10 + i}")
        anon = httpx.Client(transport=transport, base_url=url, headers=headers)
        for path in ("/api/cluster", SESSIONS, "/api/unknown"):
            r = anon.get(path)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.headers["www-authenticate"] == 'Basic realm="ndmpd"'
            error_of(r)
        anon.close()
    with client(shared_server) as c:  # a success resets the slow-down
        assert c.get("/api/cluster").status_code == 200


def test_pretty_and_no_password_in_output(shared_server: ServerProcess) -> None:
    with client(shared_server) as c:
        r = c.get("/api/protocols/ndmp", params={"pretty": "true"})
        assert "\n" in r.text and r.json()["mode"] == "svm"
    with client(shared_server, password="Wrong-" + ADMIN_PASSWORD) as bad:
        assert bad.get("/api/cluster").status_code == 401
    assert ADMIN_PASSWORD not in shared_server.log_text()


def test_openapi_document_matches_responses(shared_server: ServerProcess) -> None:
    with client(shared_server) as c:
        r = c.get("/docs/api")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        doc = r.json()
        assert doc["openapi"].startswith("3.")
        defs = doc["components"]["schemas"]
        expected = {
            "/api/cluster",
            "/api/cluster/nodes",
            "/api/cluster/nodes/{uuid}",
            "/api/svm/svms",
            "/api/svm/svms/{uuid}",
            "/api/protocols/ndmp",
            "/api/protocols/ndmp/nodes",
            "/api/protocols/ndmp/nodes/{node_uuid}",
            "/api/protocols/ndmp/svms",
            "/api/protocols/ndmp/svms/{svm_uuid}",
            "/api/protocols/ndmp/svms/{svm_uuid}/passwords/{user}",
            "/api/protocols/ndmp/sessions",
            "/api/protocols/ndmp/sessions/{owner_uuid}/{session_id}",
        }
        assert set(doc["paths"]) == expected
        svm = c.get("/api/svm/svms").json()["records"][0]
        node = c.get("/api/cluster/nodes").json()["records"][0]
        paths = {
            "/api/cluster": "/api/cluster",
            "/api/cluster/nodes": "/api/cluster/nodes",
            "/api/cluster/nodes/{uuid}": f"/api/cluster/nodes/{node['uuid']}",
            "/api/svm/svms": "/api/svm/svms",
            "/api/svm/svms/{uuid}": f"/api/svm/svms/{svm['uuid']}",
            "/api/protocols/ndmp": "/api/protocols/ndmp",
            "/api/protocols/ndmp/svms": "/api/protocols/ndmp/svms",
            "/api/protocols/ndmp/svms/{svm_uuid}": f"/api/protocols/ndmp/svms/{svm['uuid']}",
            "/api/protocols/ndmp/svms/{svm_uuid}/passwords/{user}": (
                f"/api/protocols/ndmp/svms/{svm['uuid']}/passwords/admin"
            ),
            "/api/protocols/ndmp/sessions": SESSIONS,
        }
        with ndmp_sessions(shared_server, 1):
            for template, path in paths.items():
                schema = doc["paths"][template]["get"]["responses"]["200"]["content"]
                schema = schema["application/hal+json"]["schema"]
                for fields in ("**", None):
                    r = c.get(path, params={"fields": fields} if fields else {})
                    assert r.status_code == 200, (path, r.text)
                    check(r.json(), schema, defs, "", set())
            err = doc["paths"]["/api/protocols/ndmp/nodes"]["get"]["responses"]["400"]
            r = c.get("/api/protocols/ndmp/nodes")
            check(r.json(), err["content"]["application/json"]["schema"], defs, "", set())


@pytest.mark.parametrize("path", ["/api/cluster", SESSIONS])
def test_ready_and_fast_enough_for_a_smoke(shared_server: ServerProcess, path: str) -> None:
    with client(shared_server) as c:
        for _ in range(50):
            assert c.get(path).status_code == 200
