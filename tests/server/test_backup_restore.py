"""Backup and restore end to end with the real ndmjob DMA, dump and tar, LOCAL and TCP."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "engines"))

from tests.conftest import ended_okay, index_names, run_ndmjob
from tests.serverproc import ServerProcess, start_server
from trees import IS_ROOT, assert_same_tree, build_awkward_tree, tree_paths

ENGINES = ["dump", "tar"]
PATHS = ["local", "tcp"]
# dump keeps times to the microsecond; tar to the nanosecond
PRECISION = {"dump": 1000, "tar": 1}


def agents(srv: ServerProcess, path: str, tape_srv: ServerProcess | None = None) -> list[str]:
    data = srv.agent()
    if path == "local" and tape_srv is None:
        return ["-D", data]
    return ["-D", data, "-T", (tape_srv or srv).agent()]


def export(srv: ServerProcess, drive: str, out: Path) -> None:
    res = srv.cli("tape", "export", drive, "--file", "0", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size > 0


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    proc = start_server(tmp_path_factory.mktemp("e2e"), log_level="INFO")
    src = proc.volume() / "src"
    build_awkward_tree(src)
    yield proc
    proc.stop()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("engine", ENGINES)
def test_backup_toc_restore_selective(
    srv: ServerProcess, engine: str, path: str, ndmjob: str, tmp_path: Path
) -> None:
    src = srv.volume() / "src"
    drive = (
        {"local": "nrst0a", "tcp": "nrst1a"}[path]
        if engine == "dump"
        else {"local": "nrst2a", "tcp": "nrst3a"}[path]
    )
    ag = agents(srv, path)
    idx = tmp_path / "backup.idx"
    ended_okay(
        run_ndmjob(
            ["-c", "-v", *ag, "-B", engine, "-C", "/svm1/vol1/src", "-f", drive, "-I", str(idx)]
        )
    )
    n_entries = len(tree_paths(src))
    expected = n_entries + (1 if engine == "tar" else 0)  # tar lists the root as "/"
    assert index_names(idx, engine) == expected
    env = idx.read_text(errors="replace")
    assert "DE FILESYSTEM=/svm1/vol1/src" in env
    assert "DE PATHNAME_SEPARATOR=/" in env
    if engine == "dump":
        assert re.search(r"DE DUMP_DATE=\d+", env)

    # table of contents from the tape alone
    toc = tmp_path / "toc.idx"
    ended_okay(run_ndmjob(["-t", "-v", *ag, "-B", engine, "-f", drive, "-I", str(toc)]))
    assert index_names(toc, engine) == expected

    # full restore
    dest = f"rest-{engine}-{path}"
    ended_okay(
        run_ndmjob(
            ["-x", "-v", *ag, "-B", engine, "-C", f"/svm1/vol1/{dest}", "-f", drive, "-J", str(idx)]
        )
    )
    assert_same_tree(
        src, srv.volume() / dest, mtime_precision_ns=PRECISION[engine], root_meta=False
    )

    # selective restore of a few named files
    sel = f"sel-{engine}-{path}"
    picks = ["hello.txt", "xattrs.txt", "sizes/medium.bin"]
    text = ended_okay(
        run_ndmjob(
            [
                "-x",
                "-v",
                *ag,
                "-B",
                engine,
                "-C",
                f"/svm1/vol1/{sel}",
                "-f",
                drive,
                "-J",
                str(idx),
                *picks,
            ]
        )
    )
    got = sorted(
        os.fsdecode(p)
        for p in tree_paths(srv.volume() / sel)
        if (srv.volume() / sel / os.fsdecode(p)).is_file()
    )
    assert got == sorted(picks), got
    for p in picks:
        assert (srv.volume() / sel / p).read_bytes() == (src / p).read_bytes()
    assert "DATA did not report any LOG_FILE messages" not in text, text[-3000:]

    # the image on tape is a real dump / tar stream that the system tools restore
    image = tmp_path / f"image.{engine}"
    export(srv, drive, image)
    out_dir = tmp_path / "system-restore"
    out_dir.mkdir()
    if engine == "dump":
        res = subprocess.run(
            ["restore", "-x", "-a", "-y", "-f", str(image)],
            cwd=out_dir,
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert_same_tree(src, out_dir, mtime_precision_ns=1000, root_meta=False)
    else:
        res = subprocess.run(
            [
                "tar",
                "-xf",
                str(image),
                "--xattrs",
                "--xattrs-include=*",
                "--acls",
                "-C",
                str(out_dir),
            ],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
        )
        assert res.returncode == 0 and not res.stderr, res.stderr
        assert_same_tree(src, out_dir, mtime_precision_ns=1, root_meta=False)


def test_three_way_backup_and_restore_between_two_servers(
    srv: ServerProcess, ndmjob: str, tmp_path: Path
) -> None:
    tape_srv = start_server(tmp_path / "tape-server", log_level="INFO")
    try:
        src = srv.volume() / "src"
        ag = ["-D", srv.agent(), "-T", tape_srv.agent()]
        idx = tmp_path / "3way.idx"
        ended_okay(
            run_ndmjob(
                [
                    "-c",
                    "-v",
                    *ag,
                    "-B",
                    "dump",
                    "-C",
                    "/svm1/vol1/src",
                    "-f",
                    "nrst0a",
                    "-I",
                    str(idx),
                ]
            )
        )
        # the image lives on the second server's drive
        image = tmp_path / "3way.dump"
        export(tape_srv, "nrst0a", image)
        listing = subprocess.run(
            ["restore", "-t", "-f", str(image)],
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert listing.returncode == 0 and "./hello.txt" in listing.stdout
        ended_okay(
            run_ndmjob(
                [
                    "-x",
                    "-v",
                    *ag,
                    "-B",
                    "dump",
                    "-C",
                    "/svm1/vol1/rest-3way",
                    "-f",
                    "nrst0a",
                    "-J",
                    str(idx),
                ]
            )
        )
        assert_same_tree(src, srv.volume() / "rest-3way", mtime_precision_ns=1000, root_meta=False)
    finally:
        tape_srv.stop()


def test_backup_of_a_path_outside_every_volume_is_refused(
    srv: ServerProcess, ndmjob: str, tmp_path: Path
) -> None:
    for bad in ("/svm1/vol1/../../etc", "/svm1/nope", "/etc", "/svm9/vol1", "/svm1/vol1/missing"):
        out = run_ndmjob(
            ["-c", "-v", "-D", srv.agent(), "-B", "tar", "-C", bad, "-f", "nrst0a"], timeout=120
        )
        text = out.stdout + out.stderr
        # ndmjob exits 0 even when the data service refuses to start: read what it printed
        assert "Operation ended OKAY" not in text, text
        assert "Operation started" not in text, text
        assert "FILESYSTEM" in text, text  # the LOG_MESSAGE that says what was wrong


def test_unknown_butype_and_incremental_level_are_refused(srv: ServerProcess, ndmjob: str) -> None:
    out = run_ndmjob(
        ["-c", "-v", "-D", srv.agent(), "-B", "cpio", "-C", "/svm1/vol1/src", "-f", "nrst0a"],
        timeout=120,
    )
    assert "Operation ended OKAY" not in out.stdout + out.stderr
    assert "unknown backup type 'cpio'" in out.stdout + out.stderr
    out = run_ndmjob(
        [
            "-c",
            "-v",
            "-D",
            srv.agent(),
            "-B",
            "dump",
            "-C",
            "/svm1/vol1/src",
            "-E",
            "LEVEL=1",
            "-f",
            "nrst0a",
        ],
        timeout=120,
    )
    assert "Operation ended OKAY" not in out.stdout + out.stderr
    assert "incremental" in out.stdout + out.stderr


@pytest.mark.skipif(not IS_ROOT, reason="ownership checks need root")
def test_restore_keeps_owners_as_root(srv: ServerProcess) -> None:
    st = os.lstat(srv.volume() / "rest-dump-local" / "foreign")
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_tools_exist() -> None:
    assert shutil.which("restore") and shutil.which("tar")


def test_files_subset_backs_up_only_the_named_entries(srv: ServerProcess, tmp_path: Path) -> None:
    idx = tmp_path / "files.idx"
    ended_okay(
        run_ndmjob(
            [
                "-c",
                "-v",
                "-D",
                srv.agent(),
                "-B",
                "tar",
                "-C",
                "/svm1/vol1/src",
                "-f",
                "nrst0a",
                "-I",
                str(idx),
                "sizes",
                "hello.txt",
            ]
        )
    )
    names = {
        line.split(b" ")[1] for line in idx.read_bytes().splitlines() if line.startswith(b"DHf ")
    }
    assert {b"/sizes", b"/sizes/511", b"/hello.txt"} <= names
    assert not any(n.startswith(b"/links") or n == b"/xattrs.txt" for n in names), names
