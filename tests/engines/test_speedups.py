"""The C fast paths (``ndmpd._speedups``) against the pure-Python paths, which are the reference.

* Backup: both engines, on the awkward tree and on a tree of many small files, write the same
  stream byte for byte and the same file history with and without the C module (with and
  without a history sink, with and without a sink ``write_batch``).
* Restore: the same stream restored with and without the C module gives the same tree, the
  same RecoverResult, logs and file results, also over existing files (overwrite on and off)
  and with a directory where a file of the image goes; no temporary file and no descriptor
  is left behind.
* The C functions directly: ``tar_scan`` against Python's ``tarfile``; ``tar_scan`` and
  ``dump_scan`` on arbitrary and corrupted bytes; ``write_files`` flags and failures.
* ``NDMPD_NO_SPEEDUPS=1`` turns the module off.

Source trees get atimes in the future (after their mtimes and ctimes), so that relatime never
updates them while the engines read: two backups of the same tree are then comparable.
"""

from __future__ import annotations

import collections
import errno
import importlib.util
import io
import os
import random
import re
import stat
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trees import IS_ROOT, assert_same_tree, build_awkward_tree, compare_trees

from ndmpd.engines import native
from ndmpd.engines.base import BackupJob, EngineError, RecoverJob, RecoverResult
from ndmpd.engines.dump import format as dfmt
from ndmpd.engines.registry import available
from ndmpd.engines.tar import format as tfmt

SP = native.speedups
needs_speedups = pytest.mark.skipif(SP is None, reason="ndmpd._speedups is not built")

NS = 1_000_000_000
FIXED_TIME = 1_750_000_000.25  # time.time() during dump backups (the writer stamps it)
T0 = 1_600_000_000 * NS  # mtimes
FUTURE = (int(time.time()) + 40 * 86400) * NS  # atimes: later than mtime, ctime and now
TEMP_PREFIX = b".ndmpd-tmp."
BLOCK = 512
SIZES = (0, 1, 511, 512, 513, 4096, 10000)
MANY = 600  # files in one directory: more than native.SCAN_BATCH
_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- trees ---------------------------------------------------------------------------------


def _data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def freeze_atimes(root: Path | bytes) -> None:
    """Every entry's atime set into the future (nanoseconds distinct), mtimes kept."""
    r = os.fsencode(root)
    k = 0

    def fix(p: bytes) -> None:
        nonlocal k
        k += 1
        at = FUTURE + k * 1_000_000_007 + 123_456_789 % (k + 7)
        os.utime(p, ns=(at, os.lstat(p).st_mtime_ns), follow_symlinks=False)

    for dirpath, dirnames, filenames in os.walk(r, topdown=False):
        for name in sorted(filenames + dirnames):
            fix(os.path.join(dirpath, name))
    fix(r)


def build_small_tree(root: Path) -> Path:
    """Many small files of assorted sizes, plus every case a fast path must hand back."""
    r = os.fsencode(root)
    os.makedirs(r + b"/many")
    os.makedirs(r + b"/sub/deeper")

    def put(rel: bytes, data: bytes, mode: int = 0o644) -> bytes:
        p = r + b"/" + rel
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        return p

    for i in range(MANY):
        put(b"many/f%04d" % i, _data(i, SIZES[i % len(SIZES)]), 0o640 if i % 3 else 0o600)
    for i, size in enumerate(SIZES):
        put(b"sub/s%d" % size, _data(1000 + i, size))
        put(b"sub/deeper/d%d" % size, _data(2000 + i, size), 0o755)
    put(b"big600k", _data(3000, 600_000))
    put(b"big2m", _data(3001, 2 * 1024 * 1024))
    put(b"setuid", b"#!/bin/sh\n", 0o4755)
    put(b"setgid-sticky", b"odd modes\n", 0o3711)
    p = put(b"owned", b"owned by somebody else\n")
    if IS_ROOT:
        os.chown(p, 1234, 5678)
    p = put(b"xattr", b"with an xattr\n")
    os.setxattr(p, b"user.note", b"fast paths must hand this back")
    put(b"link-a", b"hard linked\n")
    os.link(r + b"/link-a", r + b"/sub/link-b")
    os.symlink(b"sub/s512", r + b"/symlink")
    put(b"N" * 120, b"a 120-byte name\n")
    put("naïve-ß-日本.txt".encode(), b"non-ascii name\n")
    # times: mtimes in the past (nanoseconds in use), deepest entries first
    k = 0
    for dirpath, dirnames, filenames in os.walk(r, topdown=False):
        for name in sorted(filenames + dirnames):
            k += 1
            t = T0 + k * 1_000_003_001 + (k * 7919) % NS
            os.utime(os.path.join(dirpath, name), ns=(t, t), follow_symlinks=False)
    os.utime(r, ns=(T0, T0))
    freeze_atimes(r)
    return Path(os.fsdecode(r))


