"""Trees of many small files through the real ndmjob DMA: the engines' batched fast paths
(C scan, pack and O_TMPFILE writes) under real data connections, mixed with every entry the
fast paths hand back to the Python code, and a DMA killed in the middle of such a restore."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "engines"))

from tests.conftest import ended_okay, index_names, run_ndmjob
from tests.rest.test_api_basics import client
from tests.serverproc import NDMJOB, ServerProcess, start_server
from trees import IS_ROOT, assert_same_tree, tree_paths

from ndmpd.engines import native

PRECISION = {"dump": 1000, "tar": 1}
DIRS, PER_DIR = 12, 250
SIZES = (0, 1, 100, 511, 512, 513, 4096, 10_000, 20_000, 65_536)


def dir_name(d: int) -> bytes:
    return b"dir %02d" % d if d % 5 else b"dir \xe9\xff %02d" % d  # some not UTF-8


def build_many(root: Path) -> int:
    """DIRS × PER_DIR entries: mostly plain small files (the fast path), and among them, at
    fixed strides, the entries it must hand back: hard links, xattrs, symlinks, odd modes,
    long and non-ASCII names, a hole, a file over the fast path's size limit."""
    r = os.fsencode(root)
    os.makedirs(r, exist_ok=True)
    n = 0
    for d in range(DIRS):
        dpath = r + b"/" + dir_name(d)
        os.mkdir(dpath)
        for i in range(PER_DIR):
            k = d * PER_DIR + i
            name = b"f%04d" % i
            if k % 97 == 5:
                name = b"long-" + b"n" * 120 + b"%d" % k  # over ustar's 100 bytes
            elif k % 89 == 7:
                name = b"caf\xc3\xa9 %d" % k
            p = dpath + b"/" + name
            if k % 71 == 3:
                os.symlink(b"f%04d" % (i - 1), p)
            elif k % 61 == 4 and k > 0:
                os.link(r + b"/" + dir_name(0) + b"/f0000", p)  # across directories
            else:
                size = SIZES[k % len(SIZES)]
                data = bytes(((k + j) * 7) & 0xFF for j in range(min(size, 256))) * (
                    size // 256 + 1
                )
                with open(p, "wb") as f:
                    f.write(data[:size])
                if k % 53 == 2:
                    os.setxattr(p, b"user.k", b"%d" % k)
                mode = (0o644, 0o600, 0o755, 0o640, 0o444, 0o2755)[k % 6]
                os.chmod(p, mode)
                if IS_ROOT and k % 13 == 0:
                    os.chown(p, 1000 + k % 3, 2000 + k % 5)
            if not os.path.islink(p):
                t = 1_600_000_000_000_000_000 + k * 1_000_003_001
                os.utime(p, ns=(t, t))
            n += 1
    big = r + b"/dir 01/big.bin"  # past native.FAST_MAX_SIZE: the streaming path
    with open(big, "wb") as f:
        f.write(os.urandom(native.FAST_MAX_SIZE + 12345))
    holey = r + b"/dir 02/holey"
    with open(holey, "wb") as f:
        f.write(b"start")
        f.seek(8 << 20)
        f.write(b"end")
    for d in range(DIRS):  # directory times last: entries made above changed them
        t = 1_500_000_000_123_456_789 + d
        os.utime(r + b"/" + dir_name(d), ns=(t, t))
    return n + 2


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    proc = start_server(
        tmp_path_factory.mktemp("many"),
        log_level="INFO",
        # the last drive keeps a slow tape's pace, so a restore from it lasts long enough to
        # be killed in the middle
        tapes={**{f"nrst{i}a": "2G" for i in range(4)}, "slow": ("2G", "6M")},
    )
    count = build_many(proc.volume() / "many")
    assert len(tree_paths(proc.volume() / "many")) == count + DIRS
    yield proc
    proc.stop()


def agents(srv: ServerProcess, path: str) -> list[str]:
    return ["-D", srv.agent()] + (["-T", srv.agent()] if path == "tcp" else [])


def wait_sessions_closed(srv: ServerProcess) -> None:
    """Until the killed job's sessions are gone (the REST session list is empty): until then
    its drive is still taken, and the next job's TAPE_OPEN would get DEVICE_BUSY_ERR."""
    deadline = time.monotonic() + 20
    with client(srv) as c:
        while c.get("/api/protocols/ndmp/sessions").json()["num_records"]:
            assert time.monotonic() < deadline, "the killed job's sessions never closed"
            time.sleep(0.02)


