"""`ndmpd sessions list|show|kill` as a user runs it: a real CLI process against a real server,
watching and killing a real ndmjob backup through the REST API."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ndmpd.catalog.config import load_config
from ndmpd.rest.client import RestClient, RestError, endpoint_from_config
from tests.rest.live import Ndmjob, backup, make_tree, tcp_local_ports, wait_until
from tests.serverproc import ADMIN_PASSWORD, NDMPD, ServerProcess, start_server

BIG_MIB = 1024


def ndmpd(
    server: ServerProcess, *args: str, password: str | None = ADMIN_PASSWORD, url: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    env.pop("NDMPD_REST_PASSWORD", None)
    env.pop("NDMPD_DEBUG", None)
    if password is not None:
        env["NDMPD_REST_PASSWORD"] = password
    extra = ["--url", str(server.rest_url)] if url else []
    return subprocess.run(
        [*NDMPD, "sessions", *args, "--config", str(server.config), *extra],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndmpd: error: "), lines
    assert fragment in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("cli")
    # drives paced at 128 MiB/s: a backup of "big" lasts 8 s, well past the CLI runs
    tapes = {"nrst0a": ("4G", "128M"), "nrst1a": ("4G", "128M")}
    srv = start_server(base / "srv", log_level="INFO", tapes=tapes)
    try:
        make_tree(srv.volume() / "big", BIG_MIB)
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


def running_backup(server: ServerProcess, job: Ndmjob) -> dict:
    """The session record once the backup moves bytes (polled in-process: a CLI run per poll
    would eat the time the backup lasts)."""
    endpoint = endpoint_from_config(load_config(server.config), server.rest_url)

    def probe() -> dict | None:
        if not job.running():
            raise AssertionError("ndmjob ended early:\n" + job.finish()[1])
        for rec in client.sessions("*"):
            data = rec.get("data") or {}
            if data.get("state") == "active" and data.get("bytes_processed", 0) > 0:
                return rec
        return None

    with RestClient(endpoint, "admin", ADMIN_PASSWORD) as client:
        return wait_until(probe, 30, interval=0.05, what="an active backup")


def test_list_show_watch_and_kill_a_live_backup(live: ServerProcess) -> None:
    empty = ndmpd(live, "list")
    assert empty.returncode == 0, empty.stderr
    assert "no NDMP sessions" in empty.stdout

    job = backup(live.agent(), "/svm1/vol1/big", "nrst0a", "-b", "2")
    try:
        rec = running_backup(live, job)
        sid, owner = rec["id"], rec["uuid"]
        assert rec["client_port"] in tcp_local_ports(job.pid)

        table = ndmpd(live, "list")
        assert table.returncode == 0, table.stderr
        row = next(line for line in table.stdout.splitlines() if f" {sid} " in line)
        for text in ("svm1", f"127.0.0.1:{rec['client_port']}", "backup", "dump",
                     "/svm1/vol1/big", "nrst0a", "active"):  # fmt: skip
            assert text in row, (text, table.stdout)
        assert re.search(r"\d+(\.\d)? (B|KiB|MiB|GiB)", row)

        # show by id alone and by OWNER/ID: every field, with exact byte counts.
        shown = ndmpd(live, "show", sid)
        assert shown.returncode == 0, shown.stderr
        assert f"NDMP session {owner}/{sid}" in shown.stdout
        assert re.search(r"data\.bytes_processed\s.*\d+ \(", shown.stdout), shown.stdout
        assert re.search(r"mover\.state\s+.*active", shown.stdout)
        assert re.search(rf"client_port\s+.*{rec['client_port']}", shown.stdout)
        as_json = json.loads(ndmpd(live, "show", f"{owner}/{sid}", "--json").stdout)
        assert as_json["id"] == sid and as_json["data"]["operation"] == "backup"
        assert as_json["data"]["bytes_processed"] >= rec["data"]["bytes_processed"]

        # watch: three refreshes; from the second on, a rate computed between refreshes.
        watched = ndmpd(live, "list", "--watch", "--interval", "0.3", "--count", "3")
        assert watched.returncode == 0, watched.stderr
        assert watched.stdout.count("NDMP sessions at ") == 3
        rates = re.findall(r"(\d+(?:\.\d)?) (B|KiB|MiB|GiB)/s", watched.stdout)
        assert rates, watched.stdout
        assert any(unit in ("MiB", "GiB") and float(n) > 0 for n, unit in rates), rates

        killed = ndmpd(live, "kill", sid)
        assert killed.returncode == 0, killed.stderr
        assert f"killed session {sid} of svm1" in killed.stdout
        assert "backup of /svm1/vol1/big" in killed.stdout and "nrst0a" in killed.stdout
        _, output = job.finish(timeout=20)
        assert "Operation ended OKAY" not in output
        wait_until(
            lambda: ndmpd(live, "list").stdout.count(f" {sid} ") == 0, 10, what="session gone"
        )
        assert_clean_error(ndmpd(live, "kill", sid), f"no session with id {sid}")
        assert_clean_error(ndmpd(live, "show", f"{owner}/{sid}"), f"no session {owner}/{sid}")
    finally:
        job.stop()


def test_errors_are_one_clear_line(live: ServerProcess, tmp_path: Path) -> None:
    assert_clean_error(ndmpd(live, "list", password="wrong"), "authentication failed")
    assert_clean_error(ndmpd(live, "list", "--user", "nobody"), "'nobody'")
    assert_clean_error(ndmpd(live, "list", password=None), "NDMPD_REST_PASSWORD")
    assert_clean_error(ndmpd(live, "show", "424242"), "no session with id 424242")
    unknown = "00000000-0000-4000-8000-000000000000/1"
    assert_clean_error(ndmpd(live, "kill", unknown), f"no session {unknown}")
    assert_clean_error(ndmpd(live, "show", "nobody/1"), "UUID is not valid")
    refused = subprocess.run(
        [*NDMPD, "sessions", "list", "--config", str(live.config), "--url",
         "http://127.0.0.1:9"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
        env={**os.environ, "NDMPD_REST_PASSWORD": ADMIN_PASSWORD},
    )  # fmt: skip
    assert_clean_error(refused, "connection refused")
    # The configuration's REST port is ephemeral here: without --url the CLI says so.
    assert_clean_error(ndmpd(live, "list", url=False), "give --url")
    # A password is never a command-line argument.
    usage = ndmpd(live, "list", "--password", "x")
    assert usage.returncode == 2 and "unrecognized arguments" in usage.stderr


def test_https_pins_the_servers_certificate(tmp_path: Path) -> None:
    from ndmpd.rest.tls import make_self_signed

    srv = start_server(tmp_path / "tls", tls=True)
    try:
        assert srv.rest_url and srv.rest_url.startswith("https://")
        ok = ndmpd(srv, "list")
        assert ok.returncode == 0, ok.stderr
        assert "no NDMP sessions" in ok.stdout
        # Another certificate in the state directory: the pin no longer matches.
        other = tmp_path / "other"
        other.mkdir()
        make_self_signed(other / "tls.crt", other / "tls.key", "impostor")
        wrong = ndmpd(srv, "list", "--state-dir", str(other))
        assert_clean_error(wrong, "TLS certificate verification")
        assert str(other / "tls.crt") in wrong.stderr
        # Plain http to a TLS port is explained, not a traceback.
        plain = ndmpd(srv, "list", "--url", srv.rest_url.replace("https:", "http:"), url=False)
        assert plain.returncode == 2 and "Traceback" not in plain.stderr
    finally:
        srv.stop()


def test_endpoint_from_the_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[rest]\nlisten = "0.0.0.0:8443"\n')
    config = load_config(cfg, tmp_path / "st")
    ep = endpoint_from_config(config)
    assert ep.url == "https://127.0.0.1:8443"
    assert ep.cert == tmp_path / "st" / "tls.crt"
    cfg.write_text('[rest]\nlisten = "[::1]:9443"\ntls = false\n')
    ep = endpoint_from_config(load_config(cfg, tmp_path / "st"))
    assert ep.url == "http://[::1]:9443" and ep.cert is None
    assert endpoint_from_config(config, "http://h:1/").url == "http://h:1"
    with pytest.raises(RestError, match="not an http"):
        endpoint_from_config(config, "ftp://h/")