@pytest.fixture(scope="module")
def source_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(engine, "awkward" | "small") -> a source tree with frozen atimes."""
    base = tmp_path_factory.mktemp("speedups-src")
    awk_tar = build_awkward_tree(base / "awk-tar")
    awk_dump = build_awkward_tree(base / "awk-dump", socket_file=True)  # dump keeps sockets
    freeze_atimes(awk_tar)
    freeze_atimes(awk_dump)
    small = build_small_tree(base / "small")
    return {
        ("tar", "awkward"): awk_tar,
        ("dump", "awkward"): awk_dump,
        ("tar", "small"): small,
        ("dump", "small"): small,
    }


# -- engine runs ---------------------------------------------------------------------------


class Sink:
    def __init__(self, batch: int | None = None) -> None:
        self.parts: list[bytes] = []
        if batch is not None:
            self.write_batch = batch

    def write(self, data: bytes | memoryview) -> None:
        self.parts.append(bytes(data))  # the engines reuse their buffer


def _st(st_: os.stat_result) -> tuple:
    return (
        st_.st_mode, st_.st_ino, st_.st_dev, st_.st_nlink, st_.st_uid, st_.st_gid, st_.st_size,
        int(st_.st_atime), int(st_.st_mtime), int(st_.st_ctime), st_.st_mtime_ns,
    )  # fmt: skip


class History:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def add_file(self, path: bytes, st_: os.stat_result, node: int, fh_info: int) -> None:
        self.events.append(("file", path, node, fh_info, _st(st_)))

    def add_dir(self, name: bytes, node: int, parent: int) -> None:
        self.events.append(("dir", name, node, parent))

    def add_node(self, st_: os.stat_result, node: int, fh_info: int) -> None:
        self.events.append(("node", node, fh_info, _st(st_)))


class Counting:
    """Stands for ``native.speedups``: forwards to the C module and counts what it did."""

    def __init__(self, mod: object) -> None:
        self._mod = mod
        self.calls: collections.Counter[str] = collections.Counter()
        self.items: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._mod, name)
        if not callable(attr):
            return attr

        def call(*a: object) -> object:
            r = attr(*a)
            self.calls[name] += 1
            if name in ("tar_scan", "dump_scan"):
                self.items[name] += len(r[0])
            elif name == "write_files":
                self.items[name] += r[0]
            elif name in ("tar_pack_files", "dump_pack_files"):
                self.items[name] += r[0] - a[2]
            return r

        return call


@dataclass
class Backup:
    stream: bytes
    history: list[tuple] | None
    logs: list[tuple]
    env_added: dict[str, str]
    writes: list[int]


def run_backup(engine: str, root: Path, *, history: bool, batch: int | None) -> Backup:
    sink, logs = Sink(batch), []
    hist = History() if history else None
    job = BackupJob(
        root=os.fsencode(root), env={}, sink=sink, history=hist,
        log=lambda t, m: logs.append((t, m)), abort=threading.Event(),
    )  # fmt: skip
    with mock.patch("time.time", return_value=FIXED_TIME):
        available()[engine].backup(job)
    return Backup(
        b"".join(sink.parts), hist.events if hist else None, logs, dict(job.env_added),
        [len(p) for p in sink.parts],
    )  # fmt: skip


def _first_diff(a: bytes, b: bytes) -> str:
    n = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    lo = n - n % BLOCK
    return (
        f"lengths {len(a)} (C) and {len(b)} (Python), first difference at offset {n}; "
        f"C block {a[lo : lo + 160]!r}\nPython block {b[lo : lo + 160]!r}"
    )


@dataclass
class Restore:
    result: RecoverResult | None
    error: str | None
    logs: list[tuple]
    files: list[tuple]


def run_restore(engine: str, data: bytes, dest: Path, *, overwrite: bool = True) -> Restore:
    """Restore ``data`` into ``dest``; logs with ``dest`` replaced by ``<DEST>``. Checks that
    no temporary file and no open descriptor is left behind."""
    d = os.fsencode(dest)
    logs: list[tuple] = []
    files: list[tuple] = []
    fds = len(os.listdir("/proc/self/fd"))
    job = RecoverJob(
        source=io.BytesIO(data), env={}, confine=d, destination=d, selections=[],
        log=lambda t, m: logs.append((t, m)), file_result=lambda n, s: files.append((n, s)),
        abort=threading.Event(), overwrite=overwrite,
    )  # fmt: skip
    result, error = None, None
    try:
        result = available()[engine].recover(job)
    except EngineError as e:
        error = str(e).replace(str(dest), "<DEST>")
    assert len(os.listdir("/proc/self/fd")) == fds, "descriptors left open"
    leftovers = [p for p, name, _ in _walk(d) if name.startswith(TEMP_PREFIX)]
    assert not leftovers, f"temporary files left: {leftovers!r}"
    logs = [(t, m.replace(str(dest), "<DEST>")) for t, m in logs]
    return Restore(result, error, logs, files)


def _walk(root: bytes):
    """(path, name, is_dir) of everything below ``root``; no symlink is read or followed."""
    with os.scandir(root) as it:
        entries = [(e.path, e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for path, name, is_dir in entries:
        yield path, name, is_dir
        if is_dir:
            yield from _walk(path)


def _times(root: Path) -> dict[bytes, tuple[int, int]]:
    """(atime_ns, mtime_ns) of every non-directory, read before anything reads the files."""
    r = os.fsencode(root)
    out = {}
    for p, _name, is_dir in _walk(r):
        if not is_dir:
            s = os.lstat(p)
            out[p[len(r) :]] = (s.st_atime_ns, s.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def python_streams(source_trees: dict) -> dict[tuple[str, str], bytes]:
    """The reference streams (pure-Python path) of the source trees."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "speedups", None)
        for key, root in source_trees.items():
            out[key] = run_backup(key[0], root, history=False, batch=None).stream
    return out


def restore_both(
    engine: str, data: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    prepare=None, overwrite: bool = True,
) -> tuple[Path, Restore, Path, Restore, Counting]:  # fmt: skip
    """Restore ``data`` with the C module into tmp/c and without it into tmp/py."""
    assert SP is not None
    dc, dp = tmp_path / "c", tmp_path / "py"
    for d in (dc, dp):
        d.mkdir()
        if prepare is not None:
            prepare(d)
    counting = Counting(SP)
    monkeypatch.setattr(native, "speedups", counting)
    rc = run_restore(engine, data, dc, overwrite=overwrite)
    tc = _times(dc)
    monkeypatch.setattr(native, "speedups", None)
    rp = run_restore(engine, data, dp, overwrite=overwrite)
    tp = _times(dp)
    monkeypatch.setattr(native, "speedups", SP)
    assert tc == tp, "restored atimes/mtimes differ"
    return dc, rc, dp, rp, counting


def assert_same_outcome(rc: Restore, rp: Restore) -> None:
    assert rc.error == rp.error
    assert rc.result == rp.result
    assert rc.logs == rp.logs
    assert rc.files == rp.files


# -- 1. backup equivalence -----------------------------------------------------------------