@pytest.mark.parametrize("path", ["local", "tcp"])
@pytest.mark.parametrize("engine", ["dump", "tar"])
def test_many_small_files_round_trip(
    srv: ServerProcess, engine: str, path: str, ndmjob: str, tmp_path: Path
) -> None:
    src = srv.volume() / "many"
    drive = f"nrst{['dump', 'tar'].index(engine) * 2 + ['local', 'tcp'].index(path)}a"
    ag = agents(srv, path)
    idx = tmp_path / "b.idx"
    ended_okay(
        run_ndmjob(["-c", *ag, "-B", engine, "-C", "/svm1/vol1/many", "-f", drive, "-I", str(idx)])
    )
    assert index_names(idx, engine) == len(tree_paths(src)) + (1 if engine == "tar" else 0)
    dest = f"many-{engine}-{path}"
    ended_okay(run_ndmjob(["-x", *ag, "-B", engine, "-C", f"/svm1/vol1/{dest}", "-f", drive]))
    assert_same_tree(
        src, srv.volume() / dest, mtime_precision_ns=PRECISION[engine], root_meta=False
    )
    left = [p for p in tree_paths(srv.volume() / dest) if b".ndmpd-tmp" in p]
    assert not left, left

    # overwrite off over the complete restore: every file is kept, none rewritten
    before = {p: os.lstat(srv.volume() / dest / os.fsdecode(p)).st_ino for p in tree_paths(src)}
    ended_okay(
        run_ndmjob(
            ["-x", *ag, "-B", engine, "-C", f"/svm1/vol1/{dest}", "-f", drive, "-E",
             "NO_OVERWRITE=Y"]
        )
    )  # fmt: skip
    after = {p: os.lstat(srv.volume() / dest / os.fsdecode(p)).st_ino for p in tree_paths(src)}
    assert after == before


@pytest.mark.parametrize("engine", ["dump", "tar"])
def test_dma_killed_mid_restore_of_many_files(srv: ServerProcess, engine: str, ndmjob: str) -> None:
    agent = srv.agent()
    ended_okay(run_ndmjob(["-c", "-D", agent, "-B", engine, "-C", "/svm1/vol1/many", "-f", "slow"]))
    pid = srv.proc.pid
    baseline = len(os.listdir(f"/proc/{pid}/fd"))
    dest = srv.volume() / f"killed-{engine}"
    mark = len(srv.log_text())
    proc = subprocess.Popen(
        [NDMJOB, "-x", "-D", agent, "-B", engine, "-C", f"/svm1/vol1/killed-{engine}",
         "-f", "slow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # some files restored, far from all
            # os.walk, not tree_paths: it tolerates temporary names vanishing mid-walk
            if sum(len(d) + len(f) for _, d, f in os.walk(dest)) > 200:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    deadline = time.monotonic() + 20
    while "data halted" not in srv.log_text()[mark:]:
        assert time.monotonic() < deadline, "the data service never halted"
        time.sleep(0.02)
    deadline = time.monotonic() + 15
    while len(os.listdir(f"/proc/{pid}/fd")) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    assert len(fds) <= baseline, sorted(fds.values())
    src = srv.volume() / "many"
    got = tree_paths(dest)
    assert 200 < len(got) < len(tree_paths(src)), len(got)
    for rel in got:  # every name holds the whole file, or is a directory or a link
        p, q = os.fsdecode(dest / os.fsdecode(rel)), src / os.fsdecode(rel)
        assert b".ndmpd-tmp" not in rel, rel
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as a, open(q, "rb") as b:
                assert a.read() == b.read(), rel
    wait_sessions_closed(srv)
    # and the server goes on serving
    out = run_ndmjob(["-q", "-D", agent])
    assert out.returncode == 0 and "NDMPv4" in out.stdout


@pytest.mark.parametrize("engine", ["dump", "tar"])
def test_dma_killed_mid_backup_of_many_files(srv: ServerProcess, engine: str, ndmjob: str) -> None:
    pid = srv.proc.pid
    baseline = len(os.listdir(f"/proc/{pid}/fd"))
    mark = len(srv.log_text())
    proc = subprocess.Popen(
        [NDMJOB, "-c", "-D", srv.agent(), "-T", srv.agent(), "-B", engine,
         "-C", "/svm1/vol1/many", "-f", "slow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "started" not in srv.log_text()[mark:]:
            assert time.monotonic() < deadline, "the backup never started"
            assert proc.poll() is None, "ndmjob ended before the backup started"
            time.sleep(0.01)
        time.sleep(0.5)  # in the middle: the slow drive takes the whole tree in seconds
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    deadline = time.monotonic() + 20
    while srv.log_text()[mark:].count("halted") < 2:
        assert time.monotonic() < deadline, "the data service or the mover never halted"
        time.sleep(0.02)
    assert "data halted: SUCCESSFUL" not in srv.log_text()[mark:]
    deadline = time.monotonic() + 15
    while len(os.listdir(f"/proc/{pid}/fd")) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    assert len(fds) <= baseline, sorted(fds.values())
    wait_sessions_closed(srv)
    out = run_ndmjob(["-q", "-D", srv.agent()])
    assert out.returncode == 0 and "NDMPv4" in out.stdout
