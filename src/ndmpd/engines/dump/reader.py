"""Dump stream → files (spec dump-format.md §13), for our own streams and real Linux ``dump``.

All directories precede all files in a dump, so the whole name tree is known before the first
file's data arrives: files are then streamed straight to their final place through the shared
:class:`~ndmpd.engines.extract.Extractor`, which owns every confinement and atomicity rule.
Any invalid header stops the run (no resync): what came before is kept, the error is raised.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass, field
from types import ModuleType

from ndmpd.engines import native
from ndmpd.engines.base import Aborted, EngineError, RecoverJob, RecoverResult, Selection
from ndmpd.engines.dump import format as fmt
from ndmpd.engines.extract import Extractor, FileOut, Meta, map_selection, match_selection
from ndmpd.protocol.constants import LogType, RecoveryStatus

_BUF_SIZE = 4 << 20
_MAX_DIR = 256 << 20  # restore's own sanity limit for a directory's size
_MAX_SYMLINK = 4096
_S_IFMT = 0o170000
_BAD_NAMES = (b".", b"..")


class _StreamError(EngineError):
    """The stream itself is broken: the run stops here."""


class _Truncated(_StreamError):
    pass


class _Source:
    """Records from the stream, read with ``readinto`` in large chunks; views are short-lived."""

    __slots__ = ("_read", "buf", "end", "eof", "mv", "offset", "start")

    def __init__(self, job: RecoverJob) -> None:
        self._read = job.source.readinto
        self.buf = bytearray(_BUF_SIZE)
        self.mv = memoryview(self.buf)
        self.start = self.end = 0
        self.offset = 0  # stream offset of buf[start]
        self.eof = False

    def fill_to(self, need: int) -> bool:
        """At least ``need`` bytes from ``start`` in the buffer; False if the stream ends."""
        if self.end - self.start >= need:
            return True
        if need > _BUF_SIZE:
            return False
        avail = self.end - self.start
        if self.start:
            self.buf[:avail] = self.buf[self.start : self.end]
            self.start, self.end = 0, avail
        while self.end < need and not self.eof:
            n = self._read(self.mv[self.end :])
            if not n:
                self.eof = True
            else:
                self.end += n
        return self.end >= need

    def _fill(self) -> int:
        """At least one whole record available unless the stream ended; returns bytes ready."""
        avail = self.end - self.start
        if avail >= fmt.TP_BSIZE or self.eof:
            return avail
        if self.start:
            self.buf[:avail] = self.buf[self.start : self.end]
            self.start, self.end = 0, avail
        while self.end - self.start < fmt.TP_BSIZE and not self.eof:
            n = self._read(self.mv[self.end :])
            if not n:
                self.eof = True
            else:
                self.end += n
        return self.end - self.start

    def record(self) -> memoryview:
        if self._fill() < fmt.TP_BSIZE:
            raise _Truncated(f"truncated dump stream: it ends at record {self.offset >> 10}")
        s = self.start
        self.start = s + fmt.TP_BSIZE
        self.offset += fmt.TP_BSIZE
        return self.mv[s : s + fmt.TP_BSIZE]

    def chunks(self, n: int):
        """``n`` records as a few contiguous views, each valid until the next one is asked."""
        while n:
            avail = self._fill() >> 10
            if not avail:
                raise _Truncated(f"truncated dump stream: it ends at record {self.offset >> 10}")
            k = min(n, avail)
            s = self.start
            self.start = s + (k << 10)
            self.offset += k << 10
            n -= k
            yield self.mv[s : s + (k << 10)]

    def skip(self, n: int) -> None:
        for _ in self.chunks(n):
            pass


@dataclass
class _Dir:
    hdr: fmt.Header
    data: bytes
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    offset: int = 0


@dataclass
class _SelState:
    found: bool = False
    pending: int = 0
    failed: int = 0


def _runs(addr: bytes) -> list[tuple[int, int, bool]]:
    """``addr`` as runs ``(start, end, present)``."""
    out = []
    n = len(addr)
    k = 0
    while k < n:
        present = addr[k] != 0
        j = k + 1
        while j < n and (addr[j] != 0) == present:
            j += 1
        out.append((k, j, present))
        k = j
    return out


def _meta(h: fmt.Header) -> Meta:
    return Meta(
        mode=h.mode,
        uid=h.uid,
        gid=h.gid,
        mtime_ns=h.mtime * 1_000_000_000 + min(h.mtime_us, 999_999) * 1000,
        atime_ns=h.atime * 1_000_000_000 + min(h.atime_us, 999_999) * 1000,
        rdev=h.rdev,
    )


def _stat(h: fmt.Header) -> os.stat_result:
    """What file history wants, built from a header."""
    at = h.atime * 1_000_000_000 + h.atime_us * 1000
    mt = h.mtime * 1_000_000_000 + h.mtime_us * 1000
    return os.stat_result(
        (h.mode, h.inumber, 0, h.nlink, h.uid, h.gid, h.size, h.atime, h.mtime, h.mtime),
        {
            "st_atime": at / 1e9,
            "st_mtime": mt / 1e9,
            "st_ctime": mt / 1e9,
            "st_atime_ns": at,
            "st_mtime_ns": mt,
            "st_ctime_ns": mt,
            "st_rdev": h.rdev,
        },
    )


class DumpReader:
    """Restores (or lists, for RECOVER_FILEHIST) one dump stream."""

    def __init__(self, job: RecoverJob) -> None:
        self.job = job
        self.src = _Source(job)
        self.log = job.log
        self.hist = job.history
        self.result = RecoverResult()
        self.dirs: dict[int, _Dir] = {}
        self.names: dict[int, list[bytes]] = {}  # non-directory inode -> its paths
        self.tree_built = False
        self.sel = {s.name: _SelState() for s in job.selections}
        self.ex: Extractor | None = None
        self.pending: fmt.Header | None = None
        self.pending_off = 0
        # The C fast path restores runs of plain small files; a full restore only.
        self.fast = native.speedups if self.hist is None and not job.selections else None

    # -- headers ---------------------------------------------------------------------------

    def _next(self) -> tuple[fmt.Header, int]:
        if self.pending is not None:
            h, off = self.pending, self.pending_off
            self.pending = None
            return h, off
        off = self.src.offset
        rec = self.src.record()
        why = fmt.classify(rec)
        if why != "ok":
            raise _StreamError(f"corrupt dump stream: bad header ({why}) at record {off >> 10}")
        h = fmt.parse_header(rec)
        if h.ctype in (fmt.TS_INODE, fmt.TS_ADDR) and not 0 <= h.count <= fmt.TP_NINDIR:
            raise _StreamError(f"corrupt dump stream: c_count {h.count} at record {off >> 10}")
        return h, off

    def _push(self, h: fmt.Header, off: int) -> None:
        self.pending, self.pending_off = h, off

    def _check_volume(self) -> fmt.Header:
        try:
            rec = self.src.record()
        except _Truncated as exc:
            raise EngineError("not a dump stream: shorter than one record") from exc
        why = fmt.classify(rec)
        reasons = {
            "ufs2": "a FreeBSD UFS2 dump (not supported)",
            "old": "an old-format (pre-4.4BSD) dump (not supported)",
            "swapped": "a big-endian dump (not supported)",
            "magic": "not a dump stream (no dump magic in the first record)",
            "checksum": "a dump stream with a corrupt volume header (bad checksum)",
        }
        if why != "ok":
            raise EngineError(f"cannot restore: {reasons[why]}")
        h = fmt.parse_header(rec)
        if h.ctype != fmt.TS_TAPE:
            raise EngineError("cannot restore: the stream does not start with a volume header")
        if h.volume != 1:
            raise EngineError(f"cannot restore: the stream starts at volume {h.volume}, not 1")
        if h.flags & fmt.DR_COMPRESSED:
            raise EngineError("cannot restore: compressed dumps (dump -z/-j) are not supported")
        if not h.flags & fmt.DR_NEWINODEFMT:
            raise EngineError("cannot restore: old inode format dumps are not supported")
        return h

    # -- main loop -------------------------------------------------------------------------

    def run(self) -> RecoverResult:
        job = self.job
        vol = self._check_volume()
        self.log(
            LogType.NORMAL,
            f"restoring level {vol.level} dump of {vol.filesys.decode('utf-8', 'replace')} "
            f"(label {vol.label.decode('utf-8', 'replace')}, date {vol.date})",
        )
        if self.hist is None:
            self.ex = Extractor(job.confine, overwrite=job.overwrite, log=job.log)
        error: EngineError | None = None
        try:
            self._loop()
        except BaseException as exc:
            if isinstance(exc, EngineError) and not isinstance(exc, Aborted):
                error = exc  # stream damage: what came before is kept and reported
            else:
                # aborted, the data connection torn down (the DMA gone), or a bug: the
                # committer threads, directory descriptors and temporary files go with it
                if self.ex is not None:
                    self.ex.abandon()
                raise
        finally:
            self.result.bytes_read = self.src.offset
        if self.ex is not None:
            self.ex.abandon()
            try:
                self.ex.finish()
            except EngineError as exc:
                error = error or exc
        self._report(error is not None)
        if error is not None:
            self.log(LogType.ERROR, str(error))
            raise error
        return self.result

    def _loop(self) -> None:
        abort = self.job.abort
        fast = self.fast
        while True:
            if abort.is_set():
                raise Aborted("recovery aborted")
            if fast is not None and self.tree_built and self._unread() and self._fast_run(fast):
                continue
            h, off = self._next()
            t = h.ctype
            if t == fmt.TS_END:
                if not self.tree_built:
                    self._build_tree()
                return
            if t in (fmt.TS_CLRI, fmt.TS_BITS):
                self.src.skip(max(0, h.count))
                continue
            if t == fmt.TS_TAPE:
                raise EngineError("multi-volume dump streams are not supported")
            if t != fmt.TS_INODE:
                raise EngineError(f"unexpected header type {t} at record {off >> 10}")
            if h.flags & fmt.DR_EXTATTRIBUTES:
                self._read_ea(h)  # an EA record without its inode: read and drop
                self.log(LogType.WARNING, f"stray extended attributes for inode {h.inumber}")
                continue
            if h.mode & _S_IFMT == stat.S_IFDIR:
                if self.tree_built:
                    self.log(LogType.WARNING, f"directory inode {h.inumber} after files; ignored")
                    self._skip_inode(h)
                    continue
                self._read_dir(h, off)
                continue
            if not self.tree_built:
                self._build_tree()
            self._file(h, off)

    # -- inode bodies ----------------------------------------------------------------------

    def _headers(self, h: fmt.Header):
        """This inode's TS_INODE header and its TS_ADDR continuations, as (header, base block)."""
        base = 0
        yield h, base
        while True:
            n, off = self._next()
            if n.ctype != fmt.TS_ADDR or n.inumber != h.inumber:
                self._push(n, off)
                return
            base += fmt.TP_NINDIR
            yield n, base

    def _skip_inode(self, h: fmt.Header) -> None:
        for hh, _ in self._headers(h):
            self.src.skip(_present(hh))
        self._collect_eas(h)

    def _read_ea(self, h: fmt.Header) -> list[tuple[bytes, bytes]]:
        size = h.size
        data = bytearray()
        for c in self.src.chunks(_present(h)):
            data += c
        if size > fmt.XATTR_MAXSIZE or size > len(data):
            self.log(LogType.WARNING, f"inode {h.inumber}: EA record of {size} bytes dropped")
            return []
        try:
            return fmt.decode_ea(bytes(data[:size]))
        except fmt.EAError as exc:
            self.log(LogType.WARNING, f"inode {h.inumber}: extended attributes dropped: {exc}")
            return []

    def _collect_eas(self, h: fmt.Header) -> list[tuple[bytes, bytes]]:
        attrs: list[tuple[bytes, bytes]] = []
        while True:
            n, off = self._next()
            if (
                n.ctype != fmt.TS_INODE
                or not n.flags & fmt.DR_EXTATTRIBUTES
                or n.inumber != h.inumber
            ):
                self._push(n, off)
                return attrs
            attrs.extend(self._read_ea(n))

    def _read_small(self, h: fmt.Header, limit: int) -> bytes | None:
        """The first ``h.size`` bytes of an inode's data (holes as zeros); None if too large."""
        size = h.size
        keep = size <= limit
        data = bytearray()
        for hh, _base in self._headers(h):
            for k0, k1, present in _runs(hh.addr):
                if present:
                    for c in self.src.chunks(k1 - k0):
                        if keep and len(data) < size:
                            data += c
                elif keep and len(data) < size:
                    data += bytes((k1 - k0) << 10)
        if not keep:
            return None
        return bytes(data[:size]).ljust(size, b"\0")

    def _read_dir(self, h: fmt.Header, off: int) -> None:
        data = self._read_small(h, _MAX_DIR)
        if data is None:
            self.log(LogType.ERROR, f"directory inode {h.inumber} too large ({h.size} bytes)")
            data = b""
        d = _Dir(h, data, offset=off)
        d.xattrs = self._collect_eas(h)
        if h.inumber in self.dirs:
            self.log(LogType.WARNING, f"directory inode {h.inumber} twice; first kept")
            return
        self.dirs[h.inumber] = d

    # -- the tree --------------------------------------------------------------------------

    def _refuse(self, path: bytes, why: str) -> None:
        self.result.failed += 1
        self.log(LogType.WARNING, f"refused {os.fsdecode(path)!r}: {why}")
        st = self._sel_of(path)
        if st is not None:
            st.failed += 1

    def _sel_of(self, path: bytes) -> _SelState | None:
        if not self.job.selections:
            return None
        s = match_selection(path, self.job.selections)
        return self.sel[s.name] if s is not None else None

    def _build_tree(self) -> None:
        """Name every inode from the root down; create directories (or list them)."""
        self.tree_built = True
        hist = self.hist
        root = self.dirs.get(fmt.ROOTINO)
        if root is None:
            raise EngineError("corrupt dump stream: the root directory (inode 2) is not on tape")
        paths: dict[int, bytes] = {fmt.ROOTINO: b""}
        queue = deque([fmt.ROOTINO])
        if hist is not None:
            hist.add_dir(b".", fmt.ROOTINO, fmt.ROOTINO)
            hist.add_dir(b"..", fmt.ROOTINO, fmt.ROOTINO)
        order = [fmt.ROOTINO]
        while queue:
            dino = queue.popleft()
            d = self.dirs[dino]
            prefix = paths[dino]
            if hist is not None and dino != fmt.ROOTINO:
                hist.add_dir(b".", dino, dino)
                parent = next((i for i, _, n in fmt.iter_dir(d.data) if n == b".."), fmt.ROOTINO)
                hist.add_dir(b"..", parent, dino)
            for ino, _dtype, name in fmt.iter_dir(d.data):
                if name in _BAD_NAMES:
                    continue
                path = prefix + b"/" + name if prefix else name
                if b"/" in name or b"\0" in name:
                    self._refuse(path, "name contains '/' or NUL")
                    continue
                if ino in self.dirs:
                    if ino in paths:
                        self._refuse(path, "directory linked twice")
                        continue
                    paths[ino] = path
                    queue.append(ino)
                    order.append(ino)
                else:
                    self.names.setdefault(ino, []).append(path)
                if hist is not None:
                    hist.add_dir(name, ino, dino)
        if hist is not None:
            for dino in sorted(order):
                d = self.dirs[dino]
                hist.add_node(_stat(d.hdr), dino, d.offset)
                self.result.entries += 1
            return
        self._mark_selections(paths)
        assert self.ex is not None
        for dino in order:
            dest = map_selection(paths[dino], self.job.selections, self.job.destination)
            if dest is None:
                continue
            d = self.dirs[dino]
            meta = _meta(d.hdr)
            meta.xattrs = d.xattrs
            try:
                self.ex.mkdir(dest, meta)
                self.result.entries += 1
            except EngineError as exc:
                self._refuse(paths[dino], str(exc))
        self.dirs = {}  # the directory data is no longer needed

    def _mark_selections(self, dir_paths: dict[int, bytes]) -> None:
        if not self.job.selections:
            return
        wanted: dict[bytes, list[Selection]] = {}
        for s in self.job.selections:
            norm = b"/".join(p for p in s.original.split(b"/") if p and p != b".")
            wanted.setdefault(norm, []).append(s)
        for path in (*dir_paths.values(), *(p for ps in self.names.values() for p in ps)):
            for s in wanted.get(path, ()):
                self.sel[s.name].found = True
        for paths in self.names.values():
            for p in paths:
                st = self._sel_of(p)
                if st is not None:
                    st.pending += 1

    # -- files -----------------------------------------------------------------------------

    def _file(self, h: fmt.Header, off: int) -> None:
        paths = self.names.pop(h.inumber, None)
        if self.hist is not None:
            self._skip_inode(h)
            if paths is not None:
                self.hist.add_node(_stat(h), h.inumber, off)
                self.result.entries += 1
            return
        targets: list[tuple[bytes, bytes]] = []
        for p in paths or ():
            dest = map_selection(p, self.job.selections, self.job.destination)
            if dest is not None:
                targets.append((p, dest))
        if not targets:
            self._skip_inode(h)
            return
        fmode = h.mode & _S_IFMT
        meta = _meta(h)
        ex = self.ex
        assert ex is not None
        first_path, first = targets[0]
        ok = False
        try:
            if fmode == stat.S_IFREG:
                ok = self._regular(h, first_path, first, meta)
            elif fmode == stat.S_IFLNK:
                target = self._read_small(h, _MAX_SYMLINK)
                meta.xattrs = self._collect_eas(h)
                if target is None:
                    self._refuse(first_path, f"symlink target of {h.size} bytes")
                else:
                    ex.symlink(first, target.split(b"\0", 1)[0], meta)
                    ok = True
            elif fmode in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
                self._skip_inode_data(h)
                meta.xattrs = self._collect_eas(h)
                ex.special(first, meta)
                ok = True
            else:
                self._skip_inode(h)
                self._refuse(first_path, f"unknown file type {fmode:#o}")
        except (_StreamError, Aborted):
            raise
        except EngineError as exc:
            self._refuse(first_path, str(exc))
        self._done(first_path, ok)
        for p, dest in targets[1:]:
            if not ok:
                self._refuse(p, "its first link could not be restored")
                self._done(p, False)
                continue
            try:
                ex.hardlink(dest, first)
                self._done(p, True)
            except EngineError as exc:
                self._refuse(p, str(exc))
                self._done(p, False)

    def _unread(self) -> bool:
        """Give a pushed-back header back to the buffer, so the C scan sees it; False when
        it is no longer there."""
        if self.pending is None:
            return True
        src = self.src
        if src.start < fmt.TP_BSIZE or src.offset - fmt.TP_BSIZE != self.pending_off:
            return False
        src.start -= fmt.TP_BSIZE
        src.offset -= fmt.TP_BSIZE
        self.pending = None
        return True

    def _fast_run(self, fast: ModuleType) -> bool:
        """Restore the plain regular files at the current position in C; False when the
        next inode is anything else (the Python loop then takes that one inode)."""
        src = self.src
        lo = src.start
        inodes, pos, status, need = fast.dump_scan(src.buf, lo, src.end, native.SCAN_BATCH)
        ex = self.ex
        assert ex is not None
        names = self.names
        dest_root = self.job.destination.rstrip(b"/") or b"/"
        files: list[tuple] = []
        tags: list[tuple] = []
        stop = pos
        for ino, mode, uid, gid, at, mt, off, size, hoff in inodes:
            paths = names.get(ino)
            if paths is None or len(paths) != 1:
                stop = hoff  # unnamed or hard-linked: the Python path decides
                break
            path = paths[0]
            dest = dest_root + b"/" + path
            d, _, base = dest.rpartition(b"/")
            known = ex.known_dir_fd(d)
            if known is not None:
                fd = known
            else:
                if files:  # making a directory must see the files before it: next run
                    stop = hoff
                    break
                try:
                    fd = ex.dir_fd(d)
                except (EngineError, OSError):
                    stop = hoff
                    break
            del names[ino]
            files.append((fd, base, off - lo, size, mode, uid, gid, at, mt))
            tags.append((path, dest))
        if not files:
            if status == native.NEED and not inodes and need <= _BUF_SIZE // 2:
                return src.fill_to(need)
            return False
        ex.submit(bytes(src.mv[lo:stop]), files, tags, self._fast_failed, [t[1] for t in tags])
        self.result.entries += len(files)
        src.offset += stop - lo
        src.start = stop
        return True

    def _fast_failed(self, tag: object, data: bytes, file: tuple) -> None:
        """A file the C path could not create: the Python path restores or reports it."""
        path, dest = tag  # type: ignore[misc]
        _fd, _base, off, size, mode, uid, gid, at, mt = file
        self.result.entries -= 1
        try:
            self.ex.restore_file(dest, Meta(mode, uid, gid, mt, at), data[off : off + size])  # type: ignore[union-attr]
            self.result.entries += 1
        except EngineError as exc:
            self._refuse(path, str(exc))

    def _done(self, path: bytes, ok: bool) -> None:
        if ok:
            self.result.entries += 1
        st = self._sel_of(path)
        if st is not None:
            st.pending -= 1

    def _skip_inode_data(self, h: fmt.Header) -> None:
        for hh, _ in self._headers(h):
            self.src.skip(_present(hh))

    def _regular(self, h: fmt.Header, path: bytes, dest: bytes, meta: Meta) -> bool:
        """Stream one regular file to ``dest``; True when it was committed."""
        size = h.size
        out: FileOut | None = None
        why = ""
        try:
            out = self.ex.create_file(dest, meta)  # type: ignore[union-attr]
        except EngineError as exc:
            why = str(exc)
        pos = 0  # file offset of the next block
        for hh, _base in self._headers(h):
            for k0, k1, present in _runs(hh.addr):
                nbytes = (k1 - k0) << 10
                if present:
                    for c in self.src.chunks(k1 - k0):
                        if out is not None and pos < size:
                            take = min(len(c), size - pos)
                            try:
                                out.write(c[:take] if take < len(c) else c)
                            except EngineError as exc:
                                why, out = str(exc), None
                        pos += len(c)
                else:
                    if out is not None and pos < size:
                        out.seek_hole(min(nbytes, size - pos))
                    pos += nbytes
        attrs = self._collect_eas(h)
        if out is None:
            self._refuse(path, why)
            return False
        meta.xattrs = attrs
        try:
            out.commit(size)
        except EngineError as exc:
            self._refuse(path, str(exc))
            return False
        return True

    # -- results ---------------------------------------------------------------------------

    def _report(self, broken: bool) -> None:
        job = self.job
        for s in job.selections:
            st = self.sel[s.name]
            if not st.found:
                if not self.tree_built:
                    status = RecoveryStatus.FAILED_UNDEFINED_ERROR
                else:
                    status = RecoveryStatus.FAILED_NOT_FOUND
            elif st.failed:
                status = RecoveryStatus.FAILED_UNDEFINED_ERROR
            elif st.pending > 0 or (broken and not self.tree_built):
                status = RecoveryStatus.FAILED_IO_ERROR
            else:
                status = RecoveryStatus.SUCCESSFUL
            job.file_result(s.name, status)


def _present(h: fmt.Header) -> int:
    """Data records that follow one TS_INODE/TS_ADDR header."""
    if h.flags & fmt.DR_EXTATTRIBUTES:
        return h.count
    return len(h.addr) - h.addr.count(0)
