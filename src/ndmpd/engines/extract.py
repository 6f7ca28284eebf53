"""The one place where recovery creates files: confinement, atomic files, deferred metadata.

Both recovery readers (tar and dump) go through :class:`Extractor`, so that the rules a hostile
or corrupt image must not break live here only:

* nothing is created outside ``confine``; ``..`` components are refused, and an existing
  symlink below ``confine`` is never followed (an image's own symlink must not redirect a later
  entry of the same image);
* a regular file is written under a temporary name in its final directory and renamed into
  place only when complete, so a failed or killed restore never leaves a truncated file under
  the real name;
* directory metadata is applied at :meth:`Extractor.finish`, deepest first, after everything
  inside them has been created.

Directories found or made on the way are remembered, so a file costs a handful of system calls.
"""

from __future__ import annotations

import errno
import itertools
import os
import queue
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ndmpd.engines import native
from ndmpd.engines.base import EngineError, LogFn, Selection
from ndmpd.protocol.constants import LogType

__all__ = [
    "Extractor",
    "FileOut",
    "Meta",
    "UnsafePath",
    "map_selection",
    "match_selection",
]

_TEMP_PREFIX = b".ndmpd-tmp."
_EXTRACTORS = itertools.count()  # concurrent restores into one directory never share a name


class UnsafePath(EngineError):
    """An entry would be created outside the confinement directory or through a symlink."""


@dataclass
class Meta:
    """What to apply to a restored entry besides its content."""

    mode: int  # full st_mode, type bits included
    uid: int = -1  # -1 = leave as is
    gid: int = -1
    mtime_ns: int | None = None
    atime_ns: int | None = None
    rdev: int = 0
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)  # (full name, value)


