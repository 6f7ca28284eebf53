"""Acceptance: NetApp's own `netapp-ontap` 9.19.1.0 client against a real ndmpd.

Everything here goes through the real library (and so through `requests`), exactly as an ONTAP
script would: sessions of a live ndmjob backup, get by keys, kill, the client's quirks (spec
§8.4), the mode, node, SVM and password resources, and once over HTTPS with the server's
self-signed certificate.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netapp_ontap import HostConnection
from netapp_ontap.error import NetAppRestError
from netapp_ontap.resources import (
    ClusterNdmpProperties,
    NdmpNode,
    NdmpPassword,
    NdmpSession,
    NdmpSvm,
)

from tests.rest.live import Ndmjob, backup, make_tree, tcp_local_ports, wait_until
from tests.serverproc import ADMIN_PASSWORD, ServerProcess, start_server

BIG_MIB = 1024  # on a drive paced at 128 MiB/s: 8 s; the live tests kill it long before


def connection(server: ServerProcess, **kw: Any) -> HostConnection:
    assert server.rest_url, "the server printed no REST URL"
    scheme, _, rest = server.rest_url.partition("://")
    port = int(rest.rsplit(":", 1)[1].split("/")[0])
    args: dict[str, Any] = {"scheme": scheme, "verify": False} | kw
    return HostConnection("127.0.0.1", port=port, username="admin", password=ADMIN_PASSWORD, **args)


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("ontap")
    tapes = {"nrst0a": ("4G", "128M"), "nrst1a": "1G", "nrst2a": ("4G", "128M")}
    srv = start_server(base / "srv", log_level="INFO", tapes=tapes)
    try:
        make_tree(srv.volume() / "big", BIG_MIB)
        make_tree(srv.volume() / "small", 2)
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)  # a GiB of data and a tape image


@pytest.fixture
def conn(big_server: ServerProcess) -> Iterator[HostConnection]:
    with connection(big_server) as c:
        yield c


def active_backup(path: str, job: Ndmjob) -> NdmpSession | None:
    """The session of `job`'s backup once it is moving bytes (fails at once if `job` ended)."""
    if not job.running():
        status, output = job.finish()
        raise AssertionError(f"ndmjob ended ({status}) before its backup was seen:\n{output}")
    for rec in NdmpSession.get_collection(fields="*"):
        data = getattr(rec, "data", None)
        if (
            getattr(rec, "data_path", None) == path
            and data is not None
            and getattr(data, "operation", None) == "backup"
            and getattr(data, "state", None) == "active"
            and (getattr(data, "bytes_processed", 0) or 0) > 0
        ):
            return rec
    return None


def session_ids() -> set[str]:
    return {rec.id for rec in NdmpSession.get_collection()}


