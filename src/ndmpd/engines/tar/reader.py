"""Pax / ustar / GNU stream -> files (through the safe extractor) or file history.

Spec tar-format.md §11.2. Reads our own streams and GNU tar's (pax with sparse 0.0/0.1/1.0,
GNU format with L/K long names and old ``S`` sparse members). Any damage to the stream is a
:class:`FormatError` raised after what came before it has been restored; a problem with one
entry (unsafe name, unwritable file) is logged, counted and skipped.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from types import ModuleType

from ndmpd.engines import native
from ndmpd.engines.base import Aborted, EngineError, RecoverJob, RecoverResult, Selection
from ndmpd.engines.extract import Extractor, FileOut, Meta, UnsafePath, match_selection
from ndmpd.engines.tar import format as fmt
from ndmpd.engines.tar.format import BLOCK, NS, ZERO_BLOCK, FormatError
from ndmpd.protocol.constants import LogType, RecoveryStatus

BUF_SIZE = 4 * 1024 * 1024
MAX_META = 64 * 1024 * 1024  # largest x/g/L/K member we hold in memory

_TYPES = {
    fmt.REG: stat.S_IFREG,
    fmt.AREG: stat.S_IFREG,
    fmt.CONT: stat.S_IFREG,
    fmt.GNU_SPARSE: stat.S_IFREG,
    fmt.LNK: stat.S_IFREG,
    fmt.SYM: stat.S_IFLNK,
    fmt.CHR: stat.S_IFCHR,
    fmt.BLK: stat.S_IFBLK,
    fmt.DIR: stat.S_IFDIR,
    b"D": stat.S_IFDIR,  # GNU incremental dumpdir: a directory with a name list as data
    fmt.FIFO: stat.S_IFIFO,
}


class _Input:
    """Large reads from the source into one reused buffer; tracks the stream offset."""

    def __init__(self, source: object, abort: object) -> None:
        self.readinto = source.readinto  # type: ignore[attr-defined]
        self.abort = abort
        self.buf = bytearray(BUF_SIZE)
        self.mv = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.base = 0  # stream offset of buf[0]

    @property
    def offset(self) -> int:
        return self.base + self.start

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available; False at end of stream."""
        if self.start:
            n = self.end - self.start
            self.buf[:n] = self.mv[self.start : self.end]
            self.base += self.start
            self.start, self.end = 0, n
        while self.end < need:
            if self.abort.is_set():  # type: ignore[attr-defined]
                raise Aborted("recovery aborted")
            got = self.readinto(self.mv[self.end :])
            if not got:
                return False
            self.end += got
        return True

    def block(self) -> bytes | None:
        """The next 512-byte block; None at a clean end of stream."""
        if self.end - self.start < BLOCK and not self._fill(BLOCK):
            if self.end == self.start:
                return None
            raise FormatError(f"stream truncated inside a header at offset {self.offset}")
        b = bytes(self.mv[self.start : self.start + BLOCK])
        self.start += BLOCK
        return b

    def read(self, n: int) -> bytes:
        if n > MAX_META:
            raise FormatError(f"metadata member of {n} bytes at offset {self.offset}")
        if self.end - self.start < n and not self._fill(n):
            raise FormatError(f"stream truncated at offset {self.offset + self.end - self.start}")
        b = bytes(self.mv[self.start : self.start + n])
        self.start += n
        return b

    def copy(self, n: int, write: Callable[[memoryview], None] | None) -> None:
        """Pass ``n`` bytes to ``write`` (None = skip them) straight from the buffer."""
        while n:
            avail = self.end - self.start
            if not avail:
                if not self._fill(1):
                    raise FormatError(f"stream truncated at offset {self.offset}")
                avail = self.end
            take = avail if avail < n else n
            if write is not None:
                write(self.mv[self.start : self.start + take])
            self.start += take
            n -= take

    def drain(self) -> None:
        """Read to the end of the stream (record padding after the end blocks)."""
        self.base += self.end
        self.start = self.end = 0
        while True:
            got = self.readinto(self.mv)
            if not got:
                return
            self.base += got


def _norm(name: bytes) -> bytes | None:
    """The member name relative to the root (b"" = root); None if it has ``..``."""
    parts = [p for p in name.split(b"/") if p and p != b"."]
    if b".." in parts:
        return None
    return b"/".join(parts)