@needs_speedups
@pytest.mark.parametrize("batch", [None, 32768], ids=["nobatch", "batch32k"])
@pytest.mark.parametrize("history", [False, True], ids=["nohist", "hist"])
@pytest.mark.parametrize("tree", ["awkward", "small"])
@pytest.mark.parametrize("engine", ["tar", "dump"])
def test_backup_same_stream_and_history(
    engine: str, tree: str, history: bool, batch: int | None, source_trees: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    root = source_trees[engine, tree]
    counting = Counting(SP)
    monkeypatch.setattr(native, "speedups", counting)
    fast = run_backup(engine, root, history=history, batch=batch)
    monkeypatch.setattr(native, "speedups", None)
    slow = run_backup(engine, root, history=history, batch=batch)
    # the C path did run, and took the plain small files
    pack = f"{engine}_pack_files"
    assert counting.calls[pack] > 0
    if tree == "small":
        assert counting.items[pack] >= MANY
    if fast.stream != slow.stream:
        pytest.fail("streams differ: " + _first_diff(fast.stream, slow.stream))
    assert fast.history == slow.history
    assert fast.logs == slow.logs
    assert fast.env_added == slow.env_added
    if batch is not None and tree == "small":
        assert len(fast.writes) > 1 and len(slow.writes) > 1


@needs_speedups
@pytest.mark.parametrize(
    "engine",
    [
        "tar",
        "dump",
    ],
)
def test_backup_small_files_in_non_ascii_directory(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "src"
    for d in ("café".encode(), b"latin1-\xe9"):
        os.makedirs(os.fsencode(root) + b"/" + d)
        for i, size in enumerate(SIZES):
            with open(os.fsencode(root) + b"/" + d + b"/f%d" % i, "wb") as f:
                f.write(_data(i, size))
    freeze_atimes(root)
    fast = run_backup(engine, root, history=True, batch=None)
    monkeypatch.setattr(native, "speedups", None)
    slow = run_backup(engine, root, history=True, batch=None)
    if fast.stream != slow.stream:
        pytest.fail("streams differ: " + _first_diff(fast.stream, slow.stream))
    assert fast.history == slow.history


# -- 2. restore equivalence ----------------------------------------------------------------


@needs_speedups
@pytest.mark.parametrize("tree", ["awkward", "small"])
@pytest.mark.parametrize("engine", ["tar", "dump"])
def test_restore_same_tree(
    engine: str, tree: str, source_trees: dict, python_streams: dict, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    src = source_trees[engine, tree]
    data = python_streams[engine, tree]
    dc, rc, dp, rp, counting = restore_both(engine, data, tmp_path, monkeypatch)
    assert counting.items[f"{engine}_scan"] > 0 and counting.items["write_files"] > 0
    if tree == "small":
        assert counting.items["write_files"] >= MANY
    assert_same_outcome(rc, rp)
    assert rc.error is None and rc.result is not None
    assert rc.result.failed == 0
    if engine == "tar":  # dump stops at TS_END, before the record padding
        assert rc.result.bytes_read == len(data)
    precision = 1000 if engine == "dump" else 1
    assert_same_tree(dp, dc)
    assert_same_tree(src, dc, mtime_precision_ns=precision)


class BreakingSource(io.BytesIO):
    """A data connection that dies (the DMA gone) after ``limit`` bytes."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.limit = limit

    def readinto(self, buf) -> int:  # type: ignore[override]
        if self.tell() >= self.limit:
            raise ConnectionResetError("data connection lost")
        view = memoryview(buf)[: self.limit - self.tell()]
        return super().readinto(view)


@needs_speedups
@pytest.mark.parametrize("engine", ["tar", "dump"])
def test_restore_cut_by_a_broken_connection_releases_everything(
    engine: str, python_streams: dict, tmp_path: Path
) -> None:
    """Not an engine error: the exception goes up, and with it the committer thread, the
    directory descriptors and every temporary file (the DMA killed mid-restore)."""
    data = python_streams[engine, "small"]
    most = 0
    for tenth in range(1, 10):
        dest = tmp_path / f"cut{tenth}"
        dest.mkdir()
        d = os.fsencode(dest)
        fds = len(os.listdir("/proc/self/fd"))
        job = RecoverJob(
            source=BreakingSource(data, len(data) * tenth // 10), env={}, confine=d,
            destination=d, selections=[], log=lambda t, m: None,
            file_result=lambda n, s: None, abort=threading.Event(),
        )  # fmt: skip
        with pytest.raises(ConnectionResetError):
            available()[engine].recover(job)
        assert len(os.listdir("/proc/self/fd")) == fds, "descriptors left open"
        assert not [t for t in threading.enumerate() if t.name == "ndmpd-commit"]
        names = [n for _, n, _ in _walk(d)]
        assert not [n for n in names if n.startswith(TEMP_PREFIX)], tenth
        most = max(most, len(names))
    assert most > 100, "no cut came after the fast path had run"


PRE = [b"many/f0003", b"many/f0510", b"many/f0599", b"sub/s4096", b"sub/deeper/d0",
       b"big600k", b"N" * 120, b"setuid"]  # fmt: skip
PRE_MTIME = 1_111_111_111_222_333_444


def _pre_populate(d: Path) -> None:
    r = os.fsencode(d)
    for rel in PRE:
        p = r + b"/" + rel
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(b"pre-existing " + rel + b"\n")
        os.chmod(p, 0o600)
        os.utime(p, ns=(PRE_MTIME, PRE_MTIME))


@needs_speedups
@pytest.mark.parametrize("engine", ["tar", "dump"])
def test_restore_overwrite_off_keeps_existing_files(
    engine: str, source_trees: dict, python_streams: dict, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    src = source_trees[engine, "small"]
    data = python_streams[engine, "small"]
    dc, rc, dp, rp, counting = restore_both(
        engine, data, tmp_path, monkeypatch, _pre_populate, overwrite=False
    )
    assert counting.items["write_files"] > 0
    assert_same_outcome(rc, rp)
    kept = [m for _t, m in rp.logs if m.startswith("kept existing")]
    assert len(kept) == len(PRE)
    for d in (dc, dp):
        for rel in PRE:
            p = os.fsencode(d) + b"/" + rel
            with open(p, "rb") as f:
                assert f.read() == b"pre-existing " + rel + b"\n"
            s = os.lstat(p)
            assert stat.S_IMODE(s.st_mode) == 0o600 and s.st_mtime_ns == PRE_MTIME
    assert_same_tree(dp, dc)
    assert not compare_trees(src, dc, ignore=frozenset(PRE), mtime_precision_ns=1000)


@needs_speedups
@pytest.mark.parametrize("engine", ["tar", "dump"])
def test_restore_overwrite_on_replaces_existing_files(
    engine: str, source_trees: dict, python_streams: dict, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    src = source_trees[engine, "small"]
    data = python_streams[engine, "small"]
    dc, rc, dp, rp, _ = restore_both(engine, data, tmp_path, monkeypatch, _pre_populate)
    assert_same_outcome(rc, rp)
    assert rc.result is not None and rc.result.failed == 0
    assert_same_tree(dp, dc)
    assert_same_tree(src, dc, mtime_precision_ns=1000 if engine == "dump" else 1)


IN_THE_WAY = [b"many/f0007", b"sub/s1"]  # non-empty directories where image files go
EMPTY_IN_THE_WAY = b"many/f0008"


def _dirs_in_the_way(d: Path) -> None:
    r = os.fsencode(d)
    for rel in IN_THE_WAY:
        os.makedirs(r + b"/" + rel)
        with open(r + b"/" + rel + b"/inner", "wb") as f:
            f.write(b"inside a directory in the way\n")
        os.utime(r + b"/" + rel + b"/inner", ns=(PRE_MTIME, PRE_MTIME))
    os.makedirs(r + b"/" + EMPTY_IN_THE_WAY)
    for rel in (*IN_THE_WAY, EMPTY_IN_THE_WAY):
        os.utime(r + b"/" + rel, ns=(PRE_MTIME, PRE_MTIME))


@needs_speedups
@pytest.mark.parametrize(
    "engine,overwrite",
    [
        ("tar", True),
        ("tar", False),
        ("dump", True),
        ("dump", False),
    ],
)
def test_restore_directory_where_a_file_goes(
    engine: str, overwrite: bool, source_trees: dict, python_streams: dict, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    src = source_trees[engine, "small"]
    data = python_streams[engine, "small"]
    dc, rc, dp, rp, _ = restore_both(
        engine, data, tmp_path, monkeypatch, _dirs_in_the_way, overwrite=overwrite
    )
    assert_same_outcome(rc, rp)
    for rel in IN_THE_WAY:
        assert any(os.fsdecode(rel) in m for _t, m in rp.logs), (rel, rp.logs)
        for d in (dc, dp):
            assert (d / os.fsdecode(rel) / "inner").read_bytes().startswith(b"inside")
    if overwrite:
        assert rc.result is not None and rc.result.failed == len(IN_THE_WAY)
        assert (dc / os.fsdecode(EMPTY_IN_THE_WAY)).is_file()  # an empty one is replaced
    else:
        assert (dc / os.fsdecode(EMPTY_IN_THE_WAY)).is_dir()
    assert_same_tree(dp, dc)
    ignore = {*IN_THE_WAY, *(r + b"/inner" for r in IN_THE_WAY)}
    if not overwrite:
        ignore.add(EMPTY_IN_THE_WAY)
    assert not compare_trees(src, dc, ignore=frozenset(ignore), mtime_precision_ns=1000)


def _tarfile_stream(members: list[tuple], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """(name, kind, payload) -> a stream by Python's tarfile. kind: f(ile) d(ir) s(ymlink)
    l(ink); payload: data, or the link target."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as t:
        for i, (name, kind, payload) in enumerate(members):
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000 + i
            ti.mode = 0o644
            ti.uid, ti.gid = 1000 + i, 2000 + i
            if kind == "d":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif kind == "s":
                ti.type, ti.linkname = tarfile.SYMTYPE, payload
                t.addfile(ti)
            elif kind == "l":
                ti.type, ti.linkname = tarfile.LNKTYPE, payload
                t.addfile(ti)
            else:
                ti.size = len(payload)
                t.addfile(ti, io.BytesIO(payload))
    return b.getvalue()


@needs_speedups
@pytest.mark.parametrize(
    "overwrite",
    [
        True,
        False,
    ],
    ids=["overwrite", "keep"],
)
def test_tar_restore_file_then_file_below_it(
    overwrite: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _tarfile_stream([("x", "f", b"file x\n"), ("x/z", "f", b"zz\n"), ("y", "f", b"y\n")])
    dc, rc, dp, rp, _ = restore_both("tar", data, tmp_path, monkeypatch, overwrite=overwrite)
    assert_same_outcome(rc, rp)
    assert_same_tree(dp, dc)


@needs_speedups
@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "keep"])
def test_tar_restore_names_met_twice_and_failures_across_lanes(
    overwrite: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committer deals a batch's files to its threads: a name met twice must end with
    its last copy, and failures in either thread are reported in stream order."""
    members: list[tuple] = [("d", "d", None)]
    for i in range(400):
        members.append((f"d/f{i % 150}", "f", b"copy %d of f%d\n" % (i // 150, i % 150)))
    data = _tarfile_stream(members)

    def in_the_way(d: Path) -> None:  # directories where every 7th file goes
        for i in range(0, 150, 7):
            (d / "d" / f"f{i}" / "inner").mkdir(parents=True)
            for q in (d / "d" / f"f{i}" / "inner", d / "d" / f"f{i}"):
                os.utime(q, ns=(T0, T0))

    dc, rc, dp, rp, counting = restore_both(
        "tar", data, tmp_path, monkeypatch, in_the_way, overwrite=overwrite
    )
    assert counting.items["write_files"] > 0
    assert_same_outcome(rc, rp)  # the same log lines and results, in the same order
    copies = {i: len(range(i, 400, 150)) for i in range(150)}  # of each name
    blocked = sum(copies[i] for i in range(0, 150, 7))
    assert rc.result is not None
    if overwrite:  # every copy of a blocked name fails
        assert rc.result.failed == blocked
    else:  # and every copy after the first of the others is kept out
        assert rc.result.failed == blocked + sum(n - 1 for i, n in copies.items() if i % 7)
    assert_same_tree(dp, dc, root_meta=False)
    for i in range(150):
        if i % 7:
            which = copies[i] - 1 if overwrite else 0
            assert (dc / "d" / f"f{i}").read_bytes() == b"copy %d of f%d\n" % (which, i)


@needs_speedups
@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_restore_foreign_stream(fmt: int, tmp_path: Path, monkeypatch) -> None:
    """A tarfile stream with odd names, links, long names and pax extras: both paths agree."""
    rnd = random.Random(fmt)
    members: list[tuple] = []
    files: list[str] = []
    for i in range(300):
        d = rnd.choice(["", "d1/", "./d2/", "d1//d3/", "/abs/", "dé/", "d4/" * 20])
        k = rnd.random()
        if k < 0.05:
            members.append((f"{d}dd{i}", "d", None))
        elif k < 0.1:
            members.append((f"{d}sym{i}", "s", rnd.choice(["f1", "../x", "/etc"])))
        elif k < 0.15 and files:
            short = [f for f in files if len(f.encode()) <= 100]  # ustar's linkname field
            members.append((f"{d}hl{i}", "l", rnd.choice(short or files)))
        elif k < 0.18:
            members.append((f"{d}../evil{i}", "f", b"no"))
        else:
            size = rnd.choice([*SIZES, 70_000, 1_100_000])
            base = f"f{i}" + ("L" * rnd.choice([0, 0, 0, 90, 150]))
            if fmt == tarfile.USTAR_FORMAT:
                base = base[:100]
            name = d + base
            members.append((name, "f", _data(i, size)))
            files.append(name)
    data = _tarfile_stream(members, fmt)
    dc, rc, dp, rp, counting = restore_both("tar", data, tmp_path, monkeypatch)
    assert counting.items["write_files"] > 0
    assert_same_outcome(rc, rp)
    # directories the stream does not list get the time of their creation: align those
    listed = {b"/".join(p for p in os.fsencode(n).split(b"/") if p and p != b".")
              for n, kind, _ in members if kind == "d"}  # fmt: skip
    for d in (dc, dp):
        r = os.fsencode(d)
        for p, _name, is_dir in [(r, b"", True), *_walk(r)]:
            if is_dir and p[len(r) + 1 :] not in listed:
                os.utime(p, ns=(PRE_MTIME, PRE_MTIME))
    assert_same_tree(dp, dc)


@needs_speedups
@pytest.mark.parametrize("which", [0, 1, 5, 40, -1])
def test_tar_restore_corrupt_header(
    which: int, source_trees: dict, python_streams: dict, tmp_path: Path, monkeypatch
) -> None:
    """A header (of a small file) with a bad checksum: both paths restore the same files
    and stop with the same error."""
    data = bytearray(python_streams["tar", "small"])
    heads = [
        m.start() - m.start() % BLOCK
        for m in re.finditer(rb"\./many/f\d{4}\0", bytes(data))
        if m.start() % BLOCK == 0
    ]
    off = heads[which]
    data[off + 100] ^= 0x01  # the mode field: the checksum no longer matches
    dc, rc, dp, rp, _ = restore_both("tar", bytes(data), tmp_path, monkeypatch)
    assert rp.error is not None and "checksum" in rp.error
    assert_same_outcome(rc, rp)
    assert_same_tree(dp, dc)


def _dump_file_headers(data: bytes, max_size: int = 20000) -> list[int]:
    """Offsets of the TS_INODE headers of regular files smaller than ``max_size``."""
    out = []
    for off in range(0, len(data), dfmt.TP_BSIZE):
        rec = data[off : off + dfmt.TP_BSIZE]
        if dfmt.classify(rec) == "ok":
            h = dfmt.parse_header(rec)
            if h.ctype == dfmt.TS_INODE and h.mode & 0o170000 == 0o100000 and h.size < max_size:
                out.append(off)
    return out


@needs_speedups
def test_dump_restore_corrupt_header_after_a_file(
    source_trees: dict, python_streams: dict, tmp_path: Path, monkeypatch
) -> None:
    data = bytearray(python_streams["dump", "small"])
    heads = _dump_file_headers(bytes(data))
    off = heads[len(heads) // 2]
    data[off + 40] ^= 0xFF  # c_size: the record checksum no longer matches
    dc, rc, dp, rp, _ = restore_both("dump", bytes(data), tmp_path, monkeypatch)
    assert rp.error is not None and "checksum" in rp.error
    assert_same_outcome(rc, rp)
    assert_same_tree(dp, dc)


# -- 3. the C functions --------------------------------------------------------------------

_PAX_KEYS = {"path", "mtime", "atime", "ctime", "uid", "gid", "size", "uname", "gname"}
_TIME = re.compile(r"(\d{1,18})(\.\d{1,9})?")
_DEC = re.compile(r"\d{1,18}")


def _pax_ns(v: str) -> int:
    return int(Decimal(v) * NS)


def _fast_ok(ti: tarfile.TarInfo, fmt: int, max_size: int) -> bool:
    """Whether tar_scan must accept the member (its documented rules, from tarfile's view)."""
    if ti.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or ti.size > max_size:
        return False
    name = ti.name.encode("utf-8", "surrogateescape")
    if not name or name.endswith(b"/"):
        return False
    if fmt == tarfile.GNU_FORMAT and (
        len(name) > 100 or not 0 <= ti.uid < 8**7 or not 0 <= ti.gid < 8**7
        or not 0 <= ti.mtime < 8**11
    ):  # fmt: skip
        return False  # a GNU long-name member, or base-256 numbers
    for k, v in ti.pax_headers.items():
        if k not in _PAX_KEYS:
            return False
        if k in ("mtime", "atime", "ctime"):
            m = _TIME.fullmatch(v)
            if not m or int(m.group(1)) > 9_000_000_000:
                return False
        elif k in ("uid", "gid"):
            if not _DEC.fullmatch(v) or int(v) > 0xFFFFFFFF:
                return False
        elif k == "size":
            if not _DEC.fullmatch(v):
                return False
        elif k == "path" and (not v or "\0" in v):
            return False
    return True


_seg = st.text(alphabet="abcXYZ019_-. é€日", min_size=1, max_size=30)
_names = st.builds(
    lambda lead, segs: lead + "/".join(segs),
    st.sampled_from(["", "", "./", "/"]),
    st.lists(_seg, min_size=1, max_size=6),
)
_kinds = st.sampled_from(["reg", "reg", "reg", "reg", "areg", "cont", "dir", "sym", "lnk", "fifo"])
_pax_extra = st.dictionaries(
    st.sampled_from(["atime", "ctime", "comment", "uname", "SCHILY.xattr.user.a"]),
    st.sampled_from(["0", "1700000000.123456789", "12.5", "1.1234567891", "1e5", "-3", "", "x"]),
    max_size=2,
)
_member = st.tuples(
    _kinds,
    _names,
    st.one_of(st.integers(0, 1100), st.sampled_from([511, 512, 513, 4096])),
    st.integers(0, 0o7777),
    st.one_of(st.integers(0, 8**7 - 1), st.integers(0, 2**33)),
    st.one_of(st.integers(0, 8**7 - 1), st.integers(0, 2**33)),
    st.one_of(
        st.integers(0, 8**11 - 1),
        st.floats(0, 9.5e9, allow_nan=False, allow_infinity=False),
        st.integers(-5, -1),
    ),
    _pax_extra,
)


@needs_speedups
@pytest.mark.parametrize(
    "fmt",
    [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT],
    ids=["pax", "gnu", "ustar"],
)
@_SETTINGS
@given(
    members=st.lists(_member, min_size=1, max_size=12),
    limit=st.integers(1, 5),
    max_size=st.sampled_from([0, 512, 1000, native.FAST_MAX_SIZE]),
)
def test_tar_scan_matches_tarfile(fmt: int, members: list, limit: int, max_size: int) -> None:
    assert SP is not None
    kinds = {
        "reg": tarfile.REGTYPE, "areg": tarfile.AREGTYPE, "cont": tarfile.CONTTYPE,
        "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }  # fmt: skip
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for i, (kind, name, size, mode, uid, gid, mtime, extra) in enumerate(members):
            ti = tarfile.TarInfo(name)
            ti.type = kinds[kind]
            ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, mtime
            ti.pax_headers = dict(extra)
            payload = None
            if kind in ("reg", "areg", "cont"):
                payload = _data(i, size)
                ti.size = size
            elif kind in ("sym", "lnk"):
                ti.linkname = "target"
            try:
                t.addfile(ti, io.BytesIO(payload) if payload is not None else None)
            except ValueError:  # does not fit this format: left out
                continue
    raw = out.getvalue()
    walk_tar_scan(raw, fmt, limit, max_size)


def walk_tar_scan(raw: bytes, fmt: int, limit: int, max_size: int) -> list[tarfile.TarInfo]:
    """tar_scan over a whole tarfile-readable stream, skipping each member it stops at; every
    member it returns must equal tarfile's, every stop must be at a member it may refuse.
    Returns the members it took."""
    assert SP is not None
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        tis = t.getmembers()
        datas = [t.extractfile(ti).read() if ti.isreg() else None for ti in tis]  # type: ignore[union-attr]
        end_of_members = t.offset
    taken = []
    pos, idx = 0, 0
    while True:
        got, pos2, status, need = SP.tar_scan(raw, pos, len(raw), limit, max_size)
        assert len(got) <= limit
        for name, mode, uid, gid, at, mt, off, size in got:
            ti = tis[idx]
            assert _fast_ok(ti, fmt, max_size), ti.get_info()
            assert name == ti.name.encode("utf-8", "surrogateescape")
            assert (mode, uid, gid, size) == (ti.mode, ti.uid, ti.gid, ti.size)
            pax = ti.pax_headers
            assert mt == (_pax_ns(pax["mtime"]) if "mtime" in pax else int(ti.mtime) * NS)
            assert at == (_pax_ns(pax["atime"]) if "atime" in pax else -1)
            assert off == ti.offset_data
            assert raw[off : off + size] == datas[idx]
            taken.append(ti)
            idx += 1
        pos = pos2
        if status == native.LIMIT:
            assert len(got) == limit
            continue
        if status == native.END:
            assert idx == len(tis) and pos == end_of_members
            return taken
        assert status == native.STOP, (status, need)
        ti = tis[idx]
        assert ti.offset == pos
        assert not _fast_ok(ti, fmt, max_size), ti.get_info()
        idx += 1
        pos = tis[idx].offset if idx < len(tis) else end_of_members


def _pad(n: int) -> int:
    return n + (-n % BLOCK)


def check_tar_scan(buf: bytes, start: int, end: int, limit: int, max_size: int) -> list:
    """The invariants of any tar_scan result; returns the members."""
    assert SP is not None
    members, pos, status, need = SP.tar_scan(buf, start, end, limit, max_size)
    assert status in (native.STOP, native.NEED, native.LIMIT, native.END)
    assert start <= pos <= end
    assert len(members) <= max(limit, 0)
    if status == native.LIMIT:
        assert len(members) == max(limit, 0)
    cur = start
    for name, mode, uid, gid, at, mt, off, size in members:
        assert isinstance(name, bytes) and name and not name.endswith(b"/")
        assert 0 <= mode <= 0o7777 and 0 <= uid <= 0xFFFFFFFF and 0 <= gid <= 0xFFFFFFFF
        assert at >= -1 and mt >= 0
        assert off >= cur + BLOCK and (off - cur) % BLOCK == 0
        assert 0 <= size <= max_size
        assert off + _pad(size) <= end
        cur = off + _pad(size)
    assert pos == cur
    if status == native.NEED:
        assert need > 0 and pos + need > end
    return members


def check_dump_scan(buf: bytes, start: int, end: int, limit: int) -> list:
    """The invariants of any dump_scan result, and each inode against the Python parser."""
    assert SP is not None
    inodes, pos, status, need = SP.dump_scan(buf, start, end, limit)
    assert status in (native.STOP, native.NEED, native.LIMIT, native.END)
    assert start <= pos <= end
    assert len(inodes) <= max(limit, 0)
    if status == native.LIMIT:
        assert len(inodes) == max(limit, 0)
    cur = start
    bs = dfmt.TP_BSIZE
    for ino, mode, uid, gid, at, mt, off, size, hoff in inodes:
        assert hoff == cur and off == hoff + bs
        cnt = -(-size // bs)
        assert off + cnt * bs + bs <= end  # data, and the next header, inside the buffer
        rec = buf[hoff : hoff + bs]
        assert dfmt.classify(rec) == "ok"
        h = dfmt.parse_header(rec)
        assert h.ctype == dfmt.TS_INODE and not h.flags & dfmt.DR_EXTATTRIBUTES
        assert stat.S_ISREG(mode) and h.count == cnt and 0 not in h.addr
        assert (ino, mode, uid, gid, size) == (h.inumber, h.mode, h.uid, h.gid, h.size)
        assert mt == h.mtime * NS + min(h.mtime_us, 999_999) * 1000
        assert at == h.atime * NS + min(h.atime_us, 999_999) * 1000
        cur = off + cnt * bs
    assert pos == cur
    if status == native.NEED:
        assert need > 0 and pos + need > end
    return inodes


@needs_speedups
def test_scans_reject_bad_ranges() -> None:
    assert SP is not None
    for args in ((5, 4), (-1, 10), (0, 1025)):
        with pytest.raises(ValueError):
            SP.tar_scan(bytes(1024), *args, 10, 1 << 20)
        with pytest.raises(ValueError):
            SP.dump_scan(bytes(1024), *args, 10)


def _tar_fix_checksum(b: bytearray, lo: int) -> None:
    blk = b[lo : lo + BLOCK]
    if len(blk) < BLOCK:
        return
    s = sum(blk[:148]) + 8 * 32 + sum(blk[156:])
    b[lo + 148 : lo + 156] = b"%06o\0 " % s


def _dump_fix_checksum(b: bytearray, lo: int) -> None:
    bs = dfmt.TP_BSIZE
    if lo + bs > len(b):
        return
    b[lo + 28 : lo + 32] = bytes(4)
    s = dfmt.header_sum(bytes(b[lo : lo + bs]))
    b[lo + 28 : lo + 32] = ((dfmt.CHECKSUM - s) & 0xFFFFFFFF).to_bytes(4, "little")


@pytest.fixture(scope="module")
def small_streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Valid streams of a tiny tree, by both engines' Python paths, for corruption tests."""
    root = tmp_path_factory.mktemp("tiny") / "src"
    os.makedirs(root / "d")
    for i, size in enumerate((*SIZES, 3000, 70_000)):
        (root / ("d" if i % 2 else ".") / f"f{i}").write_bytes(_data(i, size))
    (root / "sym").symlink_to("f0")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "speedups", None)
        for engine in ("tar", "dump"):
            out[engine] = run_backup(engine, root, history=False, batch=None).stream
    return out


_bounds = st.tuples(st.integers(0, 1 << 20), st.integers(0, 1 << 20), st.integers(0, 1 << 20))


def _range(n: int, b: tuple[int, int, int]) -> tuple[int, int, int]:
    """start <= cut <= end <= n from three arbitrary numbers."""
    a, c, e = sorted(x % (n + 1) for x in b)
    return a, c, e


@needs_speedups
@_SETTINGS
@given(
    data=st.binary(max_size=4096),
    bounds=_bounds,
    limit=st.integers(-1, 8),
    max_size=st.sampled_from([0, 100, 1 << 20, 1 << 40]),
)
def test_scans_on_arbitrary_bytes(data: bytes, bounds, limit: int, max_size: int) -> None:
    start, cut, end = _range(len(data), bounds)
    full = check_tar_scan(data, start, end, limit, max_size)
    part = check_tar_scan(bytearray(data), start, cut, limit, max_size)
    assert part == full[: len(part)]
    full = check_dump_scan(data, start, end, limit)
    part = check_dump_scan(data, start, cut, limit)
    assert part == full[: len(part)]


# corrupted streams: bytes changed (checksum fixed or not), scanned over a range
_CORRUPTIONS = dict(
    changes=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), max_size=8),
    fix=st.booleans(),
    bounds=_bounds,
    limit=st.sampled_from([1, 3, native.SCAN_BATCH]),
)


@needs_speedups
@_SETTINGS
@given(**_CORRUPTIONS)
def test_tar_scan_on_corrupted_streams(small_streams, changes, fix, bounds, limit) -> None:
    b = bytearray(small_streams["tar"])
    used = len(b) - 4096  # the end: mostly zero blocks
    for where, value in changes:
        off = where % used
        b[off] = value
        if fix:
            _tar_fix_checksum(b, off - off % BLOCK)
    start, cut, end = _range(len(b), bounds)
    if fix:
        start -= start % BLOCK  # at a block: where headers are
    full = check_tar_scan(bytes(b), start, end, limit, native.FAST_MAX_SIZE)
    part = check_tar_scan(bytes(b), start, cut, limit, native.FAST_MAX_SIZE)
    assert part == full[: len(part)]


@needs_speedups
@_SETTINGS
@given(**_CORRUPTIONS)
def test_dump_scan_on_corrupted_streams(small_streams, changes, fix, bounds, limit) -> None:
    b = bytearray(small_streams["dump"])
    bs = dfmt.TP_BSIZE
    heads = _dump_file_headers(bytes(b))
    for where, value in changes:
        # mostly inside the headers of regular files, where the scan looks
        off = heads[where % len(heads)] + (where >> 8) % bs if where & 1 else where % len(b)
        b[off] = value
        if fix:
            _dump_fix_checksum(b, off - off % bs)
    start, cut, end = _range(len(b), bounds)
    if changes and changes[0][0] & 2:
        start = heads[changes[0][0] % len(heads)]  # from a file header
        cut, end = max(cut, start), max(end, start)
    full = check_dump_scan(bytes(b), start, end, limit)
    part = check_dump_scan(bytes(b), start, cut, limit)
    assert part == full[: len(part)]


def _ref_tar_member(buf: bytes, pos: int) -> tuple:
    """What the Python reader makes of the member at ``pos`` (its own parsing functions),
    in tar_scan's member layout."""
    blk = buf[pos : pos + BLOCK]
    x: dict[bytes, bytes] = {}
    if blk[156:157] == b"x":
        n = tfmt.parse_number(blk[124:136])
        x = dict(tfmt.parse_records(buf[pos + BLOCK : pos + BLOCK + n]))
        pos += BLOCK + _pad(n)
        blk = buf[pos : pos + BLOCK]
    if b"path" in x:
        name = x[b"path"]
    else:
        name, prefix = tfmt.cstr(blk[0:100]), tfmt.cstr(blk[345:500])
        if blk[257:263] == b"ustar\0" and prefix:
            name = prefix + b"/" + name
    num = tfmt.parse_number
    return (
        name,
        num(blk[100:108]) & 0o7777,
        tfmt.parse_decimal(x[b"uid"], "uid") if b"uid" in x else num(blk[108:116]),
        tfmt.parse_decimal(x[b"gid"], "gid") if b"gid" in x else num(blk[116:124]),
        tfmt.parse_time(x[b"atime"]) if b"atime" in x else -1,
        tfmt.parse_time(x[b"mtime"]) if b"mtime" in x else num(blk[136:148]) * NS,
        pos + BLOCK,
        tfmt.parse_decimal(x[b"size"], "size") if b"size" in x else num(blk[124:136]),
    )


def _octal(width: int) -> st.SearchStrategy[bytes]:
    top = 8 ** (width - 1) - 1
    return st.one_of(
        st.integers(0, top).map(lambda v: b"%0*o\0" % (width - 1, v)),
        st.integers(0, top).map(lambda v: (b"%o" % v).rjust(width - 1) + b" "),
        st.binary(min_size=width, max_size=width),
        st.just(b"\x80" + bytes(width - 2) + b"\x05"),  # base-256
        st.just(b" " * width),
    )


_pax_value = st.one_of(
    st.sampled_from([b"0", b"12", b"007", b"1.5", b"1.123456789", b"1.1234567891", b"1.", b".5",
                     b"-1", b"", b"9000000000", b"9000000001", b"4294967296", b"9" * 19,
                     b"a/b", b"a/", b"x\0y", b"\xc3\xa9"]),
    st.binary(max_size=12),
)  # fmt: skip
_pax_key = st.sampled_from(
    [b"path", b"mtime", b"atime", b"ctime", b"uid", b"gid", b"size", b"uname", b"gname",
     b"linkpath", b"comment", b"GNU.sparse.major", b""]
)  # fmt: skip


@st.composite
def tar_like(draw: st.DrawFn) -> bytes:
    """Members that pass the checksum, with odd fields and x headers, for tar_scan."""
    out = bytearray()

    def header(fields: dict[int, bytes], typeflag: bytes) -> bytearray:
        h = bytearray(BLOCK)
        for off, v in fields.items():
            h[off : off + len(v)] = v
        h[156:157] = typeflag
        h[257:265] = draw(st.sampled_from([b"ustar\x0000", b"ustar  \0", bytes(8)]))
        _tar_fix_checksum(h, 0)
        return h

    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            recs = b"".join(tfmt.record(k, v) for k, v in draw(st.lists(
                st.tuples(_pax_key, _pax_value), max_size=4)))  # fmt: skip
            if recs and draw(st.integers(0, 3)) == 0:
                i = draw(st.integers(0, len(recs) - 1))
                recs = recs[:i] + bytes([draw(st.integers(0, 255))]) + recs[i + 1 :]
            xs = draw(st.one_of(st.just(len(recs)), st.integers(0, 70_000)))
            out += header({0: b"./PaxHeaders/x", 100: b"0000644\0", 124: b"%011o\0" % xs},
                          b"x")  # fmt: skip
            out += recs + bytes(-len(recs) % BLOCK)
        size = draw(st.integers(0, 2000))
        fields = {
            0: draw(st.binary(max_size=100)),
            100: draw(_octal(8)),
            108: draw(_octal(8)),
            116: draw(_octal(8)),
            124: draw(st.one_of(st.just(b"%011o\0" % size), _octal(12))),
            136: draw(_octal(12)),
            345: draw(st.binary(max_size=155)),
        }
        out += header(fields, draw(st.sampled_from([b"0", b"\0", b"5", b"1", b"x", b"g", b"L"])))
        out += _data(size, draw(st.integers(0, _pad(size))))
    out += bytes(draw(st.sampled_from([0, BLOCK, 2 * BLOCK])))
    return bytes(out)


@needs_speedups
@_SETTINGS
@given(data=tar_like(), cut=st.integers(0, 1 << 20), limit=st.integers(1, 6))
def test_tar_scan_on_plausible_headers(data: bytes, cut: int, limit: int) -> None:
    """Checksummed headers with odd fields: any member the scan takes is what the Python
    reader's parsing makes of it."""
    full = check_tar_scan(data, 0, len(data), limit, native.FAST_MAX_SIZE)
    part = check_tar_scan(data, 0, cut % (len(data) + 1), limit, native.FAST_MAX_SIZE)
    assert part == full[: len(part)]
    pos = 0
    for m in full:
        assert m == _ref_tar_member(data, pos)
        pos = m[6] + _pad(m[7])


@st.composite
def dump_like(draw: st.DrawFn) -> bytes:
    """Records that pass the dump checksum, with odd fields, for dump_scan."""
    out = bytearray()
    u32 = st.integers(0, 0xFFFFFFFF)
    for _ in range(draw(st.integers(1, 5))):
        rec = bytearray(dfmt.TP_BSIZE)
        ctype = draw(st.sampled_from([dfmt.TS_INODE, dfmt.TS_INODE, dfmt.TS_ADDR, dfmt.TS_END]))
        rec[0:4] = ctype.to_bytes(4, "little")
        rec[20:24] = draw(st.sampled_from([7, 8, 0xFFFFFFFF])).to_bytes(4, "little")
        rec[24:28] = dfmt.NFS_MAGIC.to_bytes(4, "little")
        mode = draw(st.sampled_from([0o100644, 0o104755, 0o40755, 0o120777, 0o10644, 0]))
        rec[32:34] = mode.to_bytes(2, "little")
        size = draw(st.one_of(st.integers(0, 5000), st.integers(0, 2**64 - 1)))
        rec[40:48] = size.to_bytes(8, "little")
        for off in (48, 52, 56, 60, 144, 148):  # times, microseconds, uid, gid
            rec[off : off + 4] = draw(u32).to_bytes(4, "little")
        count = draw(st.one_of(st.just(-(-size // 1024) % 2**32), st.integers(0, 600),
                               st.just(0xFFFFFFFF)))  # fmt: skip
        rec[160:164] = count.to_bytes(4, "little")
        present = min(count, dfmt.TP_NINDIR)
        rec[164 : 164 + present] = b"\x01" * present
        if present and draw(st.integers(0, 4)) == 0:
            rec[164 + draw(st.integers(0, present - 1))] = 0  # a hole
        flags = draw(st.sampled_from([2, 3, 2 | dfmt.DR_EXTATTRIBUTES]))
        rec[888:892] = flags.to_bytes(4, "little")
        _dump_fix_checksum(rec, 0)
        out += rec
        out += bytes(dfmt.TP_BSIZE * draw(st.integers(0, min(present, 6))))
    return bytes(out)


@needs_speedups
@_SETTINGS
@given(data=dump_like(), cut=st.integers(0, 1 << 20), limit=st.integers(1, 6))
def test_dump_scan_on_plausible_headers(data: bytes, cut: int, limit: int) -> None:
    full = check_dump_scan(data, 0, len(data), limit)
    part = check_dump_scan(data, 0, cut % (len(data) + 1), limit)
    assert part == full[: len(part)]


@needs_speedups
def test_scans_find_the_plain_files_of_valid_streams(small_streams) -> None:
    assert SP is not None
    # tar: every plain file (the directories and the symlink stop the scan)
    taken = walk_tar_scan(small_streams["tar"], tarfile.PAX_FORMAT, native.SCAN_BATCH, 1 << 20)
    assert sorted(ti.name for ti in taken) == sorted(
        [f"./f{i}" for i in range(0, 9, 2)] + [f"./d/f{i}" for i in range(1, 9, 2)]
    )
    # dump: every regular file's inode, skipping (as the Python reader would) what it stops at
    data = small_streams["dump"]
    heads = _dump_file_headers(data, 1 << 30)
    assert len(heads) == 9
    pos, found = min(heads), []
    while True:
        got = check_dump_scan(data, pos, len(data), 4)
        if got:
            found += [g[8] for g in got]
            pos = got[-1][6] + -(-got[-1][7] // 1024) * 1024
            continue
        h = dfmt.parse_header(data[pos : pos + 1024])
        if h.ctype == dfmt.TS_END:
            break
        assert pos not in heads  # a plain file refused
        pos += 1024 + 1024 * (len(h.addr) - h.addr.count(0))
    assert found == heads


# write_files


def _wf(dirfd: int, name: bytes, off: int, size: int, mode: int = 0o644, uid: int = 0,
        gid: int = 0, at: int = -1, mt: int = T0 + 123_456_789) -> tuple:  # fmt: skip
    return (dirfd, name, off, size, mode, uid, gid, at, mt)


WF_PREFIX = b".ndmpd-tmp.test."


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


@pytest.fixture
def dirfd(tmp_path: Path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fds = len(os.listdir("/proc/self/fd"))
    yield fd
    assert len(os.listdir("/proc/self/fd")) == fds
    os.close(fd)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".ndmpd-tmp")]


@needs_speedups
@pytest.mark.parametrize("named", [0, native.NAMED_TEMP], ids=["tmpfile", "named"])
def test_write_files_creates_files(named: int, tmp_path: Path, dirfd: int) -> None:
    assert SP is not None
    buf = _data(7, 70_000)
    specs = [
        (b"a", 0, 0, 0o644, -1, T0 + 1),
        (b"b", 10, 511, 0o600, FUTURE + 5, T0 + 999_999_999),
        (b"c", 600, 4096, 0o4755, T0 - 7, T0 + 2),
        (b"d", 5000, 65000, 0o2750, -1, 0),
        (b"e e\xff", 1, 1, 0o1777, 12_345, 67_890),
        (b"f", 3, 3, 0o000, -1, 5 * NS),
    ]
    owner = (1234, 5678) if IS_ROOT else (os.geteuid(), os.getegid())
    files = [_wf(dirfd, n, o, s, m, *owner, at, mt) for n, o, s, m, at, mt in specs]
    done, err, was_named = SP.write_files(buf, files, native.CHOWN * IS_ROOT | named,
                                          WF_PREFIX, _umask())  # fmt: skip
    assert (done, err) == (len(files), 0)
    if named:
        assert was_named
    for n, o, s, m, at, mt in specs:
        p = os.fsencode(tmp_path) + b"/" + n
        st_ = os.lstat(p)
        assert stat.S_ISREG(st_.st_mode) and stat.S_IMODE(st_.st_mode) == m, (n, oct(st_.st_mode))
        assert (st_.st_uid, st_.st_gid) == owner
        assert st_.st_mtime_ns == mt and st_.st_atime_ns == (mt if at < 0 else at)
        assert st_.st_nlink == 1
        with open(p, "rb") as f:
            assert f.read() == buf[o : o + s]
    assert sorted(os.listdir(os.fsencode(tmp_path))) == sorted(s[0] for s in specs)


@needs_speedups
@pytest.mark.parametrize("named", [0, native.NAMED_TEMP], ids=["tmpfile", "named"])
def test_write_files_overwrite_flag(named: int, tmp_path: Path, dirfd: int) -> None:
    assert SP is not None
    buf = b"0123456789" * 100
    (tmp_path / "b").write_bytes(b"old b")
    os.utime(tmp_path / "b", ns=(PRE_MTIME, PRE_MTIME))
    (tmp_path / "target").write_bytes(b"symlink target")
    (tmp_path / "c").symlink_to("target")
    (tmp_path / "h1").write_bytes(b"old hard link")
    os.link(tmp_path / "h1", tmp_path / "h2")
    files = [_wf(dirfd, b"a", 0, 10), _wf(dirfd, b"b", 10, 20), _wf(dirfd, b"z", 30, 5)]
    # overwrite off: stops at b with EEXIST, b untouched, nothing after it created
    done, err, _ = SP.write_files(buf, files, named, WF_PREFIX, _umask())
    assert (done, err) == (1, errno.EEXIST)
    assert (tmp_path / "a").read_bytes() == buf[:10]
    assert (tmp_path / "b").read_bytes() == b"old b"
    assert os.lstat(tmp_path / "b").st_mtime_ns == PRE_MTIME
    assert not (tmp_path / "z").exists()
    for name in (b"c", b"h2"):  # a symlink or a hard link in the way is kept too
        done, err, _ = SP.write_files(buf, [_wf(dirfd, name, 0, 7)], named, WF_PREFIX, _umask())
        assert (done, err) == (0, errno.EEXIST)
    assert os.readlink(tmp_path / "c") == "target"
    assert (tmp_path / "h2").read_bytes() == b"old hard link"
    # overwrite on: replaced (a symlink is replaced, not followed; a hard link is unlinked)
    files = [_wf(dirfd, b"b", 10, 20), _wf(dirfd, b"c", 40, 6), _wf(dirfd, b"h2", 50, 9)]
    done, err, _ = SP.write_files(buf, files, named | native.OVERWRITE, WF_PREFIX, _umask())
    assert (done, err) == (3, 0)
    assert (tmp_path / "b").read_bytes() == buf[10:30]
    assert os.lstat(tmp_path / "b").st_mtime_ns == T0 + 123_456_789
    assert stat.S_ISREG(os.lstat(tmp_path / "c").st_mode)
    assert (tmp_path / "c").read_bytes() == buf[40:46]
    assert (tmp_path / "target").read_bytes() == b"symlink target"
    assert (tmp_path / "h2").read_bytes() == buf[50:59]
    assert (tmp_path / "h1").read_bytes() == b"old hard link"
    assert os.lstat(tmp_path / "h1").st_nlink == 1


@needs_speedups
@pytest.mark.parametrize("named", [0, native.NAMED_TEMP], ids=["tmpfile", "named"])
def test_write_files_directory_in_the_way(named: int, tmp_path: Path, dirfd: int) -> None:
    assert SP is not None
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "inner").write_bytes(b"keep")
    for flags in (named, named | native.OVERWRITE):
        done, err, _ = SP.write_files(b"data", [_wf(dirfd, b"full", 0, 4)], flags, WF_PREFIX,
                                      _umask())  # fmt: skip
        assert done == 0 and err in (errno.EEXIST, errno.EISDIR, errno.ENOTEMPTY)
        assert (tmp_path / "full" / "inner").read_bytes() == b"keep"


@needs_speedups
def test_write_files_bad_dirfd(tmp_path: Path, dirfd: int) -> None:
    assert SP is not None
    r = 999_999  # far above any descriptor open here
    f = os.open(tmp_path / "plain", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        for named in (0, native.NAMED_TEMP):
            for bad in (r, f, -1):
                files = [_wf(bad, b"x", 0, 3), _wf(bad, b"y", 0, 3)]
                done, err, _ = SP.write_files(b"abc", files, named, WF_PREFIX, _umask())
                assert done < 2 and done == 0 and err != 0
                # a good one first: it is created, the bad one stops the batch
                files = [_wf(dirfd, b"good%d" % named, 0, 3), _wf(bad, b"x", 0, 3),
                         _wf(dirfd, b"after", 0, 3)]  # fmt: skip
                done, err, _ = SP.write_files(b"abc", files, named, WF_PREFIX, _umask())
                assert (done, err != 0) == (1, True)
                os.unlink(tmp_path / f"good{named}")
    finally:
        os.close(f)
    assert sorted(os.listdir(tmp_path)) == ["plain"]


@needs_speedups
def test_write_files_rejects_bad_arguments(tmp_path: Path, dirfd: int) -> None:
    assert SP is not None
    for spec in (_wf(dirfd, b"a", 2, 5), _wf(dirfd, b"a", -1, 1), _wf(dirfd, b"a", 0, -1),
                 _wf(dirfd, b"a", 0, 1, mt=-1)):  # fmt: skip
        with pytest.raises(ValueError):
            SP.write_files(b"abcd", [spec], 0, WF_PREFIX, _umask())
    with pytest.raises(TypeError):
        SP.write_files(b"abcd", [(dirfd, "str name", 0, 1, 0o644, 0, 0, -1, 0)], 0, WF_PREFIX, 0)
    assert SP.write_files(b"", [], 0, WF_PREFIX, _umask())[:2] == (0, 0)
    assert os.listdir(tmp_path) == []


@needs_speedups
def test_pack_files_reject_bad_positions(tmp_path: Path, dirfd: int) -> None:
    """A negative index or an output position outside the buffer is a ValueError, not a
    write outside the buffer."""
    assert SP is not None
    (tmp_path / "f").write_bytes(b"x")
    buf = bytearray(1 << 16)
    for index, pos in ((-1, 0), (0, -1), (0, len(buf) + 1)):
        with pytest.raises(ValueError):
            SP.tar_pack_files(dirfd, [b"f"], index, b"", b"", buf, pos, 1 << 15, {}, {}, False)
        with pytest.raises(ValueError):
            SP.dump_pack_files(
                dirfd, [(1, b"f")], index, buf, pos, 1 << 15, 0, bytes(1024), os.O_RDONLY,
                False, False,
            )  # fmt: skip
    assert buf == bytearray(1 << 16)


# -- 4. the switch -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "0", None])
def test_env_var_turns_speedups_off(value: str | None, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NDMPD_NO_SPEEDUPS"}
    if value is not None:
        env["NDMPD_NO_SPEEDUPS"] = value
    code = "import ndmpd.engines.native as n; print(n.speedups is None)"
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                       text=True, check=True)  # fmt: skip
    built = importlib.util.find_spec("ndmpd._speedups") is not None  # SP may be off by env
    assert r.stdout.strip() == ("True" if value == "1" or not built else "False")