def _split(path: bytes) -> list[bytes]:
    """Components of ``path`` without empty or ``.`` parts; ``..`` is refused outright."""
    parts = [p for p in path.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise UnsafePath(f"path has a '..' component: {path!r}")
    return parts


class Extractor:
    """Creates restored entries below ``confine`` safely; see the module docstring."""

    def __init__(
        self,
        confine: bytes,
        *,
        overwrite: bool = True,
        log: LogFn | None = None,
        chown: bool = os.geteuid() == 0,
    ) -> None:
        if not confine.startswith(b"/"):
            raise UnsafePath(f"confinement directory is not absolute: {confine!r}")
        self.confine = b"/" + b"/".join(_split(confine))
        self._confine_slash = self.confine + b"/"
        self.overwrite = overwrite
        self.chown = chown
        self._log = log
        self._dirs: set[bytes] = {self.confine}  # verified real directories, not symlinks
        self._pending_dirs: dict[bytes, Meta] = {}
        self._open: dict[int, FileOut] = {}
        self._seq = itertools.count()
        self._tag = b"%x.%x." % (os.getpid(), next(_EXTRACTORS))  # unique per restore
        self.kept: list[bytes] = []  # existing entries left alone because overwrite is off
        self._dir_fds: dict[bytes, int] = {}  # verified directories open for the C fast path
        self._named_temp = False  # the file system has no O_TMPFILE: the C path renames
        self._committer: _Committer | None = None
        self._syncing = False
        self._queued: set[bytes] = set()  # destinations of queued files, until the next sync

    # -- paths ------------------------------------------------------------------------------

    def target(self, path: bytes) -> bytes:
        """Absolute destination for ``path``; its missing parent directories are created.

        A relative ``path`` is taken relative to ``confine``.
        """
        # Common case first: already normal (no empty, "." or ".." component: no "//" and no
        # "/." anywhere), below confine, in a directory verified before. Anything else takes
        # the full route.
        if (
            path.startswith(self._confine_slash)
            and b"/." not in path
            and b"//" not in path
            and not path.endswith(b"/")
            and path.rpartition(b"/")[0] in self._dirs
        ):
            return path
        if path.startswith(b"/"):
            parts = _split(path)
            full = b"/" + b"/".join(parts)
        else:
            parts = _split(path)
            full = self.confine + b"/" + b"/".join(parts) if parts else self.confine
        if full != self.confine and not full.startswith(self.confine + b"/"):
            raise UnsafePath(f"path is outside {self.confine!r}: {path!r}")
        parent = full.rpartition(b"/")[0] or b"/"
        if parent not in self._dirs and full != self.confine:
            self._ensure_dir(parent)
        return full

    def _ensure_dir(self, d: bytes) -> None:
        """Make sure every component from ``confine`` down to ``d`` is a real directory."""
        rel = d[len(self.confine) + 1 :]
        cur = self.confine
        for part in rel.split(b"/"):
            cur = cur + b"/" + part
            if cur in self._dirs:
                continue
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                try:
                    os.mkdir(cur, 0o755)
                except FileExistsError:
                    st = os.lstat(cur)
                else:
                    self._dirs.add(cur)
                    continue
            except NotADirectoryError as e:
                raise EngineError(f"a parent of {d!r} is not a directory") from e
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePath(f"refusing to go through the symlink {cur!r}")
            if not stat.S_ISDIR(st.st_mode):
                raise EngineError(f"{cur!r} exists and is not a directory")
            self._dirs.add(cur)

    def _temp(self, full: bytes) -> bytes:
        head = full.rpartition(b"/")[0]
        return b"%s/%s%s%x" % (head, _TEMP_PREFIX, self._tag, next(self._seq))

    def _keep_existing(self, full: bytes) -> bool:
        """With overwrite off, True (and logged) when something already exists at ``full``."""
        if self.overwrite:
            return False
        try:
            os.lstat(full)
        except FileNotFoundError:
            return False
        self.kept.append(full)
        self._warn(f"kept existing {os.fsdecode(full)} (overwrite is off)")
        return True

    def _place(self, tmp: bytes, full: bytes) -> None:
        """Rename ``tmp`` over ``full``; an empty directory in the way is removed if allowed."""
        try:
            os.rename(tmp, full)
        except OSError as e:
            if e.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                _unlink_quiet(tmp)
                raise EngineError(f"cannot create {os.fsdecode(full)}: {e.strerror}") from e
            try:
                os.rmdir(full)
                os.rename(tmp, full)
            except OSError as e2:
                _unlink_quiet(tmp)
                raise EngineError(f"cannot replace {os.fsdecode(full)}: {e2.strerror}") from e2
            self._forget_dir(full)
        if full in self._dirs:
            self._forget_dir(full)

    def _forget_dir(self, full: bytes) -> None:
        prefix = full + b"/"
        self._dirs = {d for d in self._dirs if d != full and not d.startswith(prefix)}
        self._pending_dirs.pop(full, None)
        for d in [d for d in self._dir_fds if d == full or d.startswith(prefix)]:
            os.close(self._dir_fds.pop(d))

    # -- the C fast path --------------------------------------------------------------------

    def sync_for_dir(self, path: bytes) -> None:
        """:meth:`sync` unless making directory ``path`` cannot meet a queued file: the path
        is normal, not queued itself, and its parent exists (nothing else gets made)."""
        if self._queued and (
            path in self._queued
            or path.rpartition(b"/")[0] not in self._dirs
            or b"/." in path
            or b"//" in path
            or path.endswith(b"/")
        ):
            self.sync()

    def known_dir_fd(self, path: bytes) -> int | None:
        """The descriptor :meth:`dir_fd` has open for ``path``, if any (nothing is made)."""
        return self._dir_fds.get(path)

    def dir_fd(self, path: bytes) -> int:
        """An open descriptor on directory ``path`` (made if missing), verified as
        :meth:`target` verifies parents; closed when that directory is replaced or at
        :meth:`finish`. Raises as :meth:`target` does."""
        fd = self._dir_fds.get(path)
        if fd is not None:
            return fd
        if self._queued and path not in self._dirs:
            self.sync()  # directories may be made: a queued file may be in the way
        full = self.target(path)
        fd = self._dir_fds.get(full)
        if fd is not None:
            return fd
        if full not in self._dirs:
            self._ensure_dir(full)
        if len(self._dir_fds) >= 64:
            self.sync()  # queued batches may still use these descriptors
            self._close_dir_fds()
        fd = os.open(full, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._dir_fds[full] = fd
        return fd

    def write_files(self, buf: bytearray, files: Sequence[tuple]) -> tuple[int, int]:
        """Create plain regular files from ``buf`` in C (see ``_speedups.write_files``).

        ``files`` holds ``(dirfd, name, offset, size, mode, uid, gid, atime_ns or -1,
        mtime_ns)`` with ``dirfd`` from :meth:`dir_fd` and ``name`` a plain base name. Returns
        (files done, errno): on a failure the caller restores that file through
        :meth:`create_file`, which reports it, and goes on with the rest.
        """
        sp = native.speedups
        assert sp is not None
        flags = (native.CHOWN if self.chown else 0) | (native.OVERWRITE if self.overwrite else 0)
        if self._named_temp:
            flags |= native.NAMED_TEMP
        prefix = _TEMP_PREFIX + self._tag
        done, err, named = sp.write_files(buf, files, flags, prefix, _umask())
        self._named_temp = bool(named)
        return done, err

    def submit(
        self, data: bytes, files: list[tuple], tags: list, on_fail: FailFn, dests: list[bytes]
    ) -> None:
        """Queue :meth:`write_files` of ``files`` (offsets into ``data``) for the committer
        thread, which runs it while the caller parses on. Every other method waits for the
        queue first (:meth:`sync`), so entries are still created in stream order. A file the
        C path fails on is handed, at that point, to ``on_fail(tag, data, file)`` (in the
        caller's thread), which restores it through the Python path. ``dests``: the files'
        full paths (so that :meth:`mkdir` waits only when it would meet one of them)."""
        if len(self._queued) > 65536 or (self._committer is not None and self._committer.stalled):
            self.sync()  # bounds what waits: a stalled lane keeps every later batch
        self._queued.update(dests)
        if self._committer is None:
            self._committer = _Committer(self)
        self._committer.put((data, files, tags, on_fail))

    def sync(self) -> None:
        """Wait for the queued batches; restore the files they failed on, in order."""
        c = self._committer
        if c is None or self._syncing:
            return
        self._syncing = True
        self._queued.clear()
        try:
            for data, file, tag, on_fail, failed in c.drain():
                if not failed and self.write_files(data, [file])[0]:
                    continue
                on_fail(tag, data, file)
        finally:
            self._syncing = False

    def _close_dir_fds(self) -> None:
        for fd in self._dir_fds.values():
            os.close(fd)
        self._dir_fds = {}

    def _warn(self, msg: str) -> None:
        if self._log is not None:
            self._log(LogType.WARNING, msg)

    # -- entries ----------------------------------------------------------------------------

    def mkdir(self, path: bytes, meta: Meta) -> None:
        """Create (or reuse) a directory; its metadata is applied by :meth:`finish`.

        Unlike the other entries it does not wait for queued files unless one of them goes
        to this path or to a parent it has to make: a new directory cannot disturb the others,
        and a tar stream has one directory entry per directory, right before its files."""
        self.sync_for_dir(path)
        full = self.target(path)
        if full not in self._dirs:
            try:
                os.mkdir(full, 0o700)
            except FileExistsError:
                st = os.lstat(full)
                if not stat.S_ISDIR(st.st_mode):
                    if not self.overwrite:
                        self.kept.append(full)
                        self._warn(f"kept existing {os.fsdecode(full)} (overwrite is off)")
                        return
                    os.unlink(full)
                    os.mkdir(full, 0o700)
            except OSError as e:
                raise EngineError(f"cannot create directory {os.fsdecode(full)}: {e}") from e
            self._dirs.add(full)
        self._pending_dirs[full] = meta

    def create_file(self, path: bytes, meta: Meta) -> FileOut:
        """Open a regular file for writing under a temporary name beside its final one."""
        self.sync()
        full = self.target(path)
        if self._keep_existing(full):
            return FileOut(self, full, None, -1, meta)
        tmp = self._temp(full)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise EngineError(f"cannot create {os.fsdecode(full)}: {e.strerror}") from e
        out = FileOut(self, full, tmp, fd, meta)
        self._open[fd] = out
        return out

    def restore_file(self, path: bytes, meta: Meta, data: bytes | memoryview) -> None:
        """A whole regular file from memory: the Python path the C fast path falls back on
        for a file it could not create, so that its failure is reported the usual way."""
        out = self.create_file(path, meta)
        out.write(data)  # discards the temporary file itself when it fails
        out.commit(len(data))

    def symlink(self, path: bytes, target: bytes, meta: Meta) -> None:
        """Create a symlink; its target is stored verbatim and never followed here."""
        self.sync()
        full = self.target(path)
        if self._keep_existing(full):
            return
        tmp = self._temp(full)
        try:
            os.symlink(target, tmp)
        except OSError as e:
            raise EngineError(f"cannot create symlink {os.fsdecode(full)}: {e.strerror}") from e
        self._apply_link_meta(tmp, meta)
        self._place(tmp, full)

    def hardlink(self, path: bytes, existing: bytes) -> None:
        """Link ``path`` to ``existing``, an entry restored earlier by this extractor."""
        self.sync()
        full = self.target(path)
        src = self.target(existing)
        if self._keep_existing(full):
            return
        tmp = self._temp(full)
        try:
            os.link(src, tmp, follow_symlinks=False)
        except OSError as e:
            raise EngineError(
                f"cannot link {os.fsdecode(full)} to {os.fsdecode(src)}: {e.strerror}"
            ) from e
        self._place(tmp, full)

    def special(self, path: bytes, meta: Meta) -> None:
        """Create a FIFO, device or socket node."""
        self.sync()
        full = self.target(path)
        if self._keep_existing(full):
            return
        tmp = self._temp(full)
        try:
            if stat.S_ISFIFO(meta.mode):
                os.mkfifo(tmp, 0o600)
            else:
                os.mknod(tmp, stat.S_IFMT(meta.mode) | 0o600, meta.rdev)
        except OSError as e:
            raise EngineError(f"cannot create {os.fsdecode(full)}: {e.strerror}") from e
        try:
            self._apply_path_meta(tmp, meta)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        self._place(tmp, full)

    # -- metadata ---------------------------------------------------------------------------

    def _apply_fd_meta(self, fd: int, name: bytes, meta: Meta) -> None:
        if self.chown and (meta.uid != -1 or meta.gid != -1):
            try:
                os.fchown(fd, meta.uid, meta.gid)
            except OSError as e:
                self._warn(f"cannot chown {os.fsdecode(name)}: {e.strerror}")
        os.fchmod(fd, stat.S_IMODE(meta.mode))
        for k, v in meta.xattrs:
            try:
                os.setxattr(fd, k, v)
            except OSError as e:
                self._warn(f"cannot set xattr {k!r} on {os.fsdecode(name)}: {e.strerror}")
        if meta.mtime_ns is not None:
            at = meta.atime_ns if meta.atime_ns is not None else meta.mtime_ns
            os.utime(fd, ns=(at, meta.mtime_ns))

    def _apply_path_meta(self, p: bytes, meta: Meta) -> None:
        if self.chown and (meta.uid != -1 or meta.gid != -1):
            try:
                os.chown(p, meta.uid, meta.gid, follow_symlinks=False)
            except OSError as e:
                self._warn(f"cannot chown {os.fsdecode(p)}: {e.strerror}")
        os.chmod(p, stat.S_IMODE(meta.mode))
        self._set_xattrs(p, meta)
        if meta.mtime_ns is not None:
            at = meta.atime_ns if meta.atime_ns is not None else meta.mtime_ns
            os.utime(p, ns=(at, meta.mtime_ns), follow_symlinks=False)

    def _apply_link_meta(self, p: bytes, meta: Meta) -> None:
        if self.chown and (meta.uid != -1 or meta.gid != -1):
            try:
                os.chown(p, meta.uid, meta.gid, follow_symlinks=False)
            except OSError as e:
                self._warn(f"cannot chown {os.fsdecode(p)}: {e.strerror}")
        self._set_xattrs(p, meta)
        if meta.mtime_ns is not None:
            at = meta.atime_ns if meta.atime_ns is not None else meta.mtime_ns
            os.utime(p, ns=(at, meta.mtime_ns), follow_symlinks=False)

    def _set_xattrs(self, p: bytes, meta: Meta) -> None:
        for k, v in meta.xattrs:
            try:
                os.setxattr(p, k, v, follow_symlinks=False)
            except OSError as e:
                self._warn(f"cannot set xattr {k!r} on {os.fsdecode(p)}: {e.strerror}")

    def _stop_committer(self) -> None:
        if self._committer is not None:
            self.sync()
            self._committer.stop()
            self._committer = None

    def finish(self) -> None:
        """Apply directory metadata, deepest first. Safe to call more than once."""
        self._stop_committer()
        self._close_dir_fds()
        pending = sorted(self._pending_dirs.items(), key=lambda kv: kv[0].count(b"/"), reverse=True)
        self._pending_dirs = {}
        for d, meta in pending:
            try:
                self._apply_path_meta(d, meta)
            except OSError as e:
                self._warn(f"cannot set metadata on {os.fsdecode(d)}: {e.strerror}")

    def abandon(self) -> None:
        """Remove every temporary file still open (after an error or an abort)."""
        self._stop_committer()
        self._close_dir_fds()
        for out in list(self._open.values()):
            out.discard()


FailFn = Callable[[object, bytes, tuple], None]
_Batch = tuple[bytes, list[tuple], list, FailFn]
_Item = tuple[int, bytes, list[tuple], Sequence[int], list, FailFn]  # seq, data, files, order, tags
_Leftover = tuple[bytes, tuple, object, FailFn, bool]  # data, file, tag, on_fail, failed


# Threads that create the C fast path's files. Each file is a handful of system calls the
# kernel runs in parallel (O_TMPFILE, write, futimens and close touch only the new inode; only
# linkat takes the directory's lock), so two threads finish a batch in about half the time.
COMMIT_THREADS = max(1, min(2, os.cpu_count() or 1))


class _Committer:
    """Runs queued :meth:`Extractor.write_files` batches in threads of their own.

    A batch's files are dealt out to the lanes by base name: a name met twice always goes to
    the same lane, which writes it in stream order; files of different names do not depend on
    each other (their directories were made before the batch was queued, and any other
    extractor operation waits for the queue first). A lane whose batch fails part-way runs
    nothing more: the failed file, the rest of that batch and every later one wait for
    :meth:`drain`, which hands them back, from every lane, in stream order.
    """

    def __init__(self, ex: Extractor, threads: int = COMMIT_THREADS) -> None:
        self._seq = itertools.count()
        self.lanes = [_Lane(ex) for _ in range(threads)]

    def put(self, batch: _Batch) -> None:
        data, files, tags, on_fail = batch
        seq = next(self._seq)
        n = len(self.lanes)
        if n == 1:
            self.lanes[0].q.put((seq, data, files, range(len(files)), tags, on_fail))
            return
        parts: list[tuple[list[tuple], list[int], list]] = [([], [], []) for _ in range(n)]
        for i, f in enumerate(files):
            fs, order, tg = parts[hash(f[1]) % n]
            fs.append(f)
            order.append(i)
            tg.append(tags[i])
        for lane, (fs, order, tg) in zip(self.lanes, parts, strict=True):
            if fs:
                lane.q.put((seq, data, fs, order, tg, on_fail))

    @property
    def stalled(self) -> bool:
        """A lane has stopped on a failure: what comes next piles up until a drain."""
        return any(lane.redo for lane in self.lanes)

    def drain(self) -> list[_Leftover]:
        """Wait for every lane; the files they did not create, in stream order, each with
        whether it is the one that failed (True) or one never tried (False)."""
        left: list[tuple[tuple[int, int], _Leftover]] = []
        for lane in self.lanes:
            lane.q.join()
            redo, lane.redo = lane.redo, []
            for (seq, data, files, order, tags, on_fail), first, failed in redo:
                for j in range(first, len(files)):
                    left.append(
                        ((seq, order[j]), (data, files[j], tags[j], on_fail, failed and j == first))
                    )
        left.sort(key=lambda kv: kv[0])
        return [item for _, item in left]

    def stop(self) -> None:
        for lane in self.lanes:
            lane.q.put(None)
        for lane in self.lanes:
            lane.thread.join()


class _Lane:
    """One committer thread and its queue."""

    def __init__(self, ex: Extractor) -> None:
        self.ex = ex
        self.q: queue.Queue[_Item | None] = queue.Queue(maxsize=4)
        self.redo: list[tuple[_Item, int, bool]] = []  # (item, next index, that index failed)
        self.thread = threading.Thread(target=self._run, name="ndmpd-commit", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            try:
                if item is None:
                    return
                if self.redo:
                    self.redo.append((item, 0, False))
                    continue
                try:
                    done, err = self.ex.write_files(item[1], item[2])
                except BaseException:  # the caller's thread meets it again in sync()
                    self.redo.append((item, 0, False))
                    continue
                if err:
                    self.redo.append((item, done, True))
            finally:
                self.q.task_done()


class FileOut:
    """A regular file being restored; invisible under its real name until :meth:`commit`."""

    __slots__ = ("_end", "_ex", "_fd", "_full", "_meta", "_pos", "_tmp", "kept")

    def __init__(self, ex: Extractor, full: bytes, tmp: bytes | None, fd: int, meta: Meta):
        self._ex = ex
        self._full = full
        self._tmp = tmp
        self._fd = fd
        self._meta = meta
        self._pos = 0
        self._end = 0
        self.kept = tmp is None  # an existing file is kept: writes are dropped

    @property
    def path(self) -> bytes:
        return self._full

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` at the current position."""
        if self._fd < 0:
            if not self.kept:
                raise EngineError(f"write to a closed file {os.fsdecode(self._full)}")
            return
        mv = memoryview(data)
        n = len(mv)
        pos = self._pos
        try:
            done = os.pwrite(self._fd, mv, pos)
            while done < n:
                done += os.pwrite(self._fd, mv[done:], pos + done)
        except OSError as e:
            self.discard()
            raise EngineError(f"cannot write {os.fsdecode(self._full)}: {e.strerror}") from e
        self._pos = pos + n
        self._end = self._pos

    def seek_hole(self, length: int) -> None:
        """Skip ``length`` bytes, leaving a hole."""
        self._pos += length

    def commit(self, size: int) -> None:
        """Set the final size, apply metadata, and rename into place."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        self._ex._open.pop(fd, None)
        tmp = self._tmp
        assert tmp is not None
        try:
            if self._end != size:
                os.ftruncate(fd, size)
            self._ex._apply_fd_meta(fd, self._full, self._meta)
        except OSError as e:
            os.close(fd)
            _unlink_quiet(tmp)
            raise EngineError(f"cannot finish {os.fsdecode(self._full)}: {e.strerror}") from e
        except BaseException:
            os.close(fd)
            _unlink_quiet(tmp)
            raise
        os.close(fd)
        self._ex._place(tmp, self._full)

    def discard(self) -> None:
        """Drop the temporary file; nothing appears under the real name."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        self._ex._open.pop(fd, None)
        os.close(fd)
        if self._tmp is not None:
            _unlink_quiet(self._tmp)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    global _UMASK
    if _UMASK < 0:
        _UMASK = 0o022
        try:
            with open("/proc/self/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Umask:"):
                        _UMASK = int(line.split()[1], 8)
                        break
        except (OSError, ValueError):
            pass
    return _UMASK


_UMASK = -1


def _unlink_quiet(p: bytes) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _norm_original(original: bytes) -> bytes:
    return b"/".join(p for p in original.split(b"/") if p and p != b".")


def match_selection(path: bytes, selections: Sequence[Selection]) -> Selection | None:
    """The longest selection whose ``original`` is ``path`` or a parent directory of it."""
    path = _norm_original(path)
    best: Selection | None = None
    best_len = -1
    for sel in selections:
        orig = _norm_original(sel.original)
        if (
            orig == b""
            or orig == path
            or (path.startswith(orig) and path[len(orig) : len(orig) + 1] == b"/")
        ) and len(orig) > best_len:
            best, best_len = sel, len(orig)
    return best


def map_selection(path: bytes, selections: Sequence[Selection], destination: bytes) -> bytes | None:
    """Where stream path ``path`` is restored, or None when no selection covers it."""
    path = _norm_original(path)
    if not selections:
        return destination.rstrip(b"/") + b"/" + path if path else destination
    sel = match_selection(path, selections)
    if sel is None:
        return None
    orig = _norm_original(sel.original)
    rest = path[len(orig) :].lstrip(b"/")
    dest = sel.destination
    return dest.rstrip(b"/") + b"/" + rest if rest else dest