class _Member:
    __slots__ = (
        "atime_ns",
        "ctime_ns",
        "gid",
        "linkname",
        "mode",
        "mtime_ns",
        "name",
        "rdev",
        "realsize",
        "size",
        "sparse",
        "typeflag",
        "uid",
        "xattrs",
    )


class TarReader:
    """One recovery (or file-history listing) run."""

    def __init__(self, job: RecoverJob) -> None:
        self.job = job
        self.inp = _Input(job.source, job.abort)
        self.history = job.history
        self.selections = list(job.selections)
        self.dest_root = job.destination.rstrip(b"/") or b"/"
        self.ex: Extractor | None = None
        if self.history is None:
            self.ex = Extractor(job.confine, overwrite=job.overwrite, log=job.log)
        self.result = RecoverResult()
        self.sel_state: dict[str, RecoveryStatus | None] = {}  # None = not seen yet
        for s in self.selections:
            self.sel_state.setdefault(s.name, None)
        self.globals: dict[bytes, bytes] = {}
        self.warned_abs = False
        # The C fast path restores runs of plain small files; a full restore only.
        self.fast = native.speedups if self.ex is not None and not self.selections else None
        self.fast_dirs: dict[bytes, bytes | None] = {}  # member dir -> destination dir

    # -- driver ---------------------------------------------------------------------------

    def run(self) -> RecoverResult:
        try:
            self._loop()
        except EngineError as e:
            if self.ex is not None:
                self.ex.abandon()
                self.ex.finish()
            if not isinstance(e, Aborted):
                self.job.log(LogType.ERROR, str(e))
            self._report(RecoveryStatus.FAILED_IO_ERROR)
            self.result.bytes_read = self.inp.offset
            raise
        except BaseException:
            if self.ex is not None:
                self.ex.abandon()
            raise
        if self.ex is not None:
            self.ex.finish()
        self._report(RecoveryStatus.FAILED_NOT_FOUND)
        self.result.bytes_read = self.inp.offset
        return self.result

    def _report(self, unseen: RecoveryStatus) -> None:
        for s in self.selections:
            if s.name in self.sel_state:
                st = self.sel_state.pop(s.name)
                self.job.file_result(s.name, unseen if st is None else st)

    def _loop(self) -> None:
        inp = self.inp
        abort = self.job.abort
        pending: list[tuple[bytes, bytes]] = []
        longname: bytes | None = None
        longlink: bytes | None = None
        first = -1
        fast = self.fast
        while True:
            if abort.is_set():
                raise Aborted("recovery aborted")
            if (
                fast is not None
                and not pending
                and longname is None
                and longlink is None
                and not self.globals
                and self._fast_run(fast)
            ):
                continue
            off = inp.offset
            blk = inp.block()
            if blk is None:
                if pending or longname is not None or longlink is not None:
                    raise FormatError(f"stream ends after an extended header at offset {off}")
                return
            if blk == ZERO_BLOCK:
                if pending or longname is not None or longlink is not None:
                    raise FormatError(f"end of archive after an extended header at offset {off}")
                inp.drain()
                return
            if not fmt.checksum_ok(blk):
                raise FormatError(f"bad header checksum at offset {off}")
            if first < 0:
                first = off
            typeflag = blk[156:157]
            size = fmt.parse_number(blk[124:136])
            if typeflag in (fmt.XHD, fmt.XGL, fmt.GNU_LONGNAME, fmt.GNU_LONGLINK):
                data = inp.read(size)
                inp.copy(-size % BLOCK, None)
                if typeflag == fmt.XHD:
                    pending.extend(fmt.parse_records(data))
                elif typeflag == fmt.XGL:
                    self.globals.update(fmt.parse_records(data))
                    first = -1
                elif typeflag == fmt.GNU_LONGNAME:
                    longname = data.split(b"\0", 1)[0]
                else:
                    longlink = data.split(b"\0", 1)[0]
                continue
            m = self._parse(blk, typeflag, size, pending, longname, longlink, off)
            self._member(m, first)
            pending = []
            longname = longlink = None
            first = -1

    # -- the C fast path ------------------------------------------------------------------

    def _fast_run(self, fast: ModuleType) -> bool:
        """Restore the plain regular files at the current position in C; False when the
        next member is anything else (the Python loop then takes that one member)."""
        inp = self.inp
        lo = inp.start
        members, pos, status, need = fast.tar_scan(
            inp.buf, lo, inp.end, native.SCAN_BATCH, native.FAST_MAX_SIZE
        )
        if not members:
            if status == native.NEED and need <= BUF_SIZE // 2:
                return inp._fill(need)
            return False
        ex = self.ex
        assert ex is not None
        data = bytes(inp.mv[lo:pos])  # the batch's own copy: the buffer moves on meanwhile
        files: list[tuple] = []
        tags: list[tuple] = []
        dirs = self.fast_dirs
        root = self.dest_root
        for m in members:
            name, mode, uid, gid, at, mt, off, size = m
            d, _, base = name.rpartition(b"/")
            dest_dir = dirs.get(d, b"")
            if dest_dir == b"":
                rel = _norm(d) if not d.startswith(b"/") else None
                dest_dir = dirs[d] = None if rel is None else (root + b"/" + rel if rel else root)
            fd = -1
            if dest_dir is not None and base != b"." and base != b"..":
                known = ex.known_dir_fd(dest_dir)
                if known is not None:
                    fd = known
                else:
                    if files:  # queue them first: making this directory must see them
                        ex.submit(data, files, tags, self._fast_failed, [t[1] for t in tags])
                        files, tags = [], []
                    try:
                        fd = ex.dir_fd(dest_dir)
                    except (EngineError, OSError):
                        fd = -1
            if fd < 0:  # the Python path reports what is wrong with it, in order
                if files:
                    ex.submit(data, files, tags, self._fast_failed, [t[1] for t in tags])
                    files, tags = [], []
                self._fast_fallback(m, None, data[off - lo : off - lo + size])
                continue
            files.append((fd, base, off - lo, size, mode, uid, gid, at, mt))
            tags.append((m, dest_dir + b"/" + base))
        if files:
            ex.submit(data, files, tags, self._fast_failed, [t[1] for t in tags])
        self.result.entries += len(members)
        inp.start = pos
        return True

    def _fast_failed(self, tag: object, data: bytes, file: tuple) -> None:
        m, dest = tag  # type: ignore[misc]
        off, size = file[2], file[3]
        self._fast_fallback(m, dest, memoryview(data)[off : off + size])

    def _fast_fallback(self, m: tuple, dest: bytes | None, data: bytes | memoryview) -> None:
        """One member of a fast run through the Python path, reporting failures as usual.
        ``dest`` None: work it out from the name, as :meth:`_member` does."""
        name, mode, uid, gid, at, mt, _off, _size = m
        ex = self.ex
        assert ex is not None
        if dest is None:
            if name.startswith(b"/") and not self.warned_abs:
                self.warned_abs = True
                self.job.log(LogType.WARNING, "removing leading '/' from member names")
            rel = _norm(name)
            if rel is None:
                self._fail(
                    None,
                    f"{name!r}: member name contains '..', skipped",
                    RecoveryStatus.FAILED_PERMISSION,
                )
                return
            dest = self.dest_root + b"/" + rel if rel else self.dest_root
        ex.sync()  # (a no-op when called from within sync)
        meta = Meta(stat.S_IFREG | mode, uid, gid, mt, None if at < 0 else at)
        with self._outcome(None, dest):
            ex.restore_file(dest, meta, data)

    # -- headers --------------------------------------------------------------------------

    def _parse(
        self,
        blk: bytes,
        typeflag: bytes,
        size: int,
        pending: list[tuple[bytes, bytes]],
        longname: bytes | None,
        longlink: bytes | None,
        off: int,
    ) -> _Member:
        if self.globals:
            x = dict(self.globals)
            x.update(pending)
        else:
            x = dict(pending)
        m = _Member()
        m.typeflag = typeflag
        magic = blk[257:265]
        if b"path" in x:
            name = x[b"path"]
        elif longname is not None:
            name = longname
        else:
            name = fmt.cstr(blk[0:100])
            prefix = fmt.cstr(blk[345:500])
            if magic[:6] == b"ustar\0" and prefix:
                name = prefix + b"/" + name
        m.linkname = x.get(
            b"linkpath", longlink if longlink is not None else fmt.cstr(blk[157:257])
        )
        m.size = fmt.parse_decimal(x[b"size"], "size") if b"size" in x else size
        if m.size < 0:
            raise FormatError(f"negative size at offset {off}")
        m.mode = fmt.parse_number(blk[100:108]) & 0o7777
        m.uid = (
            fmt.parse_decimal(x[b"uid"], "uid") if b"uid" in x else fmt.parse_number(blk[108:116])
        )
        m.gid = (
            fmt.parse_decimal(x[b"gid"], "gid") if b"gid" in x else fmt.parse_number(blk[116:124])
        )
        if b"mtime" in x:
            m.mtime_ns = fmt.parse_time(x[b"mtime"])
        else:
            m.mtime_ns = fmt.parse_number(blk[136:148]) * NS
        m.atime_ns = fmt.parse_time(x[b"atime"]) if b"atime" in x else None
        m.ctime_ns = fmt.parse_time(x[b"ctime"]) if b"ctime" in x else m.mtime_ns
        m.rdev = 0
        if typeflag in (fmt.CHR, fmt.BLK):
            maj, mnr = fmt.parse_number(blk[329:337]), fmt.parse_number(blk[337:345])
            try:
                m.rdev = os.makedev(maj, mnr)
            except (OverflowError, ValueError):
                raise FormatError(f"bad device number at offset {off}") from None
        xattrs = [(k[13:], v) for k, v in x.items() if k.startswith(b"SCHILY.xattr.")]
        have = {k for k, _ in xattrs}
        for key, xname in (
            (b"SCHILY.acl.access", b"system.posix_acl_access"),
            (b"SCHILY.acl.default", b"system.posix_acl_default"),
        ):
            if key in x and xname not in have and x[key].strip():
                try:
                    xattrs.append((xname, fmt.acl_from_text(x[key])))
                except FormatError as e:
                    self.job.log(LogType.WARNING, f"{name!r}: {e}")
        m.xattrs = xattrs
        m.sparse = None
        m.realsize = m.size
        if typeflag == fmt.GNU_SPARSE:
            m.sparse = self._old_gnu_sparse(blk, m)
        elif b"GNU.sparse.major" in x or b"GNU.sparse.map" in x or b"GNU.sparse.offset" in x:
            name = self._pax_sparse(x, pending, m, name)
        m.name = name
        return m

    def _pax_sparse(
        self, x: dict[bytes, bytes], pending: list[tuple[bytes, bytes]], m: _Member, name: bytes
    ) -> bytes:
        if b"GNU.sparse.major" in x:
            if x[b"GNU.sparse.major"] != b"1":
                raise FormatError(f"unknown GNU sparse version {x[b'GNU.sparse.major']!r}")
            m.realsize = fmt.parse_decimal(x.get(b"GNU.sparse.realsize", b"x"), "realsize")
            m.sparse = "1.0"
            return x.get(b"GNU.sparse.name", name)
        m.realsize = fmt.parse_decimal(x.get(b"GNU.sparse.size", b"x"), "sparse size")
        if b"GNU.sparse.map" in x:
            nums = [fmt.parse_decimal(v, "sparse map") for v in x[b"GNU.sparse.map"].split(b",")]
            if len(nums) % 2:
                raise FormatError("odd sparse map")
            m.sparse = list(zip(nums[0::2], nums[1::2], strict=True))
            return x.get(b"GNU.sparse.name", name)
        chunks: list[tuple[int, int]] = []
        o: int | None = None
        for k, v in pending:
            if k == b"GNU.sparse.offset":
                o = fmt.parse_decimal(v, "sparse offset")
            elif k == b"GNU.sparse.numbytes":
                if o is None:
                    raise FormatError("sparse numbytes without offset")
                chunks.append((o, fmt.parse_decimal(v, "sparse numbytes")))
                o = None
        m.sparse = chunks
        return x.get(b"GNU.sparse.name", name)

    def _old_gnu_sparse(self, blk: bytes, m: _Member) -> list[tuple[int, int]]:
        chunks: list[tuple[int, int]] = []

        def entries(b: bytes, start: int, count: int) -> None:
            for i in range(count):
                e = b[start + 24 * i : start + 24 * i + 24]
                if e[0] == 0:
                    return
                chunks.append((fmt.parse_number(e[:12]), fmt.parse_number(e[12:])))

        entries(blk, 386, 4)
        m.realsize = fmt.parse_number(blk[483:495])
        extended = blk[482]
        while extended:
            ext = self.inp.block()
            if ext is None:
                raise FormatError("stream truncated in a GNU sparse header")
            entries(ext, 0, 21)
            extended = ext[504]
        return chunks

    # -- members --------------------------------------------------------------------------

    def _member(self, m: _Member, first: int) -> None:
        inp = self.inp
        data_size = (
            m.size
            if m.typeflag not in (fmt.LNK, fmt.SYM, fmt.DIR, fmt.CHR, fmt.BLK, fmt.FIFO)
            else 0
        )
        if m.typeflag == b"D":
            data_size = m.size
        pad = -data_size % BLOCK
        ifmt = _TYPES.get(m.typeflag)
        if m.name.startswith(b"/") and not self.warned_abs:
            self.warned_abs = True
            self.job.log(LogType.WARNING, "removing leading '/' from member names")
        rel = _norm(m.name)
        self.result.entries += 1
        if ifmt is None:
            self.job.log(
                LogType.WARNING, f"{m.name!r}: unknown member type {m.typeflag!r}, skipped"
            )
            inp.copy(data_size + pad, None)
            return
        if rel is None:
            self._fail(
                None,
                f"{m.name!r}: member name contains '..', skipped",
                RecoveryStatus.FAILED_PERMISSION,
            )
            inp.copy(data_size + pad, None)
            return
        if self.history is not None:
            self.history.add_file(b"/" + rel, self._stat(m, ifmt), 0, first)
            inp.copy(data_size + pad, None)
            return
        sel: Selection | None = None
        if self.selections:
            sel = match_selection(rel, self.selections)
            if sel is None:
                inp.copy(data_size + pad, None)
                return
            dest = self._dest(rel, sel)
        else:
            dest = self.dest_root + b"/" + rel if rel else self.dest_root
        ex = self.ex
        assert ex is not None
        # queued files first, so that their outcome is not counted as this member's
        if ifmt == stat.S_IFDIR:
            ex.sync_for_dir(dest)  # (a directory waits only when it must: see mkdir)
        else:
            ex.sync()
        meta = Meta(ifmt | m.mode, m.uid, m.gid, m.mtime_ns, m.atime_ns, m.rdev, m.xattrs)
        with self._outcome(sel, dest):
            if m.typeflag == fmt.LNK:
                self._hardlink(m, dest)
            elif ifmt == stat.S_IFREG:
                out = ex.create_file(dest, meta)
                size, data_size = data_size, 0  # _file consumes the data, even when it fails
                self._file(out, m, size)
            elif ifmt == stat.S_IFDIR:
                ex.mkdir(dest, meta)
            elif ifmt == stat.S_IFLNK:
                ex.symlink(dest, m.linkname, meta)
            else:
                ex.special(dest, meta)
        inp.copy(data_size + pad, None)

    @contextlib.contextmanager
    def _outcome(self, sel: Selection | None, dest: bytes) -> Iterator[None]:
        """Create one entry: a failure is reported (and the stream goes on), a broken stream
        raises; an entry kept because overwrite is off counts as failed."""
        ex = self.ex
        assert ex is not None
        kept = len(ex.kept)
        try:
            yield
        except FormatError:
            raise
        except UnsafePath as e:
            self._fail(sel, str(e), RecoveryStatus.FAILED_PERMISSION)
        except EngineError as e:
            self._fail(sel, str(e), RecoveryStatus.FAILED_IO_ERROR)
        except OSError as e:
            self._fail(sel, f"{os.fsdecode(dest)}: {e.strerror}", RecoveryStatus.FAILED_IO_ERROR)
        else:
            if len(ex.kept) != kept:
                self._mark(sel, RecoveryStatus.FAILED_FILE_PATH_EXISTS)
                self.result.failed += 1
            else:
                self._mark(sel, RecoveryStatus.SUCCESSFUL)

    def _dest(self, rel: bytes, sel: Selection) -> bytes:
        orig = b"/".join(p for p in sel.original.split(b"/") if p and p != b".")
        rest = rel[len(orig) :].lstrip(b"/")
        return sel.destination.rstrip(b"/") + b"/" + rest if rest else sel.destination

    def _mark(self, sel: Selection | None, status: RecoveryStatus) -> None:
        if sel is None or sel.name not in self.sel_state:
            return
        cur = self.sel_state[sel.name]
        if cur is None or cur == RecoveryStatus.SUCCESSFUL:
            self.sel_state[sel.name] = status

    def _fail(self, sel: Selection | None, msg: str, status: RecoveryStatus) -> None:
        self.result.failed += 1
        self.job.log(LogType.WARNING, msg)
        self._mark(sel, status)

    def _hardlink(self, m: _Member, dest: bytes) -> None:
        target = _norm(m.linkname)
        if target is None:
            raise UnsafePath(f"hard link target contains '..': {m.linkname!r}")
        if self.selections:
            tsel = match_selection(target, self.selections)
            if tsel is None:
                raise EngineError(
                    f"{os.fsdecode(dest)}: hard link target {os.fsdecode(target)} was not "
                    "selected for restore; select it too"
                )
            tdest = self._dest(target, tsel)
        else:
            tdest = self.dest_root + b"/" + target
        assert self.ex is not None
        self.ex.hardlink(dest, tdest)

    def _file(self, out: FileOut, m: _Member, size: int) -> None:
        """Write a regular member's data (plain or sparse) and commit it.

        A failing write (disk full) drops the file but keeps reading past its data, so the
        stream stays in step and later members are still restored.
        """
        failed: list[EngineError] = []

        def write(mv: memoryview) -> None:
            if failed:
                return
            try:
                out.write(mv)
            except EngineError as e:
                failed.append(e)

        copy = self.inp.copy
        try:
            if m.sparse is None:
                copy(size, write)
            else:
                chunks = m.sparse
                total = 0
                if chunks == "1.0":
                    chunks, total = self._sparse_map_1_0(size)
                pos = 0
                for o, n in chunks:
                    if o < pos or o + n > m.realsize:
                        raise FormatError(f"{m.name!r}: bad sparse map entry ({o}, {n})")
                    total += n
                    if total > size:
                        raise FormatError(f"{m.name!r}: sparse map exceeds the member size")
                    if o > pos:
                        out.seek_hole(o - pos)
                    copy(n, write)
                    pos = o + n
                if total != size:
                    raise FormatError(f"{m.name!r}: sparse map does not match the member size")
        except BaseException:
            out.discard()
            raise
        if failed:
            out.discard()
            raise failed[0]
        out.commit(m.realsize)

    def _sparse_map_1_0(self, size: int) -> tuple[list[tuple[int, int]], int]:
        """The map at the start of a 1.0 member's data; returns it and the bytes it used."""
        text = b""
        used = 0
        while True:
            if used >= size:
                raise FormatError("sparse map runs past the member data")
            text += self.inp.read(BLOCK)
            used += BLOCK
            lines = text.split(b"\n")
            try:
                count = int(lines[0])
            except ValueError:
                raise FormatError("bad sparse map count") from None
            if count < 0 or count > size:
                raise FormatError("bad sparse map count")
            if len(lines) - 1 > 2 * count:  # every number is followed by a newline
                break
        nums = [fmt.parse_decimal(v, "sparse map") for v in lines[1 : 1 + 2 * count]]
        return list(zip(nums[0::2], nums[1::2], strict=True)), used

    def _stat(self, m: _Member, ifmt: int) -> os.stat_result:
        mt = m.mtime_ns
        at = m.atime_ns if m.atime_ns is not None else mt
        ct = m.ctime_ns
        return os.stat_result(
            (
                ifmt | m.mode,
                0,
                0,
                1,
                m.uid,
                m.gid,
                m.realsize if ifmt == stat.S_IFREG else 0,
                at // NS,
                mt // NS,
                ct // NS,
            ),
            {
                "st_atime": at / NS,
                "st_mtime": mt / NS,
                "st_ctime": ct / NS,
                "st_atime_ns": at,
                "st_mtime_ns": mt,
                "st_ctime_ns": ct,
                "st_rdev": m.rdev,
            },
        )
