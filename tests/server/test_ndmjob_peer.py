"""The real ndmjob DMA against our server: probe (-q) and ndmjob's own tape conformance suite."""

from __future__ import annotations

import re

from tests.conftest import run_ndmjob
from tests.serverproc import ServerProcess


def test_query_lists_versions_auth_connection_types_butypes_filesystems_and_drives(
    shared_server: ServerProcess, ndmjob: str
) -> None:
    agent = shared_server.agent()
    out = run_ndmjob(["-q", "-D", agent, "-T", agent, "-f", "nrst0a"])
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert 'QR "Data Agent 127.0.0.1 NDMPv4"' in text
    assert 'QR "Tape Agent 127.0.0.1 NDMPv4"' in text
    assert re.search(r"auths\s+\(1\)\s+NDMP4_AUTH_MD5", text)
    assert text.count("NDMP4_ADDR_LOCAL NDMP4_ADDR_TCP") == 2
    assert "Backup type info of dump format" in text
    assert "Backup type info of tar format" in text
    assert "File system /svm1/vol1" in text
    assert "status     online" in text
    for drive in ("nrst0a", "nrst1a", "nrst2a", "nrst3a"):
        assert f"device     {drive}" in text
    # real statvfs figures, not placeholders
    space = re.search(r"space\s+(\d+) total, (\d+) used, (\d+) avail", text)
    assert space is not None and int(space.group(1)) > 0


def test_query_with_text_auth_when_plaintext_enabled(tmp_path, ndmjob: str) -> None:
    from tests.serverproc import start_server

    srv = start_server(tmp_path / "srv")
    try:
        # enable plaintext for the SVM through the catalog the REST API also uses
        code = (
            "from ndmpd.catalog.store import Catalog; import sys; "
            "c = Catalog(sys.argv[1]); "
            "c.set_svm_settings('svm1', authentication_types=('plaintext', 'challenge'))"
        )
        import subprocess
        import sys

        subprocess.run([sys.executable, "-c", code, str(srv.base / "state")], check=True)
        out = run_ndmjob(["-q", "-D", srv.agent(auth="t")])
        assert out.returncode == 0, out.stdout + out.stderr
        assert re.search(r"auths\s+\(2\)\s+NDMP4_AUTH_TEXT NDMP4_AUTH_MD5", out.stdout)
    finally:
        srv.stop()


def test_ndmjob_tape_conformance_suite_runs_to_the_end(
    server: ServerProcess, ndmjob: str, ndmjob_shim: str
) -> None:
    out = run_ndmjob(
        ["-v", "-o", "test-tape", "-T", server.agent(), "-f", "nrst0a"],
        env={"LD_PRELOAD": ndmjob_shim},
        timeout=600,
    )
    text = out.stdout + out.stderr
    phases = re.findall(r'TEST "Test (T-\w+) Passed -- pass=(\d+) warn=(\d+) fail=(\d+)', text)
    assert out.returncode == 0, text[-3000:]
    names = [p[0] for p in phases]
    for phase in ("T-OC", "T-BGS", "T-BW", "T-BR", "T-BWR", "T-WRITE", "T-READ", "T-MTIO"):
        assert phase in names, f"{phase} missing from:\n{text[-3000:]}"
    assert all(int(p[2]) == 0 and int(p[3]) == 0 for p in phases), phases
    assert "Failed" not in text
    final = re.search(r"FINAL test-tape (\w+) -- pass=(\d+) warn=(\d+) fail=(\d+)", text)
    assert final is not None and final.group(1) == "Passed", text[-2000:]
    assert final.group(3) == "0" and final.group(4) == "0"
