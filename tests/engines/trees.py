"""An awkward source tree for backup engines, and a comparison of two trees.

``build_awkward_tree(root)`` makes every case a backup format gets wrong: odd names (spaces,
newlines, leading dashes, non-UTF-8 bytes, 254-byte names, paths deeper than 1 KiB), empty files
and directories, sparse files (holes inside, at the end, nothing but a hole), hard links,
symlinks (dangling, long targets), xattrs (``user.``; ``trusted.`` as root), POSIX ACLs, setuid,
setgid and sticky modes, foreign and very large uid/gid (as root), a FIFO, a character device
(as root), nanosecond mtimes. ``compare_trees`` lists every difference between two trees;
``assert_same_tree`` fails with that list. Both engines' tests and the end-to-end tests use them.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

IS_ROOT = os.geteuid() == 0
BIG_SPARSE_SIZE = 64 * 1024 * 1024
_T0 = 1_700_000_000_000_000_000  # a nanosecond epoch time near 2023


def _mt(n: int) -> int:
    """A distinct mtime with all nine fraction digits in use."""
    return _T0 + n * 1_000_003_001 + 123_456_789


def build_awkward_tree(root: Path | bytes | str, *, socket_file: bool = False) -> Path:
    """Create the tree in ``root`` (made if missing) and return ``root`` as a Path.

    ``socket_file`` adds a Unix socket (dump keeps sockets; tar skips them).
    """
    r = os.fsencode(root)
    os.makedirs(r, exist_ok=True)
    times: list[tuple[bytes, int]] = []

    def put(rel: bytes, data: bytes = b"", mode: int = 0o644) -> bytes:
        p = r + b"/" + rel
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        times.append((p, _mt(len(times))))
        return p

    def mkd(rel: bytes, mode: int = 0o755) -> bytes:
        p = r + b"/" + rel
        os.makedirs(p, exist_ok=True)
        os.chmod(p, mode)
        return p

    # names
    put(b"hello.txt", b"hello world\n")
    put(b"with space.txt", b"spaces\n")
    put(b"new\nline", b"newline in name\n")
    put(b"-leading-dash", b"dash\n", 0o600)
    put(b"latin1_\xe9t\xe9", b"not utf-8\n")
    put(b"caf\xc3\xa9", b"utf-8\n")
    put(b"L" * 254, b"long name\n")
    put(b"empty", b"")
    mkd(b"emptydir")
    deep = b"d"
    for i in range(11):
        deep += b"/" + (b"%02d" % i) * 48  # 11 levels of 96-byte names: > 1 KiB
    mkd(deep)
    put(deep + b"/deep file", b"deep\n")
    # sizes around block boundaries and a medium file
    mkd(b"sizes")
    put(b"sizes/511", b"a" * 511)
    put(b"sizes/512", b"b" * 512)
    put(b"sizes/513", b"c" * 513)
    put(b"sizes/medium.bin", os.urandom(300_000))
    # sparse files
    p = put(b"sparse.bin")
    with open(p, "r+b") as f:
        f.truncate(BIG_SPARSE_SIZE)
        for off in (100 * 1024, 10 * 1024 * 1024, BIG_SPARSE_SIZE - 4096):
            f.seek(off)
            f.write(os.urandom(4096))
    p = put(b"tailhole.bin", b"abcd")
    os.truncate(p, 10_000)
    p = put(b"allhole.bin")
    os.truncate(p, 3 * 1024 * 1024)
    # hard links
    mkd(b"links")
    put(b"links/first", b"linked content\n")
    os.link(r + b"/links/first", r + b"/links/second")
    os.link(r + b"/links/first", r + b"/hardlink in root")
    put(b"links/pair-a", b"another group\n")
    os.link(r + b"/links/pair-a", r + b"/emptydir-sibling-link")
    # symlinks
    os.symlink(b"hello.txt", r + b"/sym-to-file")
    os.symlink(b"does/not/exist", r + b"/sym-dangling")
    os.symlink(b"links", r + b"/sym-to-dir")
    os.symlink(b"T" * 150 + b"/\xff target", r + b"/sym-long-target")
    # xattrs and ACLs
    p = put(b"xattrs.txt", b"with attributes\n")
    os.setxattr(p, b"user.comment", b"hello xattr")
    os.setxattr(p, b"user.empty", b"")
    os.setxattr(p, b"user.binary", bytes(range(256)))
    os.setxattr(p, b"user.big", b"B" * 1500)
    if IS_ROOT:
        os.setxattr(p, b"trusted.t1", b"tval")
    d = mkd(b"xattr-dir")
    os.setxattr(d, b"user.dirattr", b"on a directory")
    os.setxattr(r + b"/links/first", b"user.linked", b"on a hard link")
    p = put(b"acl.txt", b"acl\n")
    subprocess.run(["setfacl", "-m", "u:1000:rw,g:2000:r", os.fsdecode(p)], check=True)
    d = mkd(b"acl-dir")
    subprocess.run(["setfacl", "-d", "-m", "u:1000:rwx", os.fsdecode(d)], check=True)
    # modes
    put(b"setuid", b"#!/bin/sh\n", 0o4755)
    put(b"sticky-file", b"", 0o1640)
    put(b"readonly", b"ro\n", 0o444)
    mkd(b"sticky-dir", 0o1777)
    mkd(b"setgid-dir", 0o2775)
    put(b"setgid-dir/inside", b"x")
    # ownership
    if IS_ROOT:
        p = put(b"foreign", b"owned by nobody we know\n")
        os.chown(p, 1234, 5678)
        p = put(b"bigids", b"ids beyond 7 octal digits\n")
        os.chown(p, 3_000_000, 3_000_001)
        os.chown(r + b"/sym-dangling", 4321, 8765, follow_symlinks=False)
        os.chown(r + b"/emptydir", 1234, 5678)
    # special files
    os.mkfifo(r + b"/fifo", 0o640)
    if IS_ROOT:
        os.mknod(r + b"/chardev", stat.S_IFCHR | 0o620, os.makedev(1, 3))
    if socket_file:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.bind(os.fsdecode(r + b"/sock"))
        finally:
            s.close()
    # times last, deepest first, so that creating entries does not disturb them
    for p, t in times:
        os.utime(p, ns=(t, t), follow_symlinks=False)
    n = len(times)
    for sub in _walk_rel(r, dirs_first=False):
        p = r + b"/" + sub if sub else r
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISSOCK(st.st_mode):
            n += 1
            os.utime(p, ns=(_mt(n), _mt(n)), follow_symlinks=False)
    return Path(os.fsdecode(r))


def _walk_rel(root: bytes, *, dirs_first: bool = True) -> Iterator[bytes]:
    """Relative paths of everything under ``root`` (``b""`` = root itself), no symlinks followed."""

    def rec(rel: bytes) -> Iterator[bytes]:
        if dirs_first:
            yield rel
        base = root + b"/" + rel if rel else root
        with os.scandir(base) as it:
            entries = sorted(e.name for e in it)
        for name in entries:
            sub = rel + b"/" + name if rel else name
            if stat.S_ISDIR(os.lstat(root + b"/" + sub).st_mode):
                yield from rec(sub)
            else:
                yield sub
        if not dirs_first:
            yield rel

    yield from rec(b"")


def _xattrs(p: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        try:
            out[n] = os.getxattr(p, n, follow_symlinks=False)
        except OSError:
            continue
    return out


def _same_content(a: bytes, b: bytes) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1 << 20)
            y = fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def compare_trees(
    src: Path | bytes | str,
    dst: Path | bytes | str,
    *,
    mtime_precision_ns: int = 1,
    owners: bool = IS_ROOT,
    symlink_mtime: bool = True,
    root_meta: bool = True,
    xattrs: bool = True,
    ignore: frozenset[bytes] = frozenset(),
) -> list[str]:
    """Every difference between ``src`` and ``dst``, as readable lines (empty = identical).

    Compared: the set of paths, type, permission bits, owner and group (``owners``), mtime
    truncated to ``mtime_precision_ns`` (1 for tar, 1000 for dump), content, symlink target,
    device numbers, hard-link groups, xattrs (ACLs included; ``xattrs``), and holes (a sparse
    source file must not take much more space in ``dst``). ``ignore`` holds relative paths left out.
    """
    a, b = os.fsencode(src), os.fsencode(dst)
    diffs: list[str] = []
    ra = [p for p in _walk_rel(a) if p not in ignore]
    rb = [p for p in _walk_rel(b) if p not in ignore]
    sa, sb = set(ra), set(rb)
    for p in sorted(sa - sb):
        diffs.append(f"missing in dst: {p!r}")
    for p in sorted(sb - sa):
        diffs.append(f"extra in dst: {p!r}")
    groups_a: dict[int, set[bytes]] = defaultdict(set)
    groups_b: dict[int, set[bytes]] = defaultdict(set)
    for rel in ra:
        if rel not in sb:
            continue
        pa = a + b"/" + rel if rel else a
        pb = b + b"/" + rel if rel else b
        x, y = os.lstat(pa), os.lstat(pb)

        def bad(what: str, u: object, v: object, rel: bytes = rel) -> None:
            diffs.append(f"{rel!r}: {what} {u!r} != {v!r}")

        if stat.S_IFMT(x.st_mode) != stat.S_IFMT(y.st_mode):
            bad("type", stat.filemode(x.st_mode), stat.filemode(y.st_mode))
            continue
        if not rel and not root_meta:
            continue
        islnk = stat.S_ISLNK(x.st_mode)
        if not islnk and stat.S_IMODE(x.st_mode) != stat.S_IMODE(y.st_mode):
            bad("mode", oct(x.st_mode), oct(y.st_mode))
        if owners and (x.st_uid, x.st_gid) != (y.st_uid, y.st_gid):
            bad("owner", (x.st_uid, x.st_gid), (y.st_uid, y.st_gid))
        if (not islnk or symlink_mtime) and (
            x.st_mtime_ns // mtime_precision_ns != y.st_mtime_ns // mtime_precision_ns
        ):
            bad("mtime_ns", x.st_mtime_ns, y.st_mtime_ns)
        if islnk:
            if os.readlink(pa) != os.readlink(pb):
                bad("link target", os.readlink(pa), os.readlink(pb))
        elif stat.S_ISREG(x.st_mode):
            if x.st_size != y.st_size:
                bad("size", x.st_size, y.st_size)
            elif not _same_content(pa, pb):
                diffs.append(f"{rel!r}: content differs")
            if x.st_blocks * 512 < x.st_size and y.st_blocks > x.st_blocks + 128:
                bad("holes lost, st_blocks", x.st_blocks, y.st_blocks)
            if x.st_nlink > 1:
                groups_a[x.st_ino].add(rel)
            if y.st_nlink > 1:
                groups_b[y.st_ino].add(rel)
        elif (stat.S_ISCHR(x.st_mode) or stat.S_ISBLK(x.st_mode)) and x.st_rdev != y.st_rdev:
            bad("rdev", x.st_rdev, y.st_rdev)
        if xattrs and _xattrs(pa) != _xattrs(pb):
            bad("xattrs", _xattrs(pa), _xattrs(pb))
    ga = sorted(sorted(g) for g in groups_a.values() if len(g) > 1)
    gb = sorted(sorted(g) for g in groups_b.values() if len(g) > 1)
    if ga != gb:
        diffs.append(f"hard-link groups {ga!r} != {gb!r}")
    return diffs


def assert_same_tree(src: Path | bytes | str, dst: Path | bytes | str, **kw: object) -> None:
    """Fail with the list of differences from :func:`compare_trees`."""
    diffs = compare_trees(src, dst, **kw)  # type: ignore[arg-type]
    assert not diffs, "trees differ:\n" + "\n".join(diffs[:50])


def tree_paths(root: Path | bytes | str) -> list[bytes]:
    """Relative paths of every entry below ``root`` (the root itself excluded), sorted."""
    return [p for p in _walk_rel(os.fsencode(root)) if p]
