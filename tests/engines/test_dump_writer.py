"""Our dump writer against Debian's ``restore`` 0.4b47 (spec dump-format.md §14, §15)."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pytest
from trees import IS_ROOT, assert_same_tree, tree_paths

from ndmpd.engines.base import Aborted, BackupJob, EnvError
from ndmpd.engines.dump import DumpEngine
from ndmpd.engines.dump import format as fmt
from ndmpd.protocol.constants import ButypeAttr, LogType

RESTORE = shutil.which("restore") or "/usr/sbin/restore"
needs_restore = pytest.mark.skipif(not os.path.exists(RESTORE), reason="Debian restore missing")


class History:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def add_file(self, path, st, node, fh_info):  # pragma: no cover - not used by dump
        raise AssertionError("dump emits DIR/NODE history only")

    def add_dir(self, name, node, parent):
        self.events.append(("dir", name, node, parent))

    def add_node(self, st, node, fh_info):
        self.events.append(("node", node, fh_info, st))


def backup(root, *, history=None, record_size=10240, **kw) -> tuple[bytes, BackupJob, list]:
    logs: list[tuple[LogType, str]] = []
    sink = io.BytesIO()
    job = BackupJob(
        root=os.fsencode(root),
        env=kw.pop("env", {}),
        sink=sink,
        history=history,
        log=lambda t, m: logs.append((t, m)),
        abort=kw.pop("abort", threading.Event()),
        record_size=record_size,
        **kw,
    )
    DumpEngine().backup(job)
    return sink.getvalue(), job, logs


@pytest.fixture(scope="module")
def dumped(
    awkward_tree_with_socket: Path, tmp_path_factory
) -> tuple[Path, Path, History, BackupJob]:
    hist = History()
    data, job, _ = backup(awkward_tree_with_socket, history=hist)
    out = tmp_path_factory.mktemp("dumpout") / "out.dump"
    out.write_bytes(data)
    return awkward_tree_with_socket, out, hist, job


def test_engine_identity():
    e = DumpEngine()
    assert e.name == "dump"
    assert e.attrs & ButypeAttr.BACKUP_FH_DIR and e.attrs & ButypeAttr.RECOVER_FILEHIST
    assert not e.attrs & ButypeAttr.BACKUP_INCREMENTAL
    assert e.default_env["LEVEL"] == "0" and e.default_env["HIST"] == "N"


def test_stream_shape(dumped):
    _src, out, _h, job = dumped
    data = out.read_bytes()
    assert len(data) % 10240 == 0
    recs = [data[i : i + 1024] for i in range(0, len(data), 1024)]
    first = fmt.parse_header(recs[0])
    assert fmt.classify(recs[0]) == "ok" and first.ctype == fmt.TS_TAPE
    assert first.flags == fmt.DR_NEWHEADER | fmt.DR_NEWINODEFMT
    assert recs[0][164:676] == bytes(512)  # no volume table (pitfall 16.4)
    assert fmt.parse_header(recs[1]).ctype == fmt.TS_CLRI
    assert fmt.parse_header(recs[-1]).ctype == fmt.TS_END
    assert job.env_added["DUMP_DATE"] == str(first.date)


@needs_restore
def test_restore_t_lists_every_entry(dumped):
    src, out, _h, _job = dumped
    listing = subprocess.run(
        [RESTORE, "-t", "-f", str(out)], capture_output=True, check=True
    ).stdout
    for rel in tree_paths(src):
        assert b"\t./" + rel + b"\n" in listing, rel


@needs_restore
def test_restore_x_reproduces_tree(dumped, tmp_path):
    src, out, _h, _job = dumped
    with open(out, "rb") as f:
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        cmd = [RESTORE, "-x", "-a", "-f", "-"]
        r = subprocess.run(cmd, stdin=f, cwd=tmp_path, capture_output=True, env=env)
    assert r.returncode == 0, r.stderr
    for leftover in tmp_path.glob("rstdir*"):
        leftover.unlink()
    for leftover in tmp_path.glob("rstmode*"):
        leftover.unlink()
    # restore never sets '.' metadata unasked; µs is the format's time resolution
    assert_same_tree(src, tmp_path, mtime_precision_ns=1000, root_meta=False)


@needs_restore
def test_restore_compare_passes(dumped):
    src, out, _h, _job = dumped
    r = subprocess.run([RESTORE, "-C", "-D", str(src), "-f", str(out)], capture_output=True,
                       stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_history_order_and_offsets(dumped):
    src, out, hist, _job = dumped
    data = out.read_bytes()
    ev = hist.events
    assert ev[0] == ("dir", b".", 2, 2) and ev[1] == ("dir", b"..", 2, 2)
    dirs = [e for e in ev if e[0] == "dir"]
    nodes = [e for e in ev if e[0] == "node"]
    # all DIR entries first (so each node's DIR precedes its NODE), one NODE per node
    assert ev.index(nodes[0]) == len(dirs)
    node_ids = [n[1] for n in nodes]
    assert len(node_ids) == len(set(node_ids))
    assert set(node_ids) == {d[2] for d in dirs}
    # each directory's entries are contiguous and start with "." and ".."
    seen_parents: list[int] = []
    for d in dirs:
        if not seen_parents or seen_parents[-1] != d[3]:
            assert d[3] not in seen_parents
            seen_parents.append(d[3])
    # names are base names; the tree's entries all appear
    names = {d[1] for d in dirs}
    assert all(os.path.basename(p) in names for p in tree_paths(src))
    # fh_info is the offset of that inode's TS_INODE header
    for _, node, off, st in nodes:
        h = fmt.parse_header(data[off : off + 1024])
        assert h.ctype == fmt.TS_INODE and h.inumber == node and h.mode == st.st_mode & 0xFFFF
    # hard links: one node for three names
    first = next(d for d in dirs if d[1] == b"first")[2]
    assert sorted(d[1] for d in dirs if d[2] == first) == [b"first", b"hardlink in root", b"second"]


def test_record_size_padding_and_env_errors(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 5000)
    data, _job, _ = backup(tmp_path, record_size=64 * 1024)
    assert len(data) % (64 * 1024) == 0
    assert fmt.parse_header(data[:1024]).ntrec == 64
    with pytest.raises(EnvError):
        backup(tmp_path, record_size=1000)
    with pytest.raises(EnvError):
        backup(tmp_path, env={"LEVEL": "1"})


def test_excludes_and_files_subset(tmp_path):
    src = tmp_path / "src"
    for p in ("a/keep.txt", "a/skip.o", "b/x/deep.txt", "b/y/other.txt", "c.txt"):
        (src / p).parent.mkdir(parents=True, exist_ok=True)
        (src / p).write_text(p)
    hist = History()
    _data, _job, logs = backup(src, history=hist, excludes=[b"*.o"], files=[b"a", b"/b/x", b"nope"])
    names = {e[1] for e in hist.events if e[0] == "dir"}
    assert {b"a", b"keep.txt", b"b", b"x", b"deep.txt"} <= names
    assert not names & {b"skip.o", b"y", b"other.txt", b"c.txt"}
    assert any("nope" in m for _, m in logs)


def test_oversized_xattrs_warned_and_dropped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f"
    f.write_text("x")
    os.setxattr(f, "user.a", b"A" * 4000)  # ext4: in the xattr block
    os.setxattr(f, "user.b", b"B" * 60)  # ext4: inside the inode; together > 4096
    data, _job, logs = backup(src)
    assert any(t == LogType.WARNING and "user." in m and "4096" in m for t, m in logs)
    eas = [
        fmt.parse_header(data[i : i + 1024])
        for i in range(0, len(data), 1024)
        if fmt.classify(data[i : i + 1024]) == "ok"
        and fmt.parse_header(data[i : i + 1024]).flags & fmt.DR_EXTATTRIBUTES
    ]
    assert len(eas) == 1 and eas[0].size <= 4096 and eas[0].ext == fmt.EXT_XATTR


def test_abort_raises(tmp_path):
    (tmp_path / "f").write_text("x")
    ev = threading.Event()
    ev.set()
    with pytest.raises(Aborted):
        backup(tmp_path, abort=ev)


def test_holes_are_not_in_the_stream(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"D" * 4096)
    data, _job, _ = backup(src)
    assert len(data) < 200 * 1024
    hdrs = [fmt.parse_header(data[i : i + 1024]) for i in range(0, len(data), 1024)
            if fmt.classify(data[i : i + 1024]) == "ok"]  # fmt: skip
    file_hdrs = [h for h in hdrs if h.ctype in (fmt.TS_INODE, fmt.TS_ADDR) and h.mode & 0o100000]
    assert len(file_hdrs) == 16  # one per 512 KiB
    assert sum(len(h.addr) - h.addr.count(0) for h in file_hdrs) == 4


@pytest.mark.skipif(not IS_ROOT, reason="device numbers need root")
def test_large_device_numbers(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "dev", 0o20600, os.makedev(300, 70000))
    data, _job, _ = backup(src)
    hdrs = [fmt.parse_header(data[i : i + 1024]) for i in range(0, len(data), 1024)
            if fmt.classify(data[i : i + 1024]) == "ok"]  # fmt: skip
    dev = [h for h in hdrs if h.ctype == fmt.TS_INODE and h.mode & 0o170000 == 0o020000]
    assert dev[0].db[0] == 0x11112C70 == struct.unpack("<I", struct.pack("<I", 0x11112C70))[0]


def test_small_file_fast_path_matches_general_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-call small-file path writes byte for byte what the general path writes."""
    import time

    from ndmpd.engines import native
    from ndmpd.engines.dump import writer

    monkeypatch.setattr(native, "speedups", None)  # this checks the Python small-file path
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    now = time.time_ns()
    for i, data in enumerate([b"", b"x", b"b" * 1024, os.urandom(5000), os.urandom(512 << 10)]):
        p = root / f"f{i}"
        p.write_bytes(data)
        os.utime(p, ns=(now - 10**9 * i, now - 3600 * 10**9 + 123_456_789 * i))
    (root / "sub" / "big").write_bytes(os.urandom((512 << 10) + 1))  # two headers: general
    os.setxattr(root / "f1", b"user.k", b"v")  # xattrs: general path
    os.chmod(root / "f3", 0o4751)
    os.link(root / "f2", root / "sub" / "f2.link")
    os.symlink("f0", root / "sym")
    os.utime(root / "sym", ns=(now + 3600 * 10**9, now), follow_symlinks=False)
    for d in (root / "sub", root):  # reading a directory or link must not move its atime
        os.utime(d, ns=(now + 3600 * 10**9, now - 3600 * 10**9))
    monkeypatch.setattr(writer.time, "time", lambda: 1_700_000_000.0)
    taken: list[bool] = []
    small = writer.DumpWriter._small_regular

    def counting(self: writer.DumpWriter, *a: object) -> bool:
        taken.append(small(self, *a))  # type: ignore[arg-type]
        return taken[-1]

    def run() -> tuple[bytes, list[tuple]]:
        h = History()
        data, _, logs = backup(root, history=h)
        assert [m for t, m in logs if t != LogType.NORMAL] == []
        return data, [(*e[:3], e[3].st_ino, e[3].st_mtime_ns) if e[0] == "node" else e
                      for e in h.events]  # fmt: skip

    monkeypatch.setattr(writer.DumpWriter, "_small_regular", counting)
    fast = run()
    assert taken.count(True) == 4  # f0, f2 (and its link: one inode), f3, f4 (512 KiB)
    monkeypatch.setattr(writer.DumpWriter, "_small_regular", lambda *a: False)
    general = run()
    assert fast == general


def test_sink_write_batch_limits_write_sizes(tmp_path: Path, monkeypatch) -> None:
    """A sink declaring ``write_batch`` gets small inodes in batches of about that size."""
    from ndmpd.engines.dump import writer

    monkeypatch.setattr(writer.time, "time", lambda: 1_700_000_000.0)
    root = tmp_path / "many"
    root.mkdir()
    for i in range(200):
        (root / f"f{i}").write_bytes(b"z" * 3000)
    whole, _, _ = backup(root)

    class BatchSink(io.BytesIO):
        write_batch = 8192

        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def write(self, data) -> int:  # type: ignore[override]
            self.sizes.append(len(data))
            return super().write(data)

    sink = BatchSink()
    job = BackupJob(
        root=os.fsencode(root), env={}, sink=sink, history=None, log=lambda t, m: None,
        abort=threading.Event(),
    )  # fmt: skip
    DumpEngine().backup(job)
    assert sink.getvalue() == whole
    assert len(sink.sizes) > 20
    assert max(sink.sizes[:-1]) <= 8192 + 1024 + 3072