def test_live_backup_listed_got_by_keys_and_killed(
    big_server: ServerProcess, conn: HostConnection
) -> None:
    agent = big_server.agent()
    before = session_ids()
    job = backup(agent, "/svm1/vol1/big", "nrst0a")
    try:
        rec = wait_until(lambda: active_backup("/svm1/vol1/big", job), 30, what="an active backup")
        # The collection shows the session with the values the DMA and the job imply.
        assert isinstance(rec.id, str) and rec.id not in before
        assert rec.client_address == "127.0.0.1"
        assert rec.client_port in tcp_local_ports(job.pid)
        assert rec.tape_device == "nrst0a"
        assert rec.backup_engine == "dump"
        assert rec.data.operation == "backup"
        assert rec.data.state == "active"
        assert rec.mover.state == "active"
        assert rec.svm.name == "svm1"
        owner = rec.uuid
        assert owner == rec.svm.uuid  # SVM scope: the owner is the SVM
        first = rec.data.bytes_processed

        # A get by keys reads the same session, and its byte count has grown since.
        time.sleep(0.25)
        keys = {"owner.uuid": owner, "session.id": rec.id}
        one = NdmpSession(**keys)
        one.get(fields="*")
        assert one.id == rec.id and one.uuid == owner
        assert one.data_path == "/svm1/vol1/big"
        assert one.data.state == "active"
        assert one.data.bytes_processed > first
        assert one.mover.bytes_moved > 0

        # count_collection and find see it too.
        assert NdmpSession.count_collection() >= 1
        found = NdmpSession.find(id=rec.id)
        assert found is not None and found.uuid == owner and found.tape_device == "nrst0a"

        # Quirk Q2: after .get() the client has lost the keys and sends DELETE on the
        # collection with no filter. The server must refuse it and kill nothing.
        with pytest.raises(NetAppRestError) as refused:
            one.delete()
        assert refused.value.status_code == 400
        assert "error" in (refused.value.response_body or {})
        assert job.running()
        still = NdmpSession(**keys)
        still.get(fields="data")
        assert still.data.state == "active"

        # A keyed delete kills it: the DMA is told at once and reports the failure.
        started = time.monotonic()
        NdmpSession(**keys).delete()
        status, output = job.finish(timeout=20)
        assert time.monotonic() - started < 10
        assert "Operation ended OKAY" not in output, output[-2000:]
        assert status != 0 or "aborted" in output.lower() or "halted" in output.lower(), output
        wait_until(lambda: rec.id not in session_ids(), 10, what="the killed session to go")
        with pytest.raises(NetAppRestError) as gone:
            NdmpSession(**keys).get()
        assert gone.value.status_code == 404
        assert gone.value.response_body["error"]["code"] == "4"
    finally:
        job.stop()


def test_query_based_kill_and_counts(big_server: ServerProcess, conn: HostConnection) -> None:
    """`delete_collection(id=, uuid=)` is the documented way to kill a listed session."""
    job = backup(big_server.agent(), "/svm1/vol1/big", "nrst2a")
    try:
        rec = wait_until(lambda: active_backup("/svm1/vol1/big", job), 30, what="an active backup")
        assert NdmpSession.count_collection(**{"data.operation": "backup"}) == 1
        assert NdmpSession.count_collection(**{"data.operation": "restore"}) == 0
        NdmpSession.delete_collection(id=rec.id, uuid=rec.uuid)
        _, output = job.finish(timeout=20)
        assert "Operation ended OKAY" not in output
        assert NdmpSession.find(id=rec.id) is None
    finally:
        job.stop()


def test_cluster_mode_and_node_resources(server: ServerProcess) -> None:
    with connection(server):
        mode = ClusterNdmpProperties()
        mode.get()
        assert mode.mode == "svm"
        svm_uuid = NdmpSvm.find(**{"svm.name": "svm1"}).svm.uuid

        mode.mode = "node"
        mode.patch()
        again = ClusterNdmpProperties()
        again.get()
        assert again.mode == "node"

        # Node scope: the SVM endpoints refuse (65601536), the node ones answer.
        with pytest.raises(NetAppRestError) as refused:
            NdmpSvm(svm={"uuid": svm_uuid}).get()
        assert refused.value.response_body["error"]["code"] == "65601536"
        nodes = list(NdmpNode.get_collection(fields="*"))
        assert len(nodes) == 1
        node_uuid = nodes[0].node.uuid
        node = NdmpNode(node={"uuid": node_uuid})
        node.get()
        assert node.enabled is True
        assert "challenge" in node.authentication_types
        node.enabled = False
        node.authentication_types = ["challenge"]
        node.patch()
        check = NdmpNode(node={"uuid": node_uuid})
        check.get(fields="enabled,authentication_types")
        assert check.enabled is False
        assert check.authentication_types == ["challenge"]
        assert not hasattr(check, "password")
        # ONTAP wants a node NDMP user before NDMP can be enabled again (68812800).
        node.enabled = True
        with pytest.raises(NetAppRestError) as no_user:
            node.patch()
        assert no_user.value.response_body["error"]["code"] == "68812800"
        node = NdmpNode(node={"uuid": node_uuid})
        node.enabled = True
        node.user = "backup"
        node.password = "Backup-pw-1"
        node.authentication_types = ["plaintext", "challenge"]
        node.patch()
        check.get(fields="*")
        assert check.enabled is True
        assert check.user == "backup"
        assert sorted(check.authentication_types) == ["challenge", "plaintext"]
        assert not hasattr(check, "password")  # write-only

        mode.mode = "svm"
        mode.patch()
        mode.get()
        assert mode.mode == "svm"
        with pytest.raises(NetAppRestError) as node_refused:
            NdmpNode(node={"uuid": node_uuid}).get()
        assert node_refused.value.response_body["error"]["code"] == "68812801"


