"""Tree -> pax stream (spec tar-format.md §11.1), with NDMP file history.

Streaming: a directory's non-directory entries are archived while it is being read and its
subdirectories are visited afterwards, so memory holds one directory's subdirectory names per
level plus the inodes with more than one link. Output goes through one reused buffer; small
files are read straight into it, so a 4 KiB file costs one copy and a few system calls.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import struct
from collections.abc import Sequence
from types import ModuleType
from zlib import adler32

from ndmpd.engines import native
from ndmpd.engines.base import Aborted, BackupJob, EngineError, write_batch
from ndmpd.engines.tar import format as fmt
from ndmpd.engines.tar.format import BLOCK, MAX_OCTAL_7, MAX_OCTAL_11, NS, record
from ndmpd.protocol.constants import LogType

BUF_SIZE = 4 * 1024 * 1024
SMALL_MAX = 1024 * 1024  # files up to this size take the in-place fast path
_O_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
# x header, one block of records, ustar header: the three blocks of a small member
_MEMBER_PACK = struct.Struct(f"{fmt.HDR_FORMAT}512s{fmt.HDR_FORMAT}").pack_into
_CHK_SPACES = b"        "
_ZEROS = bytes(BLOCK)
_PK_NAME = 4  # tar_pack_files: an owner is missing from the name tables
_PAD = [bytes(i) for i in range(BLOCK)]
_ACL_XATTRS = {
    b"system.posix_acl_access": b"SCHILY.acl.access",
    b"system.posix_acl_default": b"SCHILY.acl.default",
}


class _Out:
    """The reused output buffer in front of ``job.sink``; tracks the stream offset."""

    __slots__ = ("batch", "buf", "flushed", "mv", "pos", "sink")

    def __init__(self, sink: object) -> None:
        self.sink = sink
        self.batch = write_batch(sink, BUF_SIZE)
        self.buf = bytearray(BUF_SIZE)
        self.mv = memoryview(self.buf)
        self.pos = 0
        self.flushed = 0

    @property
    def offset(self) -> int:
        return self.flushed + self.pos

    def put(self, data: bytes | bytearray) -> None:
        n = len(data)
        if self.pos + n > BUF_SIZE:
            self.flush()
            if n > BUF_SIZE:
                self.sink.write(data)  # type: ignore[attr-defined]
                self.flushed += n
                return
        self.buf[self.pos : self.pos + n] = data
        self.pos += n

    def flush(self) -> None:
        if self.pos:
            self.sink.write(self.mv[: self.pos])  # type: ignore[attr-defined]
            self.flushed += self.pos
            self.pos = 0


def _exclude_matcher(patterns: Sequence[bytes]) -> re.Pattern[bytes] | None:
    if not patterns:
        return None
    rx = b"|".join(
        b"(?:" + os.fsencode(fnmatch.translate(os.fsdecode(p))) + b")" for p in patterns if p
    )
    return re.compile(rx, re.DOTALL) if rx else None


def _xname(name: bytes) -> bytes:
    """``DIR/PaxHeaders/BASE`` for a member name, as GNU tar names its ``x`` headers."""
    d, _, base = name.rstrip(b"/").rpartition(b"/")
    return (d or b".") + b"/PaxHeaders/" + base


class TarWriter:
    """One backup run."""

    def __init__(self, job: BackupJob) -> None:
        self.job = job
        self.out = _Out(job.sink)
        self.root = job.root.rstrip(b"/") or b"/"
        self.history = job.history
        self.abort = job.abort
        self.links: dict[tuple[int, int], bytes] = {}
        self.exclude = _exclude_matcher(job.excludes)
        self.count = 0
        self.skipped = 0
        self.fast = native.speedups
        self.unames: dict[int, bytes] = {}  # owner names for the C path
        self.gnames: dict[int, bytes] = {}

    # -- walk ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            st = os.lstat(self.root)
        except OSError as e:
            raise EngineError(f"cannot read {os.fsdecode(self.root)}: {e.strerror}") from e
        if not stat.S_ISDIR(st.st_mode):
            raise EngineError(f"{os.fsdecode(self.root)} is not a directory")
        files = [f for f in self.job.files if f.strip(b"/")]
        if not files:
            self._member(b"", self.root, st)
            self._walk(b"", self.root)
        else:
            for f in files:
                parts = [p for p in f.split(b"/") if p and p != b"."]
                if b".." in parts:
                    raise EngineError(f"FILES entry leaves the backup root: {os.fsdecode(f)}")
                rel = b"/".join(parts)
                path = self.root + b"/" + rel
                try:
                    st = os.lstat(path)
                except OSError as e:
                    self.job.log(LogType.WARNING, f"{os.fsdecode(rel)}: {e.strerror}, skipped")
                    self.skipped += 1
                    continue
                self._member(rel, path, st)
                if stat.S_ISDIR(st.st_mode):
                    self._walk(rel, path)
        self._end()

    def _walk(self, rel: bytes, path: bytes) -> None:
        """Archive a directory's entries while reading it; its subdirectories come after.

        The stack holds (rel, path, must_emit): a subdirectory's own header is written when it
        is popped, right before its contents, in sorted order.
        """
        stack: list[tuple[bytes, bytes, bool]] = [(rel, path, False)]
        exclude = self.exclude
        abort = self.abort
        member = self._member
        small = self._small_file
        while stack:
            if abort.is_set():
                raise Aborted("backup aborted")
            rel, path, emit = stack.pop()
            if emit:
                try:
                    st = os.lstat(path)
                except OSError as e:
                    self._vanished(path, e)
                    continue
                member(rel, path, st)
                if not stat.S_ISDIR(st.st_mode):
                    continue
            subdirs: list[bytes] = []
            prefix = rel + b"/" if rel else b""
            try:
                it = os.scandir(path)
            except OSError as e:
                self.job.log(LogType.WARNING, f"cannot read {os.fsdecode(path)}: {e.strerror}")
                self.skipped += 1
                continue
            nprefix = b"./" + prefix
            xprefix = (b"./" + rel if rel else b".") + b"/PaxHeaders/"
            fast = self.fast
            run: list[bytes] = []  # regular files in a row, for the C path
            with it:
                for entry in it:
                    name = entry.name
                    if exclude is not None and exclude.fullmatch(name):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(name)
                            continue
                        if fast is not None and entry.is_file(follow_symlinks=False):
                            run.append(name)
                            if len(run) >= native.SCAN_BATCH:
                                self._fast_files(fast, rel, path, run, nprefix, xprefix)
                                run = []
                            continue
                        if run:
                            self._fast_files(fast, rel, path, run, nprefix, xprefix)
                            run = []
                        st = entry.stat(follow_symlinks=False)
                    except OSError as e:
                        self._vanished(entry.path, e)
                        continue
                    if (
                        st.st_nlink == 1
                        and st.st_mode & 0o170000 == 0o100000
                        and st.st_size <= SMALL_MAX
                        and small(name, entry.path, st, nprefix, xprefix)
                    ):
                        continue
                    member(prefix + name, entry.path, st)
            if run:
                self._fast_files(fast, rel, path, run, nprefix, xprefix)
            subdirs.sort(reverse=True)  # the stack pops the last pushed first
            stack.extend((prefix + name, path + b"/" + name, True) for name in subdirs)

    def _fast_files(
        self,
        fast: ModuleType,
        rel: bytes,
        path: bytes,
        names: list[bytes],
        nprefix: bytes,
        xprefix: bytes,
    ) -> None:
        """Archive ``names`` (regular files of directory ``path``, in order) through the C
        path, which produces :meth:`_small_file`'s bytes; the rest go the Python way."""
        if self.abort.is_set():
            raise Aborted("backup aborted")
        try:
            dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            dfd = -1
        out = self.out
        hist = self.history
        prefix = rel + b"/" if rel else b""
        i = 0
        try:
            while i < len(names):
                start = i
                base = out.flushed
                if dfd >= 0:
                    i, out.pos, status, stats, missing = fast.tar_pack_files(
                        dfd, names, i, nprefix, xprefix, out.buf, out.pos, out.batch,
                        self.unames, self.gnames, hist is not None,
                    )  # fmt: skip
                else:
                    status, stats, missing = native.STOP, None, None
                self.count += i - start
                if stats:
                    assert hist is not None
                    for st, name, off in stats:
                        hist.add_file(
                            b"/" + prefix + name, native.stat_result(st), st[1], base + off
                        )
                if status == native.LIMIT:
                    out.flush()
                elif status == _PK_NAME:
                    uid, gid = missing  # type: ignore[misc]
                    self.unames.setdefault(uid, fmt.uname_of(uid))
                    self.gnames.setdefault(gid, fmt.gname_of(gid))
                elif i < len(names):
                    self._one(names[i], path + b"/" + names[i], prefix, nprefix, xprefix)
                    i += 1
        finally:
            if dfd >= 0:
                os.close(dfd)

    def _one(self, name: bytes, path: bytes, prefix: bytes, nprefix: bytes, xprefix: bytes) -> None:
        """One directory entry through the Python path (what the walk does per entry)."""
        try:
            st = os.lstat(path)
        except OSError as e:
            self._vanished(path, e)
            return
        if (
            st.st_nlink == 1
            and st.st_mode & 0o170000 == 0o100000
            and st.st_size <= SMALL_MAX
            and self._small_file(name, path, st, nprefix, xprefix)
        ):
            return
        self._member(prefix + name, path, st)

    def _vanished(self, path: bytes, e: OSError) -> None:
        self.job.log(LogType.WARNING, f"{os.fsdecode(path)}: {e.strerror}, skipped")
        self.skipped += 1

    # -- members ------------------------------------------------------------------------

    def _member(self, rel: bytes, path: bytes, st: os.stat_result) -> None:
        mode = st.st_mode
        ifmt = stat.S_IFMT(mode)
        name = b"./" + rel if rel else b"."
        out = self.out
        offset = out.offset
        recs: list[bytes] = []
        linkname = b""
        size = 0
        devmajor = devminor = 0
        sparse_map: list[tuple[int, int]] | None = None
        fd = -1
        xattrs = True
        if ifmt == stat.S_IFREG:
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = self.links.get(key)
                if first is not None:
                    typeflag, linkname, xattrs = fmt.LNK, first, False
                else:
                    self.links[key] = name
                    typeflag = fmt.REG
            else:
                typeflag = fmt.REG
            if typeflag == fmt.REG:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                except OSError as e:
                    self._vanished(path, e)
                    if st.st_nlink > 1:
                        self.links.pop((st.st_dev, st.st_ino), None)
                    return
                size = st.st_size
                if size and st.st_blocks * 512 < size:
                    sparse_map = _data_map(fd, size)
        elif ifmt == stat.S_IFDIR:
            typeflag = fmt.DIR
            name += b"/"
        elif ifmt == stat.S_IFLNK:
            typeflag = fmt.SYM
            try:
                linkname = os.readlink(path)
            except OSError as e:
                self._vanished(path, e)
                return
        elif ifmt == stat.S_IFCHR or ifmt == stat.S_IFBLK:
            typeflag = fmt.CHR if ifmt == stat.S_IFCHR else fmt.BLK
            devmajor, devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif ifmt == stat.S_IFIFO:
            typeflag = fmt.FIFO
        else:
            self.job.log(LogType.WARNING, f"{os.fsdecode(path)}: socket ignored")
            self.skipped += 1
            return
        try:
            ustar_name = name
            if sparse_map is not None:
                d, _, base = name.rpartition(b"/")
                ustar_name = d + b"/GNUSparseFile.0/" + base
                recs.append(b"22 GNU.sparse.major=1\n22 GNU.sparse.minor=0\n")
                recs.append(record(b"GNU.sparse.name", name))
                recs.append(record(b"GNU.sparse.realsize", b"%d" % size))
                map_text = b"%d\n" % (len(sparse_map) + 1) + b"".join(
                    b"%d\n%d\n" % e for e in sparse_map
                )
                map_text += b"%d\n0\n" % size
                map_block = map_text + _PAD[-len(map_text) % BLOCK]
                size = len(map_block) + sum(n for _, n in sparse_map)
            elif len(name) > 100 or not name.isascii():
                recs.append(record(b"path", name))
            if linkname and (len(linkname) > 100 or not linkname.isascii()):
                recs.append(record(b"linkpath", linkname))
            uid, gid = st.st_uid, st.st_gid
            if uid > MAX_OCTAL_7:
                recs.append(record(b"uid", b"%d" % uid))
            if gid > MAX_OCTAL_7:
                recs.append(record(b"gid", b"%d" % gid))
            if size > MAX_OCTAL_11:
                recs.append(record(b"size", b"%d" % size))
            mtime_ns = st.st_mtime_ns
            recs.append(record(b"mtime", fmt.format_time(mtime_ns)))
            recs.append(record(b"atime", fmt.format_time(st.st_atime_ns)))
            recs.append(record(b"ctime", fmt.format_time(st.st_ctime_ns)))
            if xattrs:
                self._xattrs(path, fd, recs)
            data = b"".join(recs)
            mtime = mtime_ns // 1_000_000_000
            hdr = fmt.header(
                _xname(ustar_name)[:100], 0o644, 0, 0, len(data), mtime, fmt.XHD, xheader=True
            )
            hdr += data
            hdr += _PAD[-len(data) % BLOCK]
            hdr += fmt.header(
                ustar_name[:100],
                mode,
                uid,
                gid,
                size,
                mtime,
                typeflag,
                linkname[:100],
                fmt.uname_of(uid),
                fmt.gname_of(gid),
                devmajor,
                devminor,
            )
            out.put(hdr)
            if fd >= 0:
                if sparse_map is not None:
                    out.put(map_block)
                    self._sparse_data(fd, path, sparse_map)
                else:
                    self._data(fd, path, size)
        finally:
            if fd >= 0:
                os.close(fd)
        self.count += 1
        if self.history is not None:
            self.history.add_file(b"/" + rel, st, st.st_ino, offset)

    def _small_file(
        self, ename: bytes, path: bytes, st: os.stat_result, nprefix: bytes, xprefix: bytes
    ) -> bool:
        """The common member, built in place: a small plain file without xattrs.

        Writes exactly what :meth:`_member` would (``x`` header, time records, ustar header,
        data) straight into the output buffer with one ``pack_into`` and one open, listxattr,
        read and close. Returns False, having written nothing, for anything unusual (long or
        non-ASCII name, large ids, holes, xattrs, a file that changed size), which the
        general path then handles.
        """
        name = nprefix + ename
        size = st.st_size
        uid = st.st_uid
        gid = st.st_gid
        if (
            len(name) > 100
            or not name.isascii()
            or uid > MAX_OCTAL_7
            or gid > MAX_OCTAL_7
            or (size and st.st_blocks * 512 < size)
        ):
            return False
        m, a, c = st.st_mtime_ns, st.st_atime_ns, st.st_ctime_ns
        if m < 0 or a < 0 or c < 0:
            return False
        try:
            fd = os.open(path, _O_READ)
        except OSError:
            return False
        try:
            try:
                if os.listxattr(fd):
                    return False
            except OSError:
                return False
            out = self.out
            padded = size + (-size % BLOCK)
            if out.pos >= out.batch or out.pos + 3 * BLOCK + padded > BUF_SIZE:
                out.flush()
            pos = out.pos
            mv = out.mv
            d = pos + 3 * BLOCK
            got = os.readv(fd, [mv[d : d + size]]) if size else 0
            if got != size:
                return False  # short read: the general path pads and warns
        finally:
            os.close(fd)
        ms, f = divmod(m, NS)
        tm = (b"%d.%09d" % (ms, f)).rstrip(b"0") if f else b"%d" % ms
        if a == m:
            ta = tm
        else:
            s, f = divmod(a, NS)
            ta = (b"%d.%09d" % (s, f)).rstrip(b"0") if f else b"%d" % s
        if c == m:
            tc = tm
        else:
            s, f = divmod(c, NS)
            tc = (b"%d.%09d" % (s, f)).rstrip(b"0") if f else b"%d" % s
        # a record of key "mtime" is len(value) + 10 bytes long while that stays two digits
        recs = b"%d mtime=%s\n%d atime=%s\n%d ctime=%s\n" % (
            len(tm) + 10, tm, len(ta) + 10, ta, len(tc) + 10, tc,
        )  # fmt: skip
        mtime = b"%011o\0" % ms
        buf = out.buf
        _MEMBER_PACK(
            buf, pos,
            (xprefix + ename)[:100], b"0000644\0", b"0000000\0", b"0000000\0",
            b"%011o\0" % len(recs), mtime, _CHK_SPACES, fmt.XHD, b"", fmt.MAGIC_USTAR,
            b"", b"", b"", b"", b"",
            recs,
            name, b"%07o\0" % (st.st_mode & 0o7777), b"%07o\0" % uid, b"%07o\0" % gid,
            b"%011o\0" % size, mtime, _CHK_SPACES, fmt.REG, b"", fmt.MAGIC_USTAR,
            fmt.uname_of(uid), fmt.gname_of(gid), b"0000000\0", b"0000000\0", b"",
        )  # fmt: skip
        # Every byte of both headers is ASCII here (checked name, octal digits, ASCII user
        # names), so a header sums to well under 65521 and adler32's low half is 1 + the sum.
        buf[pos + 148 : pos + 156] = b"%06o\0 " % ((adler32(mv[pos : pos + BLOCK]) & 0xFFFF) - 1)
        p = pos + 2 * BLOCK
        buf[p + 148 : p + 156] = b"%06o\0 " % ((adler32(mv[p : p + BLOCK]) & 0xFFFF) - 1)
        if padded != size:
            buf[d + size : d + padded] = _PAD[padded - size]
        out.pos = d + padded
        self.count += 1
        if self.history is not None:
            self.history.add_file(b"/" + name[2:], st, st.st_ino, out.flushed + pos)
        return True

    def _xattrs(self, path: bytes, fd: int, recs: list[bytes]) -> None:
        try:
            names = os.listxattr(fd if fd >= 0 else path, follow_symlinks=fd >= 0)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.ENOENT):
                self.job.log(LogType.WARNING, f"{os.fsdecode(path)}: xattrs: {e.strerror}")
            return
        if not names:
            return
        acls: list[bytes] = []
        xrecs: list[bytes] = []
        for n in sorted(names):
            try:
                v = os.getxattr(fd if fd >= 0 else path, n, follow_symlinks=fd >= 0)
            except OSError:
                continue
            bn = os.fsencode(n)
            acl_key = _ACL_XATTRS.get(bn)
            if acl_key is not None:
                text = fmt.acl_to_text(v)
                if text is not None:
                    acls.append(record(acl_key, text))
            xrecs.append(record(b"SCHILY.xattr." + bn, v))
        recs.extend(acls)
        recs.extend(xrecs)

    def _data(self, fd: int, path: bytes, size: int) -> None:
        """Copy ``size`` bytes of ``fd`` into the stream, zero-filled if the file shrank."""
        out = self.out
        padded = size + (-size % BLOCK)
        if padded <= BUF_SIZE - out.pos:
            pos = out.pos
            got = _read_into(fd, out.mv[pos : pos + size])
            if got < size:
                self._shrunk(path, size, got)
                out.buf[pos + got : pos + padded] = bytes(padded - got)
            else:
                out.buf[pos + size : pos + padded] = _PAD[padded - size]
            out.pos = pos + padded
            return
        out.flush()
        left = size
        abort = self.abort
        while left:
            if abort.is_set():
                raise Aborted("backup aborted")
            n = min(left, BUF_SIZE)
            got = _read_into(fd, out.mv[:n])
            if got < n:
                self._shrunk(path, size, size - left + got)
                out.buf[got:n] = bytes(n - got)
            left -= n
            if not left:
                pad = -size % BLOCK
                out.buf[n : n + pad] = _PAD[pad]
                n += pad
            out.pos = n
            out.flush()

    def _sparse_data(self, fd: int, path: bytes, chunks: list[tuple[int, int]]) -> None:
        out = self.out
        total = 0
        for off, length in chunks:
            left = length
            pos_in_file = off
            while left:
                if self.abort.is_set():
                    raise Aborted("backup aborted")
                if out.pos == BUF_SIZE:
                    out.flush()
                n = min(left, BUF_SIZE - out.pos)
                mv = out.mv[out.pos : out.pos + n]
                got = _pread_into(fd, mv, pos_in_file)
                if got < n:
                    mv[got:] = bytes(n - got)
                out.pos += n
                left -= n
                pos_in_file += n
            total += length
        out.put(_PAD[-total % BLOCK])

    def _shrunk(self, path: bytes, size: int, got: int) -> None:
        self.job.log(
            LogType.WARNING,
            f"{os.fsdecode(path)}: file shrank from {size} to {got} bytes, padded with zeros",
        )

    def _end(self) -> None:
        out = self.out
        out.put(_ZEROS + _ZEROS)
        rec = self.job.record_size if self.job.record_size > 0 else 10240
        pad = -out.offset % rec
        while pad:
            n = min(pad, BLOCK * 64)
            out.put(bytes(n))
            pad -= n
        out.flush()


def _read_into(fd: int, mv: memoryview) -> int:
    """Fill ``mv`` from ``fd``; returns fewer bytes only at end of file."""
    n = len(mv)
    got = os.readv(fd, [mv])
    if got == n or got == 0:
        return got
    while got < n:
        r = os.readv(fd, [mv[got:]])
        if r == 0:
            break
        got += r
    return got


def _pread_into(fd: int, mv: memoryview, offset: int) -> int:
    n = len(mv)
    got = 0
    while got < n:
        r = os.preadv(fd, [mv[got:]], offset + got)
        if r == 0:
            break
        got += r
    return got


def _data_map(fd: int, size: int) -> list[tuple[int, int]] | None:
    """The data runs of a file with holes, or None when it has none worth recording."""
    chunks: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            chunks.append((start, end - start))
            pos = end
    except OSError:
        return None
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    if sum(n for _, n in chunks) >= size:
        return None
    return chunks
