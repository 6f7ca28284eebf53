"""Our dump reader: own and real Linux ``dump`` streams, selections, hostile and broken input."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dump_writer import History, backup
from trees import IS_ROOT, assert_same_tree

from ndmpd.engines.base import Aborted, EngineError, RecoverJob, RecoverResult, Selection
from ndmpd.engines.dump import DumpEngine
from ndmpd.engines.dump import format as fmt
from ndmpd.protocol.constants import RecoveryStatus


def recover(data: bytes, dest: Path, *, confine: Path | None = None, selections=(), **kw):
    results: list[tuple[str, RecoveryStatus]] = []
    logs: list[str] = []
    job = RecoverJob(
        source=io.BytesIO(data),
        env={},
        confine=os.fsencode(confine or dest),
        destination=os.fsencode(dest),
        selections=list(selections),
        log=lambda t, m: logs.append(m),
        file_result=lambda n, s: results.append((n, s)),
        abort=kw.pop("abort", threading.Event()),
        **kw,
    )
    res: RecoverResult = DumpEngine().recover(job)
    return res, results, logs


@pytest.fixture(scope="module")
def own_stream(awkward_tree_with_socket: Path) -> bytes:
    return backup(awkward_tree_with_socket)[0]


def test_own_stream_roundtrip(awkward_tree_with_socket, own_stream, tmp_path):
    res, _, _ = recover(own_stream, tmp_path)
    assert res.failed == 0 and res.entries > 40
    assert_same_tree(awkward_tree_with_socket, tmp_path, mtime_precision_ns=1000)
    assert not list(tmp_path.rglob(".ndmpd-tmp*"))


def _real_dump(src: Path, work: Path) -> Path | str:
    """A real ``dump -0`` of an ext4 image of ``src`` (spec §15); a reason string if impossible."""
    if not shutil.which("dump") or not shutil.which("mke2fs"):
        return "dump or mke2fs not installed"
    img, out = work / "fs.img", work / "ref.dump"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-d", str(src),
                    str(img), "200M"], check=True, capture_output=True)  # fmt: skip
    loop = subprocess.run(
        ["losetup", "-f", "--show", "-r", str(img)], capture_output=True, text=True
    )
    if loop.returncode == 0:
        dev = loop.stdout.strip()
        try:
            r = subprocess.run(["dump", "-0", "-f", str(out), dev], capture_output=True)
        finally:
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        if r.returncode == 0:
            return out
    fake = work / "fakeetc"
    shutil.copytree("/etc", fake, symlinks=True, ignore_dangling_symlinks=True)
    (fake / "mtab").unlink(missing_ok=True)
    (fake / "mtab").write_text("")
    (fake / "fstab").write_text("")
    script = f"mount --bind {fake} /etc && dump -0 -f {out} {img}"
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True)
    if r.returncode == 0:
        return out
    return "neither a loop device nor a private mount namespace is available"


@pytest.mark.skipif(not IS_ROOT, reason="dump needs root for the loop device")
def test_real_dump_stream(awkward_tree, tmp_path):
    ref = _real_dump(awkward_tree, tmp_path)
    if isinstance(ref, str):
        pytest.skip(ref)
    dest = tmp_path / "out"
    dest.mkdir()
    res, _, _ = recover(ref.read_bytes(), dest)
    assert res.failed == 0
    # Linux dump keeps whole seconds only; mke2fs gives the image root its own times
    assert_same_tree(awkward_tree, dest, mtime_precision_ns=10**9, root_meta=False,
                     ignore=frozenset({b"lost+found"}))  # fmt: skip


def test_selective_restore(awkward_tree_with_socket, own_stream, tmp_path):
    dest = tmp_path / "d"
    sels = [
        Selection(b"links", os.fsencode(dest / "L"), "/links"),
        Selection(b"hello.txt", os.fsencode(dest / "h.txt"), "/hello.txt"),
        Selection(b"no/such", os.fsencode(dest / "x"), "/no/such"),
    ]
    res, results, _ = recover(own_stream, dest, confine=tmp_path, selections=sels)
    assert dict(results) == {
        "/links": RecoveryStatus.SUCCESSFUL,
        "/hello.txt": RecoveryStatus.SUCCESSFUL,
        "/no/such": RecoveryStatus.FAILED_NOT_FOUND,
    }
    assert sorted(p.name for p in (dest / "L").iterdir()) == ["first", "pair-a", "second"]
    assert (dest / "h.txt").read_bytes() == b"hello world\n"
    assert os.stat(dest / "L/first").st_ino == os.stat(dest / "L/second").st_ino
    assert sorted(p.name for p in dest.iterdir()) == ["L", "h.txt"]
    assert res.failed == 0


def test_history_listing_writes_nothing(awkward_tree_with_socket, own_stream, tmp_path):
    hist_b = History()
    data, _, _ = backup(awkward_tree_with_socket, history=hist_b)
    hist_r = History()
    res, _, _ = recover(data, tmp_path, history=hist_r)
    assert list(tmp_path.iterdir()) == []
    dirs_b = sorted(e[1:] for e in hist_b.events if e[0] == "dir")
    dirs_r = sorted(e[1:] for e in hist_r.events if e[0] == "dir")
    assert dirs_b == dirs_r

    def nodes(h: History) -> dict:
        # a directory's size in the stream is its encoded size, not the file system's
        return {
            e[1]: (e[2], e[3].st_mode, e[3].st_mtime_ns // 1000, e[3].st_uid,
                   None if e[3].st_mode & 0o40000 else e[3].st_size)
            for e in h.events if e[0] == "node"
        }  # fmt: skip

    nodes_b, nodes_r = nodes(hist_b), nodes(hist_r)
    assert nodes_r == nodes_b and res.entries == len(nodes_b)
    ev = hist_r.events
    first_node = next(i for i, e in enumerate(ev) if e[0] == "node")
    assert all(e[0] == "dir" for e in ev[:first_node])


# -- hand-made streams --------------------------------------------------------------------


class Stream:
    """Builds a dump stream record by record (for hostile input the writer never makes)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pk = fmt.HeaderPacker(fmt.Volume(date=1_700_000_000))

    def header(self, ctype, inumber, ino=fmt.ZERO_INODE, count=0, addr=b"", flags=2, ext=0):
        rec = bytearray(1024)
        self.pk.pack_into(rec, 0, ctype=ctype, tapea=len(self.buf) >> 10, inumber=inumber,
                          ino=ino, count=count, addr=addr, flags=flags, ext=ext)  # fmt: skip
        self.buf += rec

    def data(self, b: bytes) -> None:
        self.buf += b + bytes(-len(b) % 1024)

    def start(self, maxino: int) -> None:
        self.header(fmt.TS_TAPE, 0, flags=3)
        m = fmt.map_bytes(maxino)
        for t, n in ((fmt.TS_CLRI, maxino - 1), (fmt.TS_BITS, 2)):
            self.header(t, n, fmt.Inode(size=len(m)), count=len(m) // 1024)
            self.data(bytes(m))

    def directory(self, ino: int, parent: int, entries) -> None:
        enc = fmt.DirEncoder(ino, parent)
        for name, num, dt in entries:
            enc.add(name, num, dt)
        d = enc.finish()
        n = -(-len(d) // 1024)
        self.header(fmt.TS_INODE, ino, fmt.Inode(mode=0o40755, size=len(d), nlink=2), n, b"\1" * n)
        self.data(d)

    def file(self, ino: int, content: bytes, mode: int = 0o100644) -> None:
        n = -(-len(content) // 1024)
        self.header(fmt.TS_INODE, ino, fmt.Inode(mode=mode, size=len(content), nlink=1), n,
                    b"\1" * n)  # fmt: skip
        self.data(content)

    def end(self) -> bytes:
        self.header(fmt.TS_END, 1)
        return bytes(self.buf)


def test_escape_attempts_stay_inside(tmp_path):
    """'..'/'/' names, and a symlink replacing a directory with a file 'beneath' it."""
    s = Stream()
    s.start(10)
    s.directory(2, 2, [(b"../escape", 5, 8), (b"..", 6, 8), (b"link", 3, 4), (b"link", 4, 10),
                       (b"ok", 7, 8)])  # fmt: skip
    s.directory(3, 2, [(b"f", 5, 8)])
    s.file(4, b"../outside", mode=0o120777)
    s.file(5, b"PWNED")
    s.file(6, b"PWNED")
    s.file(7, b"fine")
    data = s.end()
    box = tmp_path / "box"
    dest = box / "dest"
    dest.mkdir(parents=True)
    res, _, logs = recover(data, dest)
    assert (dest / "ok").read_bytes() == b"fine"
    assert os.readlink(dest / "link") == "../outside"
    assert not (box / "outside").exists() and not (tmp_path / "escape").exists()
    found = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"PWNED"]
    assert found == []
    assert res.failed >= 2 and any("symlink" in m for m in logs)


def test_refuses_other_formats(own_stream, tmp_path):
    with pytest.raises(EngineError, match="not a dump stream"):
        recover(b"\0" * 4096, tmp_path)
    with pytest.raises(EngineError, match="shorter than one record"):
        recover(b"", tmp_path)
    s = Stream()
    s.header(fmt.TS_TAPE, 0, flags=3 | fmt.DR_COMPRESSED)
    with pytest.raises(EngineError, match="compressed"):
        recover(s.end(), tmp_path)
    ufs2 = bytearray(own_stream[:1024])
    ufs2[24:28] = fmt.FS_UFS2_MAGIC.to_bytes(4, "little")
    with pytest.raises(EngineError, match="UFS2"):
        recover(bytes(ufs2), tmp_path)


def test_truncated_stream_keeps_what_came_before(tmp_path):
    s = Stream()
    s.start(6)
    s.directory(2, 2, [(b"a", 3, 8), (b"b", 4, 8), (b"c", 5, 8)])
    s.file(3, b"A" * 3000)
    s.file(4, b"B" * 3000)
    s.file(5, b"C" * 3000)
    data = s.end()
    cut = data[: len(data) - 1024 - 2048]  # inside c's data
    with pytest.raises(EngineError, match="truncated"):
        recover(cut, tmp_path)
    assert (tmp_path / "a").read_bytes() == b"A" * 3000
    assert (tmp_path / "b").read_bytes() == b"B" * 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no half 'c', no temp


@pytest.fixture(scope="module")
def small_stream(tmp_path_factory) -> bytes:
    src = tmp_path_factory.mktemp("small")
    (src / "d").mkdir()
    (src / "d/f").write_bytes(os.urandom(3000))
    (src / "g").write_bytes(b"g" * 100)
    os.symlink("d/f", src / "s")
    os.link(src / "g", src / "d/g2")
    os.setxattr(src / "g", "user.k", b"v")
    with open(src / "sparse", "wb") as f:
        f.truncate(700 * 1024)
        f.write(b"x")
    return backup(src)[0]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_truncation_or_bit_flip_never_escapes(small_stream, tmp_path_factory, data):
    buf = bytearray(small_stream)
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
    dest = tmp_path_factory.mktemp("fuzz")
    try:
        recover(bytes(buf), dest)
    except EngineError:
        pass
    assert not list(dest.rglob(".ndmpd-tmp*"))


def test_abort(own_stream, tmp_path):
    ev = threading.Event()
    ev.set()
    with pytest.raises(Aborted):
        recover(own_stream, tmp_path, abort=ev)


def test_255_byte_names_roundtrip(tmp_path):
    """Debian restore mangles them (spec 16.15); our writer and reader must not."""
    src = tmp_path / "src"
    (src / ("D" * 255)).mkdir(parents=True)
    (src / ("D" * 255) / ("F" * 255)).write_bytes(b"x")
    dest = tmp_path / "dest"
    dest.mkdir()
    recover(backup(src)[0], dest)
    assert_same_tree(src, dest, mtime_precision_ns=1000)