def test_svm_patch_changes_what_ndmp_accepts(
    server: ServerProcess, ndmjob: str, tmp_path: Path
) -> None:
    make_tree(server.volume() / "small", 1)
    pw = server.ndmp_password()
    text_agent = server.agent(auth="t", password=pw)
    with connection(server):
        found = NdmpSvm.find(**{"svm.name": "svm1"})
        assert found is not None
        svm = NdmpSvm(svm={"uuid": found.svm.uuid})
        svm.get()
        assert svm.enabled is True
        assert svm.authentication_types == ["challenge"]

        # TEXT auth is off by default, as on ONTAP SVMs.
        refused = backup(text_agent, "/svm1/vol1/small", "nrst1a").finish()
        assert "Operation ended OKAY" not in refused[1]

        svm.authentication_types = ["challenge", "plaintext"]
        svm.patch()
        svm.get()
        assert sorted(svm.authentication_types) == ["challenge", "plaintext"]
        ok = backup(text_agent, "/svm1/vol1/small", "nrst1a").finish()
        assert "Operation ended OKAY" in ok[1], ok[1][-2000:]

        svm.authentication_types = ["challenge"]
        svm.patch()
        listed = [r for r in NdmpSvm.get_collection(fields="*") if r.svm.name == "svm1"]
        assert listed[0].authentication_types == ["challenge"]


def test_generated_password_authenticates_md5_backup(
    big_server: ServerProcess, conn: HostConnection, ndmjob: str
) -> None:
    svm = NdmpSvm.find(**{"svm.name": "svm1"})
    assert svm is not None
    record = NdmpPassword(svm={"uuid": svm.svm.uuid}, user="admin")
    record.get()
    assert record.user == "admin"
    assert len(record.password) >= 8 and record.password.isalnum()
    agent = f"127.0.0.1:{big_server.port}/4m,admin,{record.password}"
    _, output = backup(agent, "/svm1/vol1/small", "nrst1a").finish()
    assert "Operation ended OKAY" in output, output[-2000:]
    bad = f"127.0.0.1:{big_server.port}/4m,admin,{record.password}x"
    _, refused = backup(bad, "/svm1/vol1/small", "nrst1a").finish()
    assert "Operation ended OKAY" not in refused
    with pytest.raises(NetAppRestError) as missing:
        NdmpPassword(svm={"uuid": svm.svm.uuid}, user="nobody-here").get()
    assert missing.value.status_code == 404


def test_https_with_the_self_signed_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets these variables override a session's `verify` (the pinned file below).
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    srv = start_server(tmp_path / "tls", tls=True)
    try:
        assert srv.rest_url and srv.rest_url.startswith("https://")
        cert = srv.base / "state" / "tls.crt"
        assert cert.exists()
        # Verified against the server's own certificate: no warning, no insecure mode.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with connection(srv, verify=str(cert)):
                mode = ClusterNdmpProperties()
                mode.get()
                assert mode.mode == "svm"
                assert NdmpSession.count_collection() == 0
                assert NdmpSvm.find(**{"svm.name": "svm1"}) is not None
        # The system's CAs do not know it: the client refuses the connection.
        with connection(srv, verify=True), pytest.raises(NetAppRestError) as untrusted:
            ClusterNdmpProperties().get()
        assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value) or "SSL" in str(untrusted.value)
        # verify=False works too (what most ONTAP scripts do against lab clusters).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with connection(srv, verify=False):
                assert list(NdmpSession.get_collection()) == []
    finally:
        srv.stop()
