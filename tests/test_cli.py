"""The `ndmpd` command run as a real subprocess against a temporary state directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ndmpd.catalog.config import load_config
from ndmpd.catalog.store import Catalog

BIN = Path(sys.executable).parent / "ndmpd"
ADMIN_PW = "admin-pw-for-tests"


def run(
    *args: str | Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "NDMPD_ADMIN_PASSWORD": ADMIN_PW, "COLUMNS": "120"}
    full_env.pop("NDMPD_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run(
        [str(BIN), *map(str, args)],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any("error: " in line for line in lines), lines
    assert fragment in proc.stderr, proc.stderr


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_first_command_initialises_then_stays_quiet(state: Path) -> None:
    proc = run("user", "list", "--state-dir", state)
    assert proc.returncode == 0, proc.stderr
    assert "initialised the state directory" in proc.stderr
    assert "(from NDMPD_ADMIN_PASSWORD)" in proc.stderr
    assert ADMIN_PW not in proc.stderr + proc.stdout
    ndmp_pw = re.search(r"NDMP user 'admin' for SVM 'svm1', password: (\S+)", proc.stderr)
    assert ndmp_pw and re.fullmatch(r"[A-Za-z0-9]{16}", ndmp_pw.group(1))
    assert re.search(r"admin\s.*admin\s.*-", proc.stdout)
    again = run("user", "list", "--state-dir", state)
    assert again.returncode == 0 and again.stderr == ""
    with Catalog(state) as cat:
        assert cat.verify_login("admin", ADMIN_PW) is not None
        assert cat.ndmp_password("admin", "svm1") == ndmp_pw.group(1)


def test_random_admin_password_is_printed(state: Path) -> None:
    proc = run("user", "list", "--state-dir", state, env={"NDMPD_ADMIN_PASSWORD": ""})
    assert proc.returncode == 0
    found = re.search(r"REST user 'admin' \(admin\), password: (\S+)", proc.stderr)
    assert found
    with Catalog(state) as cat:
        assert cat.verify_login("admin", found.group(1)) is not None


def test_user_add_list_remove(state: Path) -> None:
    proc = run(
        "user", "add", "alice", "--role", "readonly", "--svm", "svm1", "--password-stdin",
        "--state-dir", state, stdin="alice pw\n",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "added user 'alice'" in proc.stdout
    proc = run("--state-dir", state, "user", "add", "bob", "--role", "admin", "--password-stdin",
               stdin="bob-pw\r\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    listing = run("user", "list", "--state-dir", state)
    assert listing.returncode == 0
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"(\w+)\s*[│|]\s*(\w+)\s*[│|]\s*(\S+)", listing.stdout)
    }
    assert rows["alice"] == ("readonly", "svm1")
    assert rows["bob"] == ("admin", "-")
    assert rows["admin"] == ("admin", "-")

    with Catalog(state) as cat:
        assert cat.verify_login("alice", "alice pw") is not None
        assert cat.verify_login("bob", "bob-pw") is not None

    assert_clean_error(
        run("user", "add", "alice", "--role", "admin", "--password-stdin", "--state-dir", state,
            stdin="x\n"),
        "user 'alice' already exists",
    )  # fmt: skip
    proc = run("user", "remove", "alice", "--state-dir", state)
    assert proc.returncode == 0 and "removed user 'alice'" in proc.stdout
    assert "alice" not in run("user", "list", "--state-dir", state).stdout
    assert_clean_error(run("user", "remove", "alice", "--state-dir", state), "unknown user")


def test_user_add_errors(state: Path) -> None:
    assert_clean_error(
        run("user", "add", "carol", "--role", "admin", "--svm", "svm9", "--password-stdin",
            "--state-dir", state, stdin="pw\n"),
        "unknown SVM 'svm9'",
    )  # fmt: skip
    assert_clean_error(
        run("user", "add", "carol", "--role", "admin", "--password-stdin", "--state-dir", state),
        "no password on standard input",
    )
    assert_clean_error(
        run("user", "add", "a:b", "--role", "admin", "--password-stdin", "--state-dir", state,
            stdin="pw\n"),
        "invalid user name",
    )  # fmt: skip
    assert_clean_error(
        run("user", "add", "carol", "--role", "root", "--state-dir", state), "invalid choice"
    )
    assert_clean_error(run("user", "remove", "admin", "--state-dir", state), "last cluster admin")


def test_password(state: Path) -> None:
    run("user", "add", "alice", "--role", "readonly", "--svm", "svm1", "--password-stdin",
        "--state-dir", state, stdin="alice pw\n")  # fmt: skip
    proc = run("password", "alice", "--svm", "svm1", "--state-dir", state)
    assert proc.returncode == 0, proc.stderr
    pw = proc.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9]{16}", pw)
    assert run("password", "alice", "--svm", "svm1", "--state-dir", state).stdout.strip() == pw
    with Catalog(state) as cat:
        assert cat.ndmp_secret_for("alice", "svm1") == pw
    assert_clean_error(
        run("password", "alice", "--svm", "svm2", "--state-dir", state), "unknown SVM 'svm2'"
    )
    assert_clean_error(run("password", "nobody", "--svm", "svm1", "--state-dir", state), "nobody")
    assert_clean_error(run("password", "alice", "--state-dir", state), "--svm")


def test_config_show_round_trips(tmp_path: Path, state: Path) -> None:
    proc = run("config", "show", "--state-dir", state)
    assert proc.returncode == 0, proc.stderr
    assert not state.exists(), "config show must not create state"
    shown = tmp_path / "shown.toml"
    shown.write_text(proc.stdout)
    assert load_config(shown) == load_config(None, state)
    assert 'listen = "0.0.0.0:10000"' in proc.stdout


def test_config_errors_name_file_and_key(tmp_path: Path, state: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[ndmp]\nlisten = "x"\n')
    proc = run("config", "show", "--config", bad)
    assert_clean_error(proc, f"{bad}: ndmp.listen: expected HOST:PORT")
    assert proc.stderr.count("\n") == 1
    assert_clean_error(run("user", "list", "--config", bad, "--state-dir", state), "ndmp.listen")
    assert_clean_error(run("config", "show", "--config", tmp_path / "nope.toml"), "cannot read")


def test_tape_export_errors(state: Path, tmp_path: Path) -> None:
    assert_clean_error(
        run("tape", "export", "nrst9a", "--file", "0", "-o", "-", "--state-dir", state),
        "unknown drive 'nrst9a'",
    )
    assert_clean_error(
        run("tape", "export", "nrst0a", "--file", "-1", "-o", "-", "--state-dir", state),
        "tape file numbers start at 0",
    )
    out = tmp_path / "out.bin"
    proc = run("tape", "export", "nrst0a", "--file", "0", "-o", out, "--state-dir", state)
    # No image was ever written: a clear refusal (or, before ndmpd.tapes lands, "not available").
    assert_clean_error(proc, "nrst0a" if "not available" not in proc.stderr else "tape")
    assert not out.exists()


def test_sessions_without_a_password_is_a_clean_error(state: Path) -> None:
    assert_clean_error(run("sessions", "list", "--state-dir", state), "NDMPD_REST_PASSWORD")


def test_no_command_prints_usage() -> None:
    proc = run()
    assert proc.returncode == 2
    assert "usage: ndmpd" in proc.stderr


def test_python_dash_m(state: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ndmpd", "config", "show", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f'state_dir = "{state}"' in proc.stdout


def _write_tape(state: Path, files: list[list[bytes]]) -> None:
    from ndmpd.protocol.constants import MtioOp, TapeOpenMode
    from ndmpd.tapes import TapeDrive, image_path

    image = image_path(state, "nrst1a")
    image.parent.mkdir(parents=True, exist_ok=True)
    drive = TapeDrive("nrst1a", image, capacity=2**30, durable=False)
    drive.open(TapeOpenMode.RDWR)
    for records in files:
        for record in records:
            drive.write(record)
        drive.mtio(MtioOp.EOF, 1)
    drive.close()


def test_tape_export(state: Path, tmp_path: Path) -> None:
    pytest.importorskip("ndmpd.tapes.export")
    files = [[b"a" * 512, b"b" * 10240], [os.urandom(4096) for _ in range(5)]]
    _write_tape(state, files)
    out = tmp_path / "file1.bin"
    proc = run("tape", "export", "nrst1a", "--file", "1", "-o", out, "--state-dir", state)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b"".join(files[1])
    assert not list(tmp_path.glob(".*partial"))
    proc = subprocess.run(
        [str(BIN), "tape", "export", "nrst1a", "--file", "0", "-o", "-", "--state-dir", str(state)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout == b"".join(files[0])
    missing = tmp_path / "file7.bin"
    proc2 = run("tape", "export", "nrst1a", "--file", "7", "-o", missing, "--state-dir", state)
    assert_clean_error(proc2, "tape file 7 does not exist")
    assert not missing.exists() and not list(tmp_path.glob(".*partial"))
