"""The tar engine against the real GNU tar 1.34, on the awkward tree."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from trees import IS_ROOT, assert_same_tree, build_awkward_tree, tree_paths

from ndmpd.engines.base import Aborted, BackupJob, EngineError, RecoverJob, Selection
from ndmpd.engines.tar import TarEngine
from ndmpd.engines.tar import format as fmt
from ndmpd.protocol.constants import ButypeAttr, LogType, RecoveryStatus

GNU_FLAGS = ["--xattrs", "--xattrs-include=*", "--acls"]
EMITTED = {b"path", b"linkpath", b"uid", b"gid", b"size", b"mtime", b"atime", b"ctime"}


class FileSink:
    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def write(self, data: bytes | memoryview) -> None:
        self.buf.write(data)


class History:
    def __init__(self) -> None:
        self.files: list[tuple[bytes, os.stat_result, int, int]] = []

    def add_file(self, path: bytes, st: os.stat_result, node: int, fh_info: int) -> None:
        self.files.append((path, st, node, fh_info))

    def add_dir(self, name: bytes, node: int, parent: int) -> None:
        raise AssertionError("tar uses FH_ADD_FILE only")

    def add_node(self, st: os.stat_result, node: int, fh_info: int) -> None:
        raise AssertionError("tar uses FH_ADD_FILE only")


class Logs(list):
    def __call__(self, t: LogType, msg: str) -> None:
        self.append((t, msg))


def backup(root: Path, history: History | None = None, **kw: object) -> tuple[bytes, Logs]:
    sink, logs = FileSink(), Logs()
    job = BackupJob(
        root=os.fsencode(root), env={}, sink=sink, history=history, log=logs,
        abort=threading.Event(), **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    TarEngine().backup(job)
    return sink.buf.getvalue(), logs


def recover(data: bytes, dest: Path, **kw: object) -> tuple[object, Logs, list]:
    logs, results = kw.pop("log", Logs()), []
    kw.setdefault("confine", os.fsencode(dest))
    kw.setdefault("destination", os.fsencode(dest))
    kw.setdefault("selections", [])
    job = RecoverJob(
        source=io.BytesIO(data), env={}, log=logs,
        file_result=lambda n, s: results.append((n, s)), abort=threading.Event(), **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return TarEngine().recover(job), logs, results


@pytest.fixture(scope="module")
def stream(awkward_tree: Path) -> bytes:
    data, logs = backup(awkward_tree)
    assert not logs
    return data


def members(data: bytes) -> list[tuple[int, bytes, list[tuple[bytes, bytes]]]]:
    """(offset, typeflag, x records) of every member, by walking the headers."""
    out, pos, recs = [], 0, []
    while data[pos : pos + 512] != bytes(512):
        h = data[pos : pos + 512]
        assert fmt.checksum_ok(h)
        size = fmt.parse_number(h[124:136])
        if h[156:157] == b"x":
            recs = fmt.parse_records(data[pos + 512 : pos + 512 + size])
            out.append((pos, b"x", recs))
        else:
            out.append((pos, h[156:157], recs))
            if h[156:157] in (b"1", b"2", b"3", b"4", b"5", b"6"):
                size = 0
        pos += 512 + size + (-size % 512)
    return out


def test_engine_attributes() -> None:
    e = TarEngine()
    assert e.name == "tar"
    assert e.attrs & ButypeAttr.BACKUP_FH_FILE and e.attrs & ButypeAttr.RECOVER_FILEHIST
    assert not e.attrs & (ButypeAttr.BACKUP_FH_DIR | ButypeAttr.RECOVER_DIRECT)
    assert e.default_env["HIST"] == "n"


def test_gnu_tar_lists_extracts_and_compares(stream: bytes, awkward_tree: Path, tmp_path: Path):
    assert len(stream) % 10240 == 0 and stream[-1024:] == bytes(1024)
    arc = tmp_path / "our.tar"
    arc.write_bytes(stream)
    r = subprocess.run(["tar", "-tvf", arc], capture_output=True)
    assert r.returncode == 0 and r.stderr == b""
    assert len(r.stdout.splitlines()) == len(tree_paths(awkward_tree)) + 1  # + "./"
    x = tmp_path / "x"
    x.mkdir()
    r = subprocess.run(["tar", "-xf", arc, "-C", x, *GNU_FLAGS], capture_output=True)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert_same_tree(awkward_tree, x)
    r = subprocess.run(["tar", "-df", arc, "-C", awkward_tree], capture_output=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_only_gnu_keywords_and_sparse_1_0(stream: bytes) -> None:
    keys = {k for _, t, recs in members(stream) if t == b"x" for k, _ in recs}
    assert b"hdrcharset" not in keys
    for k in keys:
        assert k in EMITTED or k.startswith((b"SCHILY.xattr.", b"SCHILY.acl.", b"GNU.sparse.")), k
    sparse = [
        dict(r) for _, t, r in members(stream) if t == b"x" and b"GNU.sparse.major" in dict(r)
    ]
    names = {s[b"GNU.sparse.name"] for s in sparse}
    assert names == {b"./sparse.bin", b"./tailhole.bin", b"./allhole.bin"}
    assert all(s[b"GNU.sparse.minor"] == b"0" for s in sparse)
    # the map of the all-hole file is just the terminal (realsize, 0) entry
    i = stream.index(b"GNUSparseFile.0/allhole.bin")
    hdr_at = i - i % 512
    assert stream[hdr_at + 512 : hdr_at + 512 + 12] == b"1\n3145728\n0\n"


def test_history_paths_and_offsets(awkward_tree: Path) -> None:
    h = History()
    data, _ = backup(awkward_tree, history=h)
    paths = [p for p, _, _, _ in h.files]
    assert sorted(paths) == sorted([b"/"] + [b"/" + p for p in tree_paths(awkward_tree)])
    for path, st, node, off in h.files:
        assert data[off + 156 : off + 157] == b"x"  # fh_info = the member's first header
        assert node == st.st_ino
        want = os.lstat(os.fsencode(awkward_tree) + (path if path != b"/" else b""))
        assert st.st_mtime_ns == want.st_mtime_ns


def test_our_reader_restores_our_stream(stream: bytes, awkward_tree: Path, tmp_path: Path):
    res, logs, _ = recover(stream, tmp_path)
    assert res.failed == 0 and not [m for t, m in logs if t == LogType.ERROR]  # type: ignore[attr-defined]
    assert res.bytes_read == len(stream)  # type: ignore[attr-defined]
    assert_same_tree(awkward_tree, tmp_path)
    assert not list(tmp_path.rglob(".ndmpd-tmp.*"))


@pytest.mark.parametrize("version", ["1.0", "0.1", "0.0"])
def test_our_reader_on_gnu_pax(version: str, awkward_tree: Path, tmp_path: Path) -> None:
    arc = tmp_path / "gnu.tar"
    subprocess.run(
        ["tar", "--format=pax", "--sparse", f"--sparse-version={version}", *GNU_FLAGS[:1],
         "--acls", "-cf", arc, "-C", awkward_tree, "."], check=True, capture_output=True,
    )  # fmt: skip
    dest = tmp_path / "d"
    dest.mkdir()
    res, _, _ = recover(arc.read_bytes(), dest)
    assert res.failed == 0  # type: ignore[attr-defined]
    assert_same_tree(awkward_tree, dest)


def test_our_reader_on_gnu_format_long_names(awkward_tree: Path, tmp_path: Path) -> None:
    arc = tmp_path / "gnu.tar"
    subprocess.run(["tar", "--format=gnu", "--sparse", "-cf", arc, "-C", awkward_tree, "."],
                   check=True, capture_output=True)  # fmt: skip
    assert b"././@LongLink" in arc.read_bytes()
    dest = tmp_path / "d"
    dest.mkdir()
    res, _, _ = recover(arc.read_bytes(), dest)
    assert res.failed == 0  # type: ignore[attr-defined]
    assert_same_tree(awkward_tree, dest, mtime_precision_ns=10**9, xattrs=False)


def test_excludes_and_files(awkward_tree: Path, tmp_path: Path) -> None:
    data, _ = backup(awkward_tree, excludes=[b"*.bin", b"links"])
    listing = subprocess.run(["tar", "-tf", "-"], input=data, capture_output=True).stdout
    assert b"./hello.txt" in listing and b".bin" not in listing and b"./links/" not in listing
    data, _ = backup(awkward_tree, files=[b"links", b"/hello.txt", b"missing"])
    listing = subprocess.run(["tar", "-tf", "-"], input=data, capture_output=True).stdout
    assert sorted(listing.split()) == sorted(
        [b"./links/", b"./links/first", b"./links/second", b"./links/pair-a", b"./hello.txt"]
    )
    with pytest.raises(EngineError):
        backup(awkward_tree, files=[b"../etc"])


def _sel(orig: bytes, dest: Path) -> Selection:
    return Selection(original=orig, destination=os.fsencode(dest), name="/" + orig.decode())


def test_selective_restore(stream: bytes, awkward_tree: Path, tmp_path: Path) -> None:
    sels = [
        _sel(b"sizes", tmp_path / "s"),
        _sel(b"links/second", tmp_path / "renamed"),  # its data lives under links/first
        _sel(b"hello.txt", tmp_path / "h.txt"),
        _sel(b"nope", tmp_path / "nope"),
    ]
    _res, _, results = recover(stream, tmp_path, selections=sels)
    status = dict(results)
    assert status["/sizes"] == RecoveryStatus.SUCCESSFUL
    assert status["/hello.txt"] == RecoveryStatus.SUCCESSFUL
    assert status["/nope"] == RecoveryStatus.FAILED_NOT_FOUND
    assert status["/links/second"] != RecoveryStatus.SUCCESSFUL  # reported, not silently lost
    assert len(results) == 4
    assert_same_tree(awkward_tree / "sizes", tmp_path / "s")
    assert (tmp_path / "h.txt").read_bytes() == b"hello world\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.txt", "s"]


def test_selective_restore_hard_link_targets(stream: bytes, tmp_path: Path) -> None:
    # a directory's files come before its subdirectories, so the data of both link groups
    # is under the names in the root
    sels = [
        _sel(b"links", tmp_path / "l"),
        _sel(b"hardlink in root", tmp_path / "h"),
        _sel(b"emptydir-sibling-link", tmp_path / "e"),
    ]
    _, _, results = recover(stream, tmp_path, selections=sels)
    assert {s for _, s in results} == {RecoveryStatus.SUCCESSFUL}
    assert (tmp_path / "l/first").stat().st_ino == (tmp_path / "l/second").stat().st_ino
    assert (tmp_path / "l/first").stat().st_nlink == 3
    assert (tmp_path / "l/pair-a").read_bytes() == b"another group\n"
    # without the targets, the links are reported, not silently restored empty
    other = tmp_path / "o"
    other.mkdir()
    _, logs, results = recover(stream, other, selections=[_sel(b"links", other / "l")])
    assert results == [("/links", RecoveryStatus.FAILED_IO_ERROR)]
    assert sum("not selected" in m for _, m in logs) == 3
    assert not (other / "l/first").exists()


def test_recover_filehist_writes_nothing(stream: bytes, awkward_tree: Path, tmp_path: Path):
    h = History()
    res, _, _ = recover(stream, tmp_path, history=h)
    assert list(tmp_path.iterdir()) == []
    assert sorted(p for p, *_ in h.files) == sorted(
        [b"/"] + [b"/" + p for p in tree_paths(awkward_tree)]
    )
    offsets = {p: off for p, _, _, off in h.files}
    h2 = History()
    backup(awkward_tree, history=h2)
    assert offsets == {p: off for p, _, _, off in h2.files}
    st = next(s for p, s, _, _ in h.files if p == b"/sparse.bin")
    assert st.st_size == os.stat(awkward_tree / "sparse.bin").st_size
    assert res.entries == len(h.files)  # type: ignore[attr-defined]


def test_overwrite_off_keeps_existing(stream: bytes, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"mine")
    res, logs, _ = recover(stream, tmp_path, overwrite=False)
    assert (tmp_path / "hello.txt").read_bytes() == b"mine"
    assert (tmp_path / "with space.txt").read_bytes() == b"spaces\n"
    assert res.failed == 1 and any("hello.txt" in m for _, m in logs)  # type: ignore[attr-defined]


def _evil_archive(entries: list[tarfile.TarInfo], datas: list[bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti, d in zip(entries, datas, strict=True):
            ti.size = len(d) if ti.isreg() else 0
            t.addfile(ti, io.BytesIO(d) if ti.isreg() else None)
    return buf.getvalue()


def test_hostile_names_stay_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    link = tarfile.TarInfo("d")
    link.type, link.linkname = tarfile.SYMTYPE, str(outside)
    hl = tarfile.TarInfo("hl")
    hl.type, hl.linkname = tarfile.LNKTYPE, "../../etc/passwd"
    entries = [tarfile.TarInfo(n) for n in ("../up", "/abs", "a/../../x")]
    entries += [link, tarfile.TarInfo("d/evil"), hl, tarfile.TarInfo("ok")]
    data = _evil_archive(entries, [b"x"] * len(entries))
    res, _logs, _ = recover(data, root)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "root"]
    assert (root / "abs").read_bytes() == b"x"  # leading '/' stripped, as GNU tar does
    assert (root / "ok").read_bytes() == b"x"
    assert res.failed == 4  # type: ignore[attr-defined]


def test_truncated_stream_keeps_earlier_files(awkward_tree: Path, tmp_path: Path) -> None:
    h = History()
    stream, _ = backup(awkward_tree, history=h)
    off = next(o for p, _, _, o in h.files if p == b"/sizes/medium.bin")
    logs = Logs()
    with pytest.raises(EngineError, match="truncated"):
        recover(stream[: off + 5000], tmp_path, log=logs)
    assert (tmp_path / "hello.txt").read_bytes() == b"hello world\n"  # root files come first
    assert (tmp_path / "sparse.bin").stat().st_size == 64 * 1024 * 1024
    assert not (tmp_path / "sizes/medium.bin").exists()
    assert not list(tmp_path.rglob(".ndmpd-tmp.*"))


def test_abort_backup_and_recover(stream: bytes, awkward_tree: Path, tmp_path: Path) -> None:
    ev = threading.Event()
    ev.set()
    with pytest.raises(Aborted):
        TarEngine().backup(BackupJob(root=os.fsencode(awkward_tree), env={}, sink=FileSink(),
                                     history=None, log=Logs(), abort=ev))  # fmt: skip

    class SlowSource(io.BytesIO):
        def readinto(self, b):  # type: ignore[override]
            n = super().readinto(memoryview(b)[:4096])
            if self.tell() > 200_000:
                ev.set()
            return n

    results: list = []
    ev.clear()
    job = RecoverJob(source=SlowSource(stream), env={}, confine=os.fsencode(tmp_path),
                     destination=os.fsencode(tmp_path), selections=[_sel(b"", tmp_path)],
                     log=Logs(), file_result=lambda n, s: results.append(s), abort=ev)  # fmt: skip
    with pytest.raises(Aborted):
        TarEngine().recover(job)
    assert results and results[0] != RecoveryStatus.SUCCESSFUL
    assert not list(tmp_path.rglob(".ndmpd-tmp.*"))


def test_large_ids_and_times(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "f"
    f.write_bytes(b"x")
    os.utime(f, ns=(0, 9_000_000_000_000_000_001))
    old = src / "old"
    old.write_bytes(b"")
    os.utime(old, ns=(0, -315_619_199_500_000_000))
    data, _ = backup(src)
    recs = {k: v for _, t, r in members(data) if t == b"x" for k, v in r if k == b"mtime"}
    assert recs  # mtime records present
    assert b"mtime=-315619199.5\n" in data and b"mtime=9000000000.000000001\n" in data
    dest = tmp_path / "d"
    dest.mkdir()
    recover(data, dest)
    assert os.stat(dest / "f").st_mtime_ns == 9_000_000_000_000_000_001
    assert os.stat(dest / "old").st_mtime_ns == -315_619_199_500_000_000


@pytest.mark.skipif(not IS_ROOT, reason="needs root for the socket-free tree owners")
def test_socket_is_skipped_and_logged(tmp_path: Path) -> None:
    src = build_awkward_tree(tmp_path / "src", socket_file=True)
    data, logs = backup(src)
    assert any("socket" in m for _, m in logs)
    assert b"./sock" not in data


def test_small_file_fast_path_matches_general_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-place small-file path writes byte for byte what the general path writes."""
    import time

    from ndmpd.engines import native
    from ndmpd.engines.tar import writer

    monkeypatch.setattr(native, "speedups", None)  # this checks the Python small-file path
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    now = time.time_ns()
    files = {
        "empty": b"",
        "one": b"x",
        "block": b"b" * 512,
        "odd": os.urandom(4097),
        "sub/" + "n" * 95: b"long name",  # "./sub/n...": 101 bytes, a path record
        "sub/caf\u00e9": b"non-ascii name",
        "sub/ns": b"whole-second and odd times",
    }
    for i, (name, data) in enumerate(files.items()):
        p = root / name
        p.write_bytes(data)
        # atime after mtime and ctime: reading does not move it (relatime)
        os.utime(p, ns=(now + 3600 * 10**9 + i, now - 3600 * 10**9 + 123_456_789 * i))
    os.utime(root / "sub/ns", ns=(now + 3600 * 10**9, (now // 10**9 - 7200) * 10**9))
    os.setxattr(root / "one", b"user.k", b"v")  # xattrs: the general path
    os.chmod(root / "odd", 0o4751)
    os.link(root / "block", root / "block.link")  # links: the general path
    for d in (root / "sub", root):  # listing a directory must not move its atime either
        os.utime(d, ns=(now + 3600 * 10**9, now - 3600 * 10**9))

    def run() -> tuple[bytes, list[tuple[bytes, int, int]]]:
        h = History()
        data, logs = backup(root, history=h)
        assert not logs
        return data, [(p, st.st_mtime_ns, off) for p, st, _, off in h.files]

    taken: list[bool] = []
    small_file = writer.TarWriter._small_file

    def counting(self: writer.TarWriter, *a: object) -> bool:
        taken.append(small_file(self, *a))  # type: ignore[arg-type]
        return taken[-1]

    monkeypatch.setattr(writer.TarWriter, "_small_file", counting)
    fast = run()
    assert taken.count(True) == 3  # empty, odd, sub/ns
    monkeypatch.setattr(writer, "SMALL_MAX", -1)
    general = run()
    assert fast == general
    assert len(fast[0]) % 10240 == 0


def test_sink_write_batch_limits_write_sizes(awkward_tree: Path, tmp_path: Path) -> None:
    """A sink declaring ``write_batch`` gets small members in batches of about that size."""
    root = tmp_path / "many"
    root.mkdir()
    for i in range(200):
        (root / f"f{i}").write_bytes(b"z" * 3000)
    backup(root)  # the first read moves atimes (relatime); later ones do not
    whole, _ = backup(root)

    class BatchSink(FileSink):
        write_batch = 8192

        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def write(self, data: bytes | memoryview) -> None:
            self.sizes.append(len(data))
            super().write(data)

    sink = BatchSink()
    job = BackupJob(
        root=os.fsencode(root), env={}, sink=sink, history=None, log=Logs(),
        abort=threading.Event(),
    )  # fmt: skip
    TarEngine().backup(job)
    assert sink.buf.getvalue() == whole
    assert len(sink.sizes) > 20
    assert max(sink.sizes[:-1]) <= 8192 + 3 * 512 + 3072
