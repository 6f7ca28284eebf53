"""The one interface every backup engine implements.

An engine turns a directory tree into a byte stream plus file history (backup), and a byte
stream back into a tree, or into file history only (recover). Engines know nothing of NDMP
sessions, sockets or tapes: the data service hands them a sink or a source and callbacks,
and runs them in a worker thread. Names are ``bytes`` throughout, as the file system has them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ndmpd.protocol.constants import LogType, RecoveryStatus


class EngineError(Exception):
    """A backup or recovery cannot go on; the message says why, for a LOG_MESSAGE."""


class EnvError(EngineError):
    """An environment value is invalid (the data service answers ILLEGAL_ARGS_ERR)."""


class Aborted(EngineError):
    """The operation was aborted from outside (DATA_ABORT, a kill, the DMA vanishing)."""


class StreamSink(Protocol):
    """Where a backup writes its stream. ``write`` blocks while the mover is behind.

    A sink may also have an int attribute ``write_batch`` (see ``write_batch()`` below).
    """

    def write(self, data: bytes | memoryview, /) -> object: ...


class StreamSource(Protocol):
    """Where a recovery reads its stream. ``readinto`` returns 0 at the end of the stream."""

    def readinto(self, buf: bytearray | memoryview, /) -> int: ...


class HistorySink(Protocol):
    """File history as NDMP carries it (spec §10). The data service batches the entries.

    ``fh_info`` is the stream offset of the entry's first header byte (for direct access),
    or all-ones when unknown. Paths for ``add_file`` start with ``/`` and are relative to
    the backup root; names for ``add_dir`` are base names.
    """

    def add_file(self, path: bytes, st: os.stat_result, node: int, fh_info: int) -> None: ...

    def add_dir(self, name: bytes, node: int, parent: int) -> None: ...

    def add_node(self, st: os.stat_result, node: int, fh_info: int) -> None: ...


LogFn = Callable[[LogType, str], None]
"""Posts a LOG_MESSAGE to the DMA."""

FileResultFn = Callable[[str, RecoveryStatus], None]
"""Posts a LOG_FILE to the DMA: the nlist entry's original path and how it went."""


@dataclass(frozen=True)
class Selection:
    """One nlist entry of a recovery (spec §7).

    ``original`` is the path inside the backup, relative to its root, without a leading
    ``/`` (``b""`` = everything). ``destination`` is the absolute file-system path where
    that entry goes; it has already been checked to lie inside a volume.
    """

    original: bytes
    destination: bytes
    name: str  # the nlist original_path as the DMA sent it, echoed in LOG_FILE


@dataclass
class BackupJob:
    root: bytes  # absolute directory to back up (already confined to a volume)
    env: Mapping[str, str]  # the DMA's environment, names as sent
    sink: StreamSink
    history: HistorySink | None  # None when HIST=N
    log: LogFn
    abort: threading.Event
    record_size: int = 10240  # pad the end of the stream to a multiple of this
    excludes: Sequence[bytes] = ()  # EXCLUDE patterns (fnmatch on base names)
    files: Sequence[bytes] = ()  # FILES: subset of paths under root to back up ("" = all)
    label: str = ""  # volume label for the stream header, when the format has one
    env_added: dict[str, str] = field(default_factory=dict)  # filled by the engine (DUMP_DATE)


@dataclass
class RecoverJob:
    source: StreamSource
    env: Mapping[str, str]
    confine: bytes  # absolute directory that nothing may be written outside of (the volume)
    destination: bytes  # absolute directory for a full restore (PREFIX or FILESYSTEM)
    selections: Sequence[Selection]  # empty = the whole image into ``destination``
    log: LogFn
    file_result: FileResultFn
    abort: threading.Event
    history: HistorySink | None = None  # set for RECOVER_FILEHIST: list, write nothing
    overwrite: bool = True  # replace existing files (env says otherwise: keep them)


@dataclass
class RecoverResult:
    entries: int = 0  # entries restored (or listed)
    failed: int = 0  # entries that could not be restored
    bytes_read: int = 0


class Engine(Protocol):
    """A backup format. ``name`` is the NDMP butype; attrs and default env feed GET_BUTYPE_INFO."""

    name: str
    attrs: int
    default_env: Mapping[str, str]

    def backup(self, job: BackupJob) -> None:
        """Write the whole stream for ``job.root`` to ``job.sink``; raise EngineError to fail."""

    def recover(self, job: RecoverJob) -> RecoverResult:
        """Read the stream; restore (or list) it. Raise EngineError for a corrupt stream
        after restoring what came before it."""


def write_batch(sink: object, limit: int) -> int:
    """How many bytes of small members to collect before handing them to ``sink``.

    A sink may set ``write_batch``: one whose reader runs in another process (a pipe, a
    socket with a small send buffer) wants batches well under that buffer, so the reader
    drains one while the next is built; an in-process one wants them large (fewer thread
    switches). Without it, batches fill the whole output buffer.
    """
    n = getattr(sink, "write_batch", None)
    return min(n, limit) if isinstance(n, int) and n > 0 else limit
