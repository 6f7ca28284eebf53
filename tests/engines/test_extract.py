"""The shared safe extractor: confinement, atomic files, overwrite, selections."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ndmpd.engines.base import EngineError, Selection
from ndmpd.engines.extract import Extractor, Meta, UnsafePath, map_selection, match_selection

FILE = Meta(mode=stat.S_IFREG | 0o640, mtime_ns=1_700_000_000_123_456_789)


def _b(p: Path) -> bytes:
    return os.fsencode(p)


def _all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_file_written_under_temp_name_then_renamed(tmp_path: Path) -> None:
    ex = Extractor(_b(tmp_path))
    out = ex.create_file(_b(tmp_path / "a" / "b" / "f"), FILE)
    out.write(b"hello ")
    assert not (tmp_path / "a/b/f").exists()
    out.seek_hole(1 << 20)
    out.write(memoryview(b"world"))
    out.seek_hole(4096)
    out.commit(6 + (1 << 20) + 5 + 4096)
    p = tmp_path / "a/b/f"
    st = p.stat()
    assert st.st_size == 6 + (1 << 20) + 5 + 4096
    assert st.st_blocks * 512 < 64 * 1024  # the holes stayed holes
    assert st.st_mtime_ns == FILE.mtime_ns
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert p.read_bytes()[:6] == b"hello "
    assert _all_files(tmp_path) == {"a", "a/b", "a/b/f"}


@pytest.mark.parametrize("bad", [b"../x", b"a/../../x", b"/etc/passwd", b"a/../b"])
def test_escapes_refused(tmp_path: Path, bad: bytes) -> None:
    root = tmp_path / "root"
    root.mkdir()
    ex = Extractor(_b(root))
    path = bad if bad.startswith(b"/") else _b(root) + b"/" + bad
    with pytest.raises(UnsafePath):
        ex.create_file(path, FILE)
    assert _all_files(tmp_path) == {"root"}


def test_relative_path_is_below_confine(tmp_path: Path) -> None:
    ex = Extractor(_b(tmp_path))
    assert ex.target(b"x/y") == _b(tmp_path / "x/y")
    assert (tmp_path / "x").is_dir()
    with pytest.raises(UnsafePath):
        ex.target(b"x/../../y")


def test_symlink_then_file_beneath_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    ex = Extractor(_b(root))
    ex.symlink(_b(root / "d"), _b(outside), Meta(mode=stat.S_IFLNK | 0o777))
    assert os.readlink(root / "d") == str(outside)
    with pytest.raises(UnsafePath):
        ex.create_file(_b(root / "d" / "evil"), FILE)
    with pytest.raises(UnsafePath):
        ex.mkdir(_b(root / "d" / "sub"), Meta(mode=stat.S_IFDIR | 0o755))
    assert list(outside.iterdir()) == []


def test_symlinked_parent_dir_preexisting_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, root / "a" / "link")
    ex = Extractor(_b(root))
    with pytest.raises(UnsafePath):
        ex.create_file(_b(root / "a/link/f"), FILE)
    with pytest.raises(UnsafePath):
        ex.hardlink(_b(root / "a/x"), _b(root / "a/link/f"))
    assert list(outside.iterdir()) == []


def test_dir_replaced_by_symlink_is_not_trusted_later(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    ex = Extractor(_b(root))
    ex.mkdir(_b(root / "d"), Meta(mode=stat.S_IFDIR | 0o755))
    ex.symlink(_b(root / "d"), _b(outside), Meta(mode=stat.S_IFLNK | 0o777))
    assert (root / "d").is_symlink()
    with pytest.raises(UnsafePath):
        ex.create_file(_b(root / "d/f"), FILE)
    assert list(outside.iterdir()) == []


def test_mkdir_does_not_follow_existing_symlink(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "d")
    ex = Extractor(_b(root))
    ex.mkdir(_b(root / "d"), Meta(mode=stat.S_IFDIR | 0o700, mtime_ns=10**18))
    ex.finish()
    assert (root / "d").is_dir() and not (root / "d").is_symlink()
    assert outside.stat().st_mtime_ns != 10**18


def test_rename_over_symlink_replaces_link_not_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(victim, root / "f")
    ex = Extractor(_b(root))
    out = ex.create_file(_b(root / "f"), FILE)
    out.write(b"new")
    out.commit(3)
    assert victim.read_bytes() == b"keep"
    assert (root / "f").read_bytes() == b"new" and not (root / "f").is_symlink()


def test_overwrite_on_and_off(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    logs: list[str] = []
    ex = Extractor(_b(tmp_path), overwrite=False, log=lambda t, m: logs.append(m))
    out = ex.create_file(_b(tmp_path / "f"), FILE)
    assert out.kept
    out.write(b"new")
    out.commit(3)
    assert (tmp_path / "f").read_bytes() == b"old"
    assert ex.kept == [_b(tmp_path / "f")] and logs
    ex2 = Extractor(_b(tmp_path), overwrite=True)
    out = ex2.create_file(_b(tmp_path / "f"), FILE)
    out.write(b"new")
    out.commit(3)
    assert (tmp_path / "f").read_bytes() == b"new"


def test_discard_and_abandon_leave_nothing(tmp_path: Path) -> None:
    ex = Extractor(_b(tmp_path))
    a = ex.create_file(_b(tmp_path / "a"), FILE)
    a.write(b"x" * 100)
    a.discard()
    b = ex.create_file(_b(tmp_path / "b"), FILE)
    b.write(b"y")
    ex.abandon()
    assert _all_files(tmp_path) == set()


def test_killed_mid_file_leaves_no_file_under_real_name(tmp_path: Path) -> None:
    root = _b(tmp_path)
    code = textwrap.dedent(
        f"""
        import stat, sys
        from ndmpd.engines.extract import Extractor, Meta
        ex = Extractor({root!r})
        out = ex.create_file({root + b"/big"!r}, Meta(mode=stat.S_IFREG | 0o644))
        out.write(b"x" * 65536)
        print("ready", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert not (tmp_path / "big").exists()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".ndmpd-tmp.")


