"""`/api/protocols/ndmp/sessions` against live NDMP sessions: fields, filters, paging, kill."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ndmpd.protocol import messages as m
from ndmpd.protocol.client import NdmpClient
from ndmpd.protocol.connection import ConnectionClosed, Post, ProtocolBroken
from ndmpd.protocol.constants import ConnectionStatusReason, Message, TapeOpenMode
from tests.rest.test_api_basics import (
    SESSION_EXTRAS,
    SESSIONS,
    assert_error,
    client,
    fits_swagger,
    ndmp_session,
    ndmp_sessions,
)
from tests.serverproc import ServerProcess, start_server


def _port(c: NdmpClient) -> int:
    return c.sock.getsockname()[1]


def _events_until_closed(c: NdmpClient, timeout: float) -> tuple[list[Post], float]:
    """Every post until the server closes the connection, and when that happened."""
    posts = list(c.posts)
    deadline = time.monotonic() + timeout
    while True:
        ev = c.next_event(max(0.01, deadline - time.monotonic()))
        if isinstance(ev, Post):
            posts.append(ev)
        elif isinstance(ev, ConnectionClosed | ProtocolBroken):
            return posts, time.monotonic()


def test_records_come_from_live_sessions(shared_server: ServerProcess) -> None:
    with ndmp_sessions(shared_server, 3) as clients, client(shared_server) as c:
        tape = clients[0].call(Message.TAPE_OPEN, m.TapeOpenRequest("nrst1a", TapeOpenMode.RDWR))
        assert tape.error == 0
        body = c.get(SESSIONS, params={"fields": "*"}).json()
        fits_swagger(body, "ndmp_session_response", SESSION_EXTRAS)
        by_port = {r["client_port"]: r for r in body["records"]}
        assert set(by_port) >= {_port(x) for x in clients}
        svm = c.get("/api/svm/svms").json()["records"][0]
        node = c.get("/api/cluster/nodes").json()["records"][0]
        first = by_port[_port(clients[0])]
        assert isinstance(first["id"], str) and first["id"].isdigit()
        assert first["uuid"] == svm["uuid"]  # SVM scope: the owner is the SVM
        assert first["svm"]["name"] == "svm1" and first["node"]["uuid"] == node["uuid"]
        assert first["client_address"] == "127.0.0.1" and first["source_address"] == "127.0.0.1"
        assert first["tape_device"] == "nrst1a" and first["tape_mode"] == "write"
        assert first["data"]["state"] == "idle" and first["data"]["operation"] == "none"
        assert first["data"]["reason"] == "not_available"
        assert first["data"]["connection"] == {"type": "local"}
        assert first["mover"]["state"] == "idle" and "mode" not in first["mover"]
        assert first["scsi"] == {"device_id": "", "host_adapter": 0, "target_id": 0, "lun_id": 0}
        assert "backup_engine" not in first  # no backup yet
        href = first["_links"]["self"]["href"]
        assert href == f"{SESSIONS}/{svm['uuid']}/{first['id']}"
        one = c.get(href)
        assert one.status_code == 200
        fits_swagger(one.json(), "ndmp_session", SESSION_EXTRAS)
        assert one.json()["tape_device"] == "nrst1a"  # instance GET defaults to fields=*
        # default collection fields: the identity and links only
        plain = c.get(SESSIONS).json()["records"][0]
        assert set(plain) == {"id", "uuid", "node", "svm", "_links"}
        count = c.get(SESSIONS, params={"return_records": "false"}).json()
        assert count["num_records"] == len(body["records"]) and "records" not in count
    # closed sessions disappear
    deadline = time.monotonic() + 3
    with client(shared_server) as c:
        while c.get(SESSIONS).json()["num_records"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get(SESSIONS).json()["num_records"] == 0
        assert c.get(href).status_code == 404


def test_filters_ordering_and_paging(shared_server: ServerProcess) -> None:
    with ndmp_sessions(shared_server, 5) as clients, client(shared_server) as c:
        clients[1].call(Message.TAPE_OPEN, m.TapeOpenRequest("nrst0a", TapeOpenMode.READ))
        clients[3].call(Message.TAPE_OPEN, m.TapeOpenRequest("nrst2a", TapeOpenMode.RDWR))
        ids = [r["id"] for r in c.get(SESSIONS).json()["records"]]
        assert len(ids) == 5
        r = c.get(SESSIONS, params={"tape_device": "nrst*", "fields": "tape_device,tape_mode"})
        found = sorted((x["tape_device"], x["tape_mode"]) for x in r.json()["records"])
        assert found == [("nrst0a", "read"), ("nrst2a", "write")]
        r = c.get(SESSIONS, params={"tape_mode": "!write", "fields": "tape_mode"}).json()
        assert [x["tape_mode"] for x in r["records"]] == ["read"]
        assert c.get(SESSIONS, params={"tape_device": "null"}).json()["num_records"] == 3
        ports = sorted(_port(x) for x in clients)
        r = c.get(SESSIONS, params={"client_port": f">{ports[2]}"}).json()
        assert r["num_records"] == 2
        r = c.get(SESSIONS, params={"order_by": "client_port desc", "fields": "client_port"})
        assert [x["client_port"] for x in r.json()["records"]] == ports[::-1]
        r = c.get(SESSIONS, params={"data.state": "idle|active", "mover.state": "idle"}).json()
        assert r["num_records"] == 5
        r = c.get(SESSIONS, params={"id": ids[2], "fields": "*"}).json()
        assert [x["id"] for x in r["records"]] == [ids[2]]
        # paging: follow `next` to the end, exactly as the client does
        seen: list[str] = []
        url = f"{SESSIONS}?max_records=2&order_by=id&fields=id"
        pages = 0
        while url:
            page = c.get(url).json()
            pages += 1
            fits_swagger(page, "ndmp_session_response", SESSION_EXTRAS)
            assert page["num_records"] == len(page["records"]) <= 2
            seen += [x["id"] for x in page["records"]]
            url = page["_links"].get("next", {}).get("href")
            assert pages < 10
        assert seen == sorted(ids, key=int) and pages == 3
        assert_error(c.get(SESSIONS, params={"client_port": "abc"}), 400, "262185", "client_port")
        assert_error(c.get(SESSIONS, params={"order_by": "data"}), 400, "262268")


def test_instance_keys_and_not_found(shared_server: ServerProcess) -> None:
    with ndmp_sessions(shared_server, 1), client(shared_server) as c:
        rec = c.get(SESSIONS).json()["records"][0]
        owner, sid = rec["uuid"], rec["id"]
        node = c.get("/api/cluster/nodes").json()["records"][0]["uuid"]
        assert c.get(f"{SESSIONS}/{owner}/{sid}?fields=id").json()["id"] == sid
        assert_error(c.get(f"{SESSIONS}/{owner}/99999"), 404, "4", "session.id")
        assert_error(c.get(f"{SESSIONS}/{owner}/2000%3A4000"), 404, "4")
        assert_error(c.get(f"{SESSIONS}/{node}/{sid}"), 404, "4")  # node UUID in SVM scope
        assert_error(c.get(f"{SESSIONS}/not-a-uuid/{sid}"), 400, "68812802", "owner.uuid")
        assert_error(c.delete(f"{SESSIONS}/{owner}/99999"), 404, "4")
        assert_error(c.get(f"{SESSIONS}/{owner}/{sid}?bogus=1"), 400, "262179", "bogus")
        # an instance filter that does not match: no such entry
        assert_error(c.get(f"{SESSIONS}/{owner}/{sid}?tape_device=nrst0a"), 404, "4")
        plain = c.get(f"{SESSIONS}/{owner}/{sid}", headers={"Accept": "application/json"})
        assert "_links" not in plain.text and plain.json()["id"] == sid


def test_delete_kills_within_a_second(shared_server: ServerProcess) -> None:
    password = shared_server.ndmp_password()
    victim = ndmp_session(shared_server, password)
    bystander = ndmp_session(shared_server, password)
    try:
        victim.call(Message.TAPE_OPEN, m.TapeOpenRequest("nrst3a", TapeOpenMode.RDWR))
        with client(shared_server) as c:
            recs = c.get(SESSIONS, params={"fields": "client_port"}).json()["records"]
            rec = next(r for r in recs if r["client_port"] == _port(victim))
            start = time.monotonic()
            r = c.request("DELETE", rec["_links"]["self"]["href"], json={})
            assert r.status_code == 200 and r.json() == {}
            posts, closed_at = _events_until_closed(victim, 3.0)
            assert closed_at - start < 1.0
            reasons = [p.body.reason for p in posts if p.code == Message.NOTIFY_CONNECTION_STATUS]
            assert ConnectionStatusReason.SHUTDOWN in reasons
            assert c.get(rec["_links"]["self"]["href"]).status_code == 404
            left = c.get(SESSIONS, params={"fields": "client_port"}).json()["records"]
            assert [x["client_port"] for x in left] == [_port(bystander)]
            # the drive it held is free again
            assert (
                bystander.call(
                    Message.TAPE_OPEN, m.TapeOpenRequest("nrst3a", TapeOpenMode.READ)
                ).error
                == 0
            )
    finally:
        victim.close()
        bystander.close()


def test_collection_delete_needs_a_filter(shared_server: ServerProcess) -> None:
    with ndmp_sessions(shared_server, 3) as clients, client(shared_server) as c:
        for body in (None, {}):
            r = c.request("DELETE", SESSIONS, json=body)
            assert_error(r, 400, "262212")
        assert_error(c.request("DELETE", SESSIONS, json={"x": 1}), 400, "262199")
        assert c.get(SESSIONS).json()["num_records"] == 3  # nothing was killed
        target = c.get(SESSIONS, params={"client_port": str(_port(clients[0]))}).json()
        sid, owner = target["records"][0]["id"], target["records"][0]["uuid"]
        r = c.request("DELETE", SESSIONS, params={"id": sid, "uuid": owner}, json={})
        assert r.status_code == 200 and r.json()["num_records"] == 1
        _events_until_closed(clients[0], 2.0)
        r = c.request("DELETE", SESSIONS, params={"id": "99999"}, json={})
        assert r.status_code == 200 and r.json()["num_records"] == 0
        rest = c.get(SESSIONS).json()["records"]
        assert len(rest) == 2
        records = [{"uuid": x["uuid"], "id": x["id"]} for x in rest]
        r = c.request("DELETE", SESSIONS, json={"records": records})
        assert r.status_code == 200 and r.json()["num_records"] == 2
        for x in clients[1:]:
            _events_until_closed(x, 2.0)
        assert c.get(SESSIONS).json()["num_records"] == 0


@pytest.fixture(scope="module")
def node_server(tmp_path_factory: pytest.TempPathFactory):
    proc = start_server(Path(tmp_path_factory.mktemp("node")), mode="node")
    try:
        yield proc
    finally:
        proc.stop()


def test_node_scope_owner_is_the_node(node_server: ServerProcess) -> None:
    with ndmp_sessions(node_server, 1), client(node_server) as c:
        assert c.get("/api/protocols/ndmp").json()["mode"] == "node"
        node = c.get("/api/cluster/nodes").json()["records"][0]
        rec = c.get(SESSIONS, params={"fields": "*"}).json()["records"][0]
        assert rec["uuid"] == node["uuid"] and "svm" not in rec
        fits_swagger(rec, "ndmp_session", SESSION_EXTRAS)
        assert c.get(f"{SESSIONS}/{node['uuid']}/{rec['id']}").status_code == 200
