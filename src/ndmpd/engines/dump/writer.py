"""Directory tree → dump stream (spec dump-format.md §12), level 0.

Two passes. The scan walks the tree breadth-first with ``lstat`` and numbers every directory
and distinct non-directory densely from 2 as it meets them, encoding each directory's
``struct direct`` data at once: that encoded data is the only per-entry memory kept (names
are read back from it in the second pass), so memory grows with the number of names but
never with file contents. Breadth-first order makes directory numbers ascend in scan order,
and non-directory numbers ascend in the order the second pass meets them, which is exactly
the order the stream needs.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from types import ModuleType

from ndmpd.engines import native
from ndmpd.engines.base import Aborted, BackupJob, EngineError, EnvError, write_batch
from ndmpd.engines.dump import format as fmt
from ndmpd.protocol.constants import LogType

FS_IOC_GETFLAGS = 0x80086601
_BUF_SIZE = 4 << 20
_CHUNK = fmt.TP_NINDIR * fmt.TP_BSIZE  # file bytes one header describes (512 KiB)
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_S_IFMT = 0o170000
_S_IFDIR = stat.S_IFDIR
_S_IFREG = stat.S_IFREG
_S_IFLNK = stat.S_IFLNK
_ONES = b"\x01" * fmt.TP_NINDIR
_FS_ENC = sys.getfilesystemencoding()  # os.fsencode without its Python-level call
_FS_ERR = sys.getfilesystemencodeerrors()
_ZEROS = bytes(_CHUNK)


class _Out:
    """Batches records into one large reused buffer; knows the stream offset."""

    __slots__ = ("_abort", "_write", "batch", "buf", "flushed", "mv", "pos")

    def __init__(self, job: BackupJob) -> None:
        self.batch = write_batch(job.sink, _BUF_SIZE)  # see tar.writer.write_batch
        self.buf = bytearray(_BUF_SIZE)
        self.mv = memoryview(self.buf)
        self.pos = 0
        self.flushed = 0
        self._write = job.sink.write
        self._abort = job.abort

    @property
    def offset(self) -> int:
        return self.flushed + self.pos

    def room(self, n: int) -> None:
        """Make sure ``n`` bytes fit at ``pos`` (``n`` ≤ the buffer size)."""
        if self.pos + n > _BUF_SIZE:
            self.flush()

    def flush(self) -> None:
        if self._abort.is_set():
            raise Aborted("backup aborted")
        if self.pos:
            self._write(self.mv[: self.pos])
            self.flushed += self.pos
            self.pos = 0


class _Dir:
    """One directory found by the scan."""

    __slots__ = ("data", "ino", "nsub", "parent", "rel")

    def __init__(self, rel: bytes, ino: int, parent: int) -> None:
        self.rel = rel
        self.ino = ino
        self.parent = parent
        self.data = b""
        self.nsub = 0


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Data ranges of a file via SEEK_DATA/SEEK_HOLE; the whole file when unsupported."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            yield pos, size
            return
        if start >= size:
            return
        try:
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError:
            end = size
        if end <= start:
            end = size
        yield start, end
        pos = end


class DumpWriter:
    """Writes one level-0 dump stream for ``job``."""

    def __init__(self, job: BackupJob) -> None:
        level = job.env.get("LEVEL", "0").strip() or "0"
        if level != "0":
            raise EnvError(f"LEVEL={level}: only level-0 dumps are supported")
        if job.record_size <= 0 or job.record_size % fmt.TP_BSIZE:
            raise EnvError(f"record size {job.record_size} is not a multiple of 1024")
        self.job = job
        self.ntrec = job.record_size // fmt.TP_BSIZE
        self.log = job.log
        self.hist = job.history
        self.abort = job.abort
        self.dirs: list[_Dir] = []
        self.links: dict[tuple[int, int], int] = {}
        self.next_ino = fmt.ROOTINO
        self.no_flags: set[int] = set()
        self._fbuf = bytearray(8)  # FS_IOC_GETFLAGS result
        self._o_read = _O_READ | _O_NOATIME
        self.fast = native.speedups
        self._tmpl: bytearray | None = None  # the volume's header template for the C path
        self.warnings = 0
        self.date = int(time.time())
        self._excl = [os.fsdecode(p) for p in job.excludes]
        self._sel, self._anc = self._files()

    # -- selection -------------------------------------------------------------------------

    def _files(self) -> tuple[set[bytes] | None, set[bytes]]:
        """FILES as a set of selected relative paths plus the set of their ancestors."""
        files = [f.strip(b"/") for f in self.job.files]
        if not files or any(f in (b"", b".") for f in files):
            return None, set()
        sel: set[bytes] = set()
        anc: set[bytes] = set()
        for f in files:
            parts = [p for p in f.split(b"/") if p and p != b"."]
            if b".." in parts:
                raise EnvError(f"FILES entry {os.fsdecode(f)!r} leaves the backup root")
            sel.add(b"/".join(parts))
            for i in range(1, len(parts)):
                anc.add(b"/".join(parts[:i]))
        return sel, anc

    def _excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self._excl)

    def _warn(self, msg: str) -> None:
        self.warnings += 1
        self.log(LogType.WARNING, msg)

    # -- pass 1 ----------------------------------------------------------------------------

    def _new_ino(self) -> int:
        n = self.next_ino
        self.next_ino = n + 1
        return n

    def _open_dir(self, root_fd: int, rel: bytes) -> int:
        if not rel:
            return os.dup(root_fd)
        if len(rel) < 3800:
            return os.open(rel, _O_DIR, dir_fd=root_fd)
        fd = os.dup(root_fd)
        try:
            for part in rel.split(b"/"):
                nfd = os.open(part, _O_DIR, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def scan(self, root_fd: int) -> None:
        root = _Dir(b"", self._new_ino(), fmt.ROOTINO)
        self.dirs.append(root)
        hist = self.hist
        if hist is not None:
            hist.add_dir(b".", root.ino, root.ino)
            hist.add_dir(b"..", root.ino, root.ino)
        sel, anc = self._sel, self._anc
        excl = self._excl
        i = 0
        while i < len(self.dirs):
            d = self.dirs[i]
            i += 1
            if self.abort.is_set():
                raise Aborted("backup aborted")
            enc = fmt.DirEncoder(d.ino, d.parent)
            entries: list[tuple[bytes, int]] = []
            try:
                fd = self._open_dir(root_fd, d.rel)
            except OSError as exc:
                self._warn(f"cannot read directory /{os.fsdecode(d.rel)}: {exc.strerror}")
                d.data = enc.finish()
                continue
            prefix = d.rel + b"/" if d.rel else b""
            # A directory wholly inside a selected path includes all its content.
            whole = sel is None or d.rel in sel or _under(d.rel, sel)
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        sname = entry.name
                        if excl and self._excluded(sname):
                            continue
                        name = sname.encode(_FS_ENC, _FS_ERR)
                        if not whole:
                            rel = prefix + name
                            if rel not in sel and rel not in anc:
                                continue
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError as exc:
                            self._warn(f"skipped /{os.fsdecode(prefix + name)}: {exc.strerror}")
                            continue
                        mode = st.st_mode
                        if mode & _S_IFMT == _S_IFDIR:
                            ino = self._new_ino()
                            self.dirs.append(_Dir(prefix + name, ino, d.ino))
                            d.nsub += 1
                        elif st.st_nlink > 1:
                            key = (st.st_dev, st.st_ino)
                            ino = self.links.get(key, 0)
                            if not ino:
                                ino = self.links[key] = self._new_ino()
                        else:
                            ino = self._new_ino()
                        enc.add(name, ino, (mode >> 12) & 0xF)
                        if hist is not None:
                            entries.append((name, ino))
            except OSError as exc:
                self._warn(f"cannot list directory /{os.fsdecode(d.rel)}: {exc.strerror}")
            finally:
                os.close(fd)
            d.data = enc.finish()
            if hist is not None:
                if d.ino != root.ino:
                    hist.add_dir(b".", d.ino, d.ino)
                    hist.add_dir(b"..", d.parent, d.ino)
                for name, ino in entries:
                    hist.add_dir(name, ino, d.ino)
        if sel is not None:
            for f in sorted(sel):
                if not self._exists(root_fd, f):
                    self._warn(f"FILES entry /{os.fsdecode(f)} not found; skipped")

    @staticmethod
    def _exists(root_fd: int, rel: bytes) -> bool:
        try:
            os.stat(rel, dir_fd=root_fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    # -- pass 2 ----------------------------------------------------------------------------

    def run(self) -> None:
        job = self.job
        try:
            root_fd = os.open(job.root, _O_DIR)
        except OSError as exc:
            raise EngineError(f"cannot open {os.fsdecode(job.root)}: {exc.strerror}") from exc
        try:
            self.scan(root_fd)
            self._write_stream(root_fd)
        finally:
            os.close(root_fd)
        job.env_added["DUMP_DATE"] = str(self.date)
        self.log(
            LogType.NORMAL,
            f"dump: {self.next_ino - 2} inodes, {len(self.dirs)} directories, "
            f"{self.out.offset} bytes" + (f", {self.warnings} warnings" if self.warnings else ""),
        )

    def _volume(self) -> fmt.Volume:
        job = self.job
        fs = job.env.get("FILESYSTEM") or os.fsdecode(job.root)
        label = job.label or "none"
        return fmt.Volume(
            date=self.date,
            label=label.encode("utf-8", "replace")[:15],
            filesys=fs.encode("utf-8", "surrogateescape")[:63],
            dev=os.fsencode(job.root)[:63],
            host=socket.gethostname().encode("utf-8", "replace")[:63],
            ntrec=self.ntrec,
        )

    def _header(self, ctype: int, inumber: int, ino: fmt.Inode, **kw) -> int:
        """Append one header; return its stream offset."""
        out = self.out
        out.room(fmt.TP_BSIZE)
        off = out.offset
        self.pk.pack_into(
            out.buf, out.pos, ctype=ctype, tapea=off >> 10, inumber=inumber, ino=ino, **kw
        )
        out.pos += fmt.TP_BSIZE
        return off

    def _records(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` zero-padded to whole records."""
        out = self.out
        n = len(data)
        padded = -(-n // fmt.TP_BSIZE) * fmt.TP_BSIZE
        view = memoryview(data)
        done = 0
        while done < padded:
            out.room(fmt.TP_BSIZE)
            take = min(padded - done, _BUF_SIZE - out.pos)
            real = max(0, min(take, n - done))
            out.buf[out.pos : out.pos + real] = view[done : done + real]
            if real < take:
                out.buf[out.pos + real : out.pos + take] = bytes(take - real)
            out.pos += take
            done += take

    def _write_stream(self, root_fd: int) -> None:
        self.out = _Out(self.job)
        self.pk = fmt.HeaderPacker(self._volume())
        maxino = self.next_ino
        zero = fmt.ZERO_INODE
        self._header(fmt.TS_TAPE, 0, zero, count=1, flags=fmt.DR_NEWHEADER | fmt.DR_NEWINODEFMT)
        bits = fmt.map_bytes(maxino)
        nmap = len(bits) // fmt.TP_BSIZE
        map_ino = fmt.Inode(size=len(bits))
        self._header(fmt.TS_CLRI, maxino - 1, map_ino, count=nmap)
        self._records(bits)
        self._header(fmt.TS_BITS, fmt.ROOTINO, map_ino, count=nmap)
        self._records(bits)
        for d in self.dirs:
            self._write_dir(root_fd, d)
        self._write_files(root_fd)
        self._header(fmt.TS_END, maxino - 1, zero)
        out = self.out
        while (out.offset >> 10) % self.ntrec:
            self._header(fmt.TS_END, maxino - 1, zero)
        out.flush()

    def _flags(self, fd: int, dev: int) -> int:
        if dev in self.no_flags:
            return 0
        try:
            res = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)
        except OSError:
            self.no_flags.add(dev)
            return 0
        return int.from_bytes(res[:4], "little")

    def _xattrs(
        self, target: int | bytes, what: bytes, names: list[str] | None = None
    ) -> list[tuple[bytes, bytes]]:
        follow = isinstance(target, int)
        if names is None:
            try:
                names = os.listxattr(target, follow_symlinks=follow)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
                    self._warn(f"xattrs of /{os.fsdecode(what)}: {exc.strerror}")
                return []
        attrs = []
        for n in names:
            try:
                attrs.append((os.fsencode(n), os.getxattr(target, n, follow_symlinks=follow)))
            except OSError as exc:
                if exc.errno != errno.ENODATA:
                    self._warn(f"xattr {n} of /{os.fsdecode(what)}: {exc.strerror}")
        return attrs

    def _stat_header(
        self,
        ctype: int,
        num: int,
        st: os.stat_result,
        size: int,
        nlink: int,
        flags: int,
        count: int = 0,
        addr: bytes = b"",
        asum: int = 0,
        cflags: int = fmt.DR_NEWINODEFMT,
        ext: int = 0,
    ) -> int:
        out = self.out
        if out.pos + fmt.TP_BSIZE > _BUF_SIZE:
            out.flush()
        off = out.flushed + out.pos
        self.pk.pack_stat(
            out.buf, out.pos, ctype, off >> 10, num, st, size, nlink, flags, count, addr, asum,
            cflags, ext,
        )  # fmt: skip
        out.pos += fmt.TP_BSIZE
        return off

    def _write_ea(
        self,
        num: int,
        st: os.stat_result,
        nlink: int,
        flags: int,
        attrs: list[tuple[bytes, bytes]],
        what: bytes,
    ) -> None:
        image, dropped = fmt.encode_ea(attrs)
        for name, why in dropped:
            self._warn(f"xattr {os.fsdecode(name)} of /{os.fsdecode(what)} not backed up: {why}")
        if not image:
            return
        n = -(-len(image) // fmt.TP_BSIZE)
        self._stat_header(
            fmt.TS_INODE, num, st, len(image), nlink, flags, n, fmt.ones(n), fmt.ones_addr_sum(n),
            fmt.DR_NEWINODEFMT | fmt.DR_EXTATTRIBUTES, fmt.EXT_XATTR,
        )  # fmt: skip
        self._records(image)

    def _write_blob(
        self, num: int, st: os.stat_result, size: int, nlink: int, flags: int, data: bytes
    ) -> int:
        """An inode whose content is ``data`` in full records (directories, symlinks)."""
        nblk = -(-len(data) // fmt.TP_BSIZE)
        first = 0
        h = 0
        while True:
            cnt = min(fmt.TP_NINDIR, nblk - h * fmt.TP_NINDIR)
            off = self._stat_header(
                fmt.TS_INODE if h == 0 else fmt.TS_ADDR, num, st, size, nlink, flags,
                cnt, fmt.ones(cnt), fmt.ones_addr_sum(cnt),
            )  # fmt: skip
            if h == 0:
                first = off
            lo = h * _CHUNK
            self._records(data[lo : lo + cnt * fmt.TP_BSIZE])
            h += 1
            if h * fmt.TP_NINDIR >= nblk:
                return first

    def _write_dir(self, root_fd: int, d: _Dir) -> None:
        try:
            fd = self._open_dir(root_fd, d.rel)
        except OSError as exc:
            self._warn(f"directory /{os.fsdecode(d.rel)} vanished: {exc.strerror}")
            fd = -1
        try:
            if fd >= 0:
                st = os.fstat(fd)
                flags = self._flags(fd, st.st_dev)
                attrs = self._xattrs(fd, d.rel)
            else:
                st = _fake_stat(_S_IFDIR | 0o700, self.date)
                flags, attrs = 0, []
        finally:
            if fd >= 0:
                os.close(fd)
        nlink = 2 + d.nsub
        off = self._write_blob(d.ino, st, len(d.data), nlink, flags, d.data)
        if attrs:
            self._write_ea(d.ino, st, nlink, flags, attrs, d.rel)
        if self.hist is not None:
            self.hist.add_node(st, d.ino, off)

    def _write_files(self, root_fd: int) -> None:
        last = 0
        abort = self.abort
        small = self._small_regular
        for d in self.dirs:
            todo = [
                (num, dt, name)
                for num, dt, name in fmt.iter_dir(d.data, fmt.DIRBLKSIZ)
                if dt != fmt.DT_DIR and num > last and name not in (b".", b"..")
            ]
            if not todo:
                continue
            try:
                dfd = self._open_dir(root_fd, d.rel)
            except OSError as exc:
                self._warn(f"directory /{os.fsdecode(d.rel)} vanished: {exc.strerror}")
                dfd = -1
            fast = self.fast if dfd >= 0 else None
            run: list[tuple[int, bytes]] = []  # plain files in a row, for the C path
            try:
                for num, dtype, name in todo:
                    if num <= last:
                        continue
                    if abort.is_set():
                        raise Aborted("backup aborted")
                    last = num
                    if fast is not None and dtype == 8:
                        run.append((num, name))
                        if len(run) < native.SCAN_BATCH:
                            continue
                    if run:
                        self._fast_files(fast, dfd, d.rel, run)
                        run = []
                        if fast is not None and dtype == 8:
                            continue
                    if dtype == 8 and dfd >= 0 and small(dfd, num, name):
                        continue
                    self._write_file(dfd, d.rel, num, dtype, name)
                if run:
                    self._fast_files(fast, dfd, d.rel, run)
            finally:
                if dfd >= 0:
                    os.close(dfd)

    def _fast_files(
        self, fast: ModuleType, dfd: int, drel: bytes, run: list[tuple[int, bytes]]
    ) -> None:
        """Write ``run`` (regular files of one directory, in order) through the C path, which
        produces :meth:`_small_regular`'s bytes; a file it does not take goes the Python way."""
        out = self.out
        if self._tmpl is None:
            self._tmpl = bytearray(fmt.TP_BSIZE)
            self.pk.pack_into(self._tmpl, 0, ctype=0, tapea=0, inumber=0, ino=fmt.ZERO_INODE)
        dev = os.fstat(dfd).st_dev
        hist = self.hist
        i = 0
        while i < len(run):
            if self.abort.is_set():
                raise Aborted("backup aborted")
            i, out.pos, status, stats, _eperm, noflags = fast.dump_pack_files(
                dfd, run, i, out.buf, out.pos, out.batch, out.flushed, self._tmpl,
                self._o_read, dev not in self.no_flags, hist is not None,
            )  # fmt: skip
            if noflags:
                self.no_flags.add(dev)
            if stats:
                assert hist is not None
                for st, num, off in stats:
                    hist.add_node(native.stat_result(st), num, off)
            if status == native.LIMIT:
                out.flush()
            elif i < len(run):
                num, name = run[i]
                if not self._small_regular(dfd, num, name):
                    self._write_file(dfd, drel, num, 8, name)
                i += 1

    def _small_regular(self, dfd: int, num: int, name: bytes) -> bool:
        """The common inode in one go: a small plain file without xattrs, read behind its header.

        Same bytes as :meth:`_write_file` with one open, fstat, flags ioctl, listxattr, preadv
        and close and no intermediate calls. Returns False, having written nothing, for
        anything else (large, sparse, xattrs, changed type or size, an open error), which the
        general path then handles and reports.
        """
        try:
            fd = os.open(name, self._o_read, dir_fd=dfd)
        except OSError:
            return False
        out = self.out
        try:
            st = os.fstat(fd)
            size = st.st_size
            if st.st_mode & _S_IFMT != _S_IFREG or size > _CHUNK or st.st_blocks * 512 < size:
                return False
            dev = st.st_dev
            flags = 0
            if dev not in self.no_flags:
                fbuf = self._fbuf
                try:
                    fcntl.ioctl(fd, FS_IOC_GETFLAGS, fbuf, True)
                    flags = int.from_bytes(fbuf[:4], "little")
                except OSError:
                    self.no_flags.add(dev)
            try:
                if os.listxattr(fd):
                    return False
            except OSError:
                pass
            cnt = (size + 1023) >> 10
            end = (cnt + 1) << 10
            if out.pos >= out.batch or out.pos + end > _BUF_SIZE:
                out.flush()
            pos = out.pos
            end += pos
            p = pos + fmt.TP_BSIZE
            mv = out.mv
            if size and os.preadv(fd, [mv[p : p + size]], 0) != size:
                return False  # shrank (or a short read): the general path pads and warns
        finally:
            os.close(fd)
        off = out.flushed + pos
        self.pk.pack_stat(
            out.buf, pos, fmt.TS_INODE, off >> 10, num, st, size, st.st_nlink, flags,
            cnt, _ONES[:cnt], fmt.ones_addr_sum(cnt),
        )  # fmt: skip
        if p + size < end:
            mv[p + size : end] = _ZEROS[: end - p - size]
        out.pos = end
        if self.hist is not None:
            self.hist.add_node(st, num, off)
        return True

    def _vanished(self, num: int, dtype: int, rel: bytes, why: str) -> None:
        """Keep the stream consistent with the directory data already written."""
        self._warn(f"/{os.fsdecode(rel)} changed during backup ({why}); saved empty")
        mode = (dtype << 12) | 0o600 if dtype not in (0, fmt.DT_DIR) else _S_IFREG | 0o600
        if mode & _S_IFMT == _S_IFLNK:
            mode = _S_IFREG | 0o600
        self._stat_header(fmt.TS_INODE, num, _fake_stat(mode, self.date), 0, 1, 0)

    def _write_file(self, dfd: int, drel: bytes, num: int, dtype: int, name: bytes) -> None:
        if dfd < 0:
            self._vanished(num, dtype, drel + b"/" + name, "directory gone")
            return
        if dtype == 8:  # DT_REG: open first, so size and data come from one file
            try:
                fd = os.open(name, self._o_read, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.EPERM and self._o_read & _O_NOATIME:
                    self._o_read = _O_READ  # O_NOATIME needs ownership or CAP_FOWNER
                    self._write_file(dfd, drel, num, dtype, name)
                    return
                self._vanished(num, dtype, drel + b"/" + name, exc.strerror or "open failed")
                return
            try:
                st = os.fstat(fd)
                if st.st_mode & _S_IFMT != _S_IFREG:
                    self._vanished(num, dtype, drel + b"/" + name, "type changed")
                    return
                dev = st.st_dev
                flags = self._flags(fd, dev) if dev not in self.no_flags else 0
                try:
                    xnames = os.listxattr(fd)
                except OSError:
                    xnames = None
                off = self._write_regular(fd, num, st, flags)
                attrs = self._xattrs(fd, drel + b"/" + name, xnames) if xnames else None
            finally:
                os.close(fd)
            if attrs:
                self._write_ea(num, st, st.st_nlink, flags, attrs, drel + b"/" + name)
            if self.hist is not None:
                self.hist.add_node(st, num, off)
            return
        rel = drel + b"/" + name if drel else name
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError as exc:
            self._vanished(num, dtype, rel, exc.strerror or "stat failed")
            return
        fmode = st.st_mode & _S_IFMT
        if fmode in (_S_IFREG, _S_IFDIR) or fmode >> 12 != dtype:
            self._vanished(num, dtype, rel, "type changed")
            return
        path = b"/proc/self/fd/%d/%s" % (dfd, name)
        attrs = self._xattrs(path, rel)
        if fmode == _S_IFLNK:
            try:
                target = os.fsencode(os.readlink(name, dir_fd=dfd))
            except OSError as exc:
                self._vanished(num, dtype, rel, exc.strerror or "readlink failed")
                return
            off = self._write_blob(num, st, len(target), st.st_nlink, 0, target + b"\0")
        else:
            off = self._stat_header(fmt.TS_INODE, num, st, 0, st.st_nlink, 0)
        if attrs:
            self._write_ea(num, st, st.st_nlink, 0, attrs, rel)
        if self.hist is not None:
            self.hist.add_node(st, num, off)

    def _write_regular(self, fd: int, num: int, st: os.stat_result, flags: int) -> int:
        size = st.st_size
        out = self.out
        if size <= _CHUNK and st.st_blocks * 512 >= size:
            # the common case: one header, the data read straight behind it
            cnt = (size + 1023) >> 10
            need = (cnt + 1) << 10
            if out.pos + need > _BUF_SIZE:
                out.flush()
            pos = out.pos
            off = out.flushed + pos
            self.pk.pack_stat(
                out.buf, pos, fmt.TS_INODE, off >> 10, num, st, size, st.st_nlink, flags,
                cnt, _ONES[:cnt], fmt.ones_addr_sum(cnt),
            )  # fmt: skip
            p = pos + fmt.TP_BSIZE
            end = pos + need
            got = os.preadv(fd, [out.mv[p : p + size]], 0) if size else 0
            while got < size:
                r = os.preadv(fd, [out.mv[p + got : p + size]], got)
                if r <= 0:
                    self._warn(f"inode {num} shrank while being read; padded with zeros")
                    break
                got += r
            if p + got < end:
                out.mv[p + got : end] = _ZEROS[: end - p - got]
            out.pos = end
            return off
        nblk = -(-size // fmt.TP_BSIZE)
        sparse = size > 0 and st.st_blocks * 512 < size
        extents = _data_extents(fd, size) if sparse else None
        cur: tuple[int, int] | None = next(extents, None) if extents is not None else None
        first = 0
        h = 0
        eof = False  # the file shrank: the rest is zeros
        while True:
            base = h * fmt.TP_NINDIR
            cnt = min(fmt.TP_NINDIR, nblk - base)
            lo = base * fmt.TP_BSIZE
            if extents is None:
                addr, asum = _ONES[:cnt], fmt.ones_addr_sum(cnt)
                runs = [(0, cnt)] if cnt else []
            else:
                hi = lo + cnt * fmt.TP_BSIZE
                marks = bytearray(cnt)
                while cur is not None and cur[0] < hi:
                    b0 = max(cur[0], lo) - lo
                    b1 = min(cur[1], hi) - lo
                    if b1 > b0:
                        k0, k1 = b0 >> 10, -(-b1 // fmt.TP_BSIZE)
                        marks[k0:k1] = _ONES[: k1 - k0]
                    if cur[1] > hi:
                        break
                    cur = next(extents, None)
                addr = bytes(marks)
                asum = fmt.addr_sum(addr)
                runs = _runs(addr)
            off = self._stat_header(
                fmt.TS_INODE if h == 0 else fmt.TS_ADDR, num, st, size, st.st_nlink, flags,
                cnt, addr, asum,
            )  # fmt: skip
            if h == 0:
                first = off
            for k0, k1 in runs:
                pos = lo + k0 * fmt.TP_BSIZE
                end = lo + k1 * fmt.TP_BSIZE
                while pos < end:
                    out.room(fmt.TP_BSIZE)
                    n = min(end - pos, _BUF_SIZE - out.pos)
                    want = max(0, min(n, size - pos))
                    got = 0
                    while got < want and not eof:
                        r = os.preadv(fd, [out.mv[out.pos + got : out.pos + want]], pos + got)
                        if r <= 0:
                            eof = True
                            self._warn(f"inode {num} shrank while being read; padded with zeros")
                            break
                        got += r
                    if got < n:
                        out.mv[out.pos + got : out.pos + n] = _ZEROS[: n - got]
                    out.pos += n
                    pos += n
            h += 1
            if h * fmt.TP_NINDIR >= nblk:
                return first


def _fake_stat(mode: int, date: int) -> os.stat_result:
    """Stand-in metadata for an entry that vanished between the two passes."""
    ns = date * 1_000_000_000
    return os.stat_result(
        (mode, 0, 0, 1, 0, 0, 0, date, date, date),
        {"st_atime_ns": ns, "st_mtime_ns": ns, "st_ctime_ns": ns, "st_blocks": 0, "st_rdev": 0},
    )


def _runs(addr: bytes) -> list[tuple[int, int]]:
    """Runs ``[k0, k1)`` of non-zero bytes."""
    runs = []
    k = 0
    n = len(addr)
    while k < n:
        k0 = addr.find(b"\x01", k)
        if k0 < 0:
            break
        k1 = addr.find(b"\x00", k0)
        if k1 < 0:
            k1 = n
        runs.append((k0, k1))
        k = k1
    return runs


def _under(rel: bytes, sel: set[bytes]) -> bool:
    """True when ``rel`` lies below one of the selected paths."""
    i = rel.rfind(b"/")
    while i > 0:
        if rel[:i] in sel:
            return True
        i = rel.rfind(b"/", 0, i)
    return False