def test_hardlink_symlink_special_and_dir_meta(tmp_path: Path) -> None:
    ex = Extractor(_b(tmp_path))
    out = ex.create_file(_b(tmp_path / "f"), FILE)
    out.write(b"data")
    out.commit(4)
    ex.hardlink(_b(tmp_path / "sub/g"), _b(tmp_path / "f"))
    ex.symlink(_b(tmp_path / "l"), b"../nowhere", Meta(mode=stat.S_IFLNK | 0o777, mtime_ns=5))
    ex.special(_b(tmp_path / "p"), Meta(mode=stat.S_IFIFO | 0o604, mtime_ns=7))
    ex.mkdir(_b(tmp_path / "sub"), Meta(mode=stat.S_IFDIR | 0o750, mtime_ns=9))
    ex.finish()
    ex.finish()
    assert (tmp_path / "f").stat().st_ino == (tmp_path / "sub/g").stat().st_ino
    assert os.readlink(tmp_path / "l") == "../nowhere"
    assert os.lstat(tmp_path / "l").st_mtime_ns == 5
    st = os.lstat(tmp_path / "p")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o604
    st = os.lstat(tmp_path / "sub")
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime_ns == 9


def test_file_where_directory_needed_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    ex = Extractor(_b(tmp_path))
    with pytest.raises(EngineError):
        ex.create_file(_b(tmp_path / "f/x"), FILE)


def _sel(orig: bytes, dest: bytes) -> Selection:
    return Selection(original=orig, destination=dest, name=orig.decode())


def test_map_selection() -> None:
    assert map_selection(b"a/b", [], b"/dst") == b"/dst/a/b"
    assert map_selection(b"", [], b"/dst") == b"/dst"
    sels = [_sel(b"a", b"/x/a"), _sel(b"a/b", b"/y/b"), _sel(b"c/d.txt", b"/z/new.txt")]
    assert map_selection(b"a/b/c", sels, b"/dst") == b"/y/b/c"
    assert map_selection(b"a/bc", sels, b"/dst") == b"/x/a/bc"
    assert map_selection(b"a", sels, b"/dst") == b"/x/a"
    assert map_selection(b"c/d.txt", sels, b"/dst") == b"/z/new.txt"
    assert map_selection(b"c/d.txt2", sels, b"/dst") is None
    assert map_selection(b"c", sels, b"/dst") is None
    assert match_selection(b"a/b/c", sels) is sels[1]
    assert map_selection(b"q/r", [_sel(b"", b"/all")], b"/dst") == b"/all/q/r"


def test_target_normalises_odd_paths_below_known_directories(tmp_path: Path) -> None:
    """Paths that skip the common-case shortcut still normalise and refuse as before."""
    ex = Extractor(_b(tmp_path))
    root = _b(tmp_path)
    assert ex.target(root + b"/f") == root + b"/f"  # the shortcut
    assert ex.target(root + b"//f") == root + b"/f"
    assert ex.target(root + b"/./f") == root + b"/f"
    assert ex.target(root + b"/d/") == root + b"/d"
    assert ex.target(root + b"/.hidden") == root + b"/.hidden"
    for bad in (root + b"/../x", root + b"/d/..", root + b"/d/../../x", root + b"x/f"):
        with pytest.raises(UnsafePath):
            ex.target(bad)
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(UnsafePath):
        ex.target(root + b"/link/f")  # never cached as a directory, so never a shortcut
