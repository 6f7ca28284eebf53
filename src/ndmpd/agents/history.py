"""File history from an engine to the DMA: batched posts with flow control.

Engines call ``add_file`` / ``add_dir`` / ``add_node`` from their worker thread, once per entry
of the tree, so this is a hot path: each entry is XDR-encoded right away with precompiled
``struct`` formats (no per-entry message objects), and a batch becomes one post whose body the
event loop only frames. Batches are bounded (ndmjob's own server sends about 32 KB per post);
when the control connection's send buffer is full (a slow DMA) the worker waits instead of
queueing more, so memory stays bounded however large the tree is. The wire layout is the one
``ndmpd.protocol.messages`` declares for FH_ADD_FILE/DIR/NODE; a test checks the two agree.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import TYPE_CHECKING

from ndmpd.protocol.constants import FileType, FsType, Message

if TYPE_CHECKING:
    from ndmpd.server.session import Session

BATCH_BYTES = 48 << 10  # encoded bytes per post

_FTYPE = {
    stat.S_IFDIR: FileType.DIR,
    stat.S_IFREG: FileType.REG,
    stat.S_IFLNK: FileType.SLINK,
    stat.S_IFIFO: FileType.FIFO,
    stat.S_IFCHR: FileType.CSPEC,
    stat.S_IFBLK: FileType.BSPEC,
    stat.S_IFSOCK: FileType.SOCK,
}
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_ONE_UNIX_NAME = struct.pack(">II", 1, FsType.UNIX)  # names<>: one entry, UNIX arm
# stats<>: one entry: unsupported, fs_type, ftype, mtime, atime, ctime, owner, group, fattr,
# size (u_quad: high, low), links
_STAT = struct.Struct(">I" + "I" * 9 + "QI")
_QUADS = struct.Struct(">QQ")
_COUNT = struct.Struct(">I")


def _xdr_string(data: bytes) -> bytes:
    pad = -len(data) % 4
    return _COUNT.pack(len(data)) + data + b"\0" * pad


def _stat_bytes(st: os.stat_result) -> bytes:
    mode = st.st_mode
    fmt = stat.S_IFMT(mode)
    return _STAT.pack(
        1,
        0,  # unsupported: nothing
        FsType.UNIX,
        _FTYPE.get(fmt, FileType.OTHER),
        int(st.st_mtime) & _M32,
        int(st.st_atime) & _M32,
        int(st.st_ctime) & _M32,
        st.st_uid & _M32,
        st.st_gid & _M32,
        stat.S_IMODE(mode),
        (st.st_size if fmt != stat.S_IFDIR else 0) & _M64,
        st.st_nlink & _M32,
    )


class HistoryBatcher:
    """The HistorySink an engine writes to (see ndmpd.engines.base.HistorySink)."""

    def __init__(self, session: Session, batch_bytes: int = BATCH_BYTES) -> None:
        self.session = session
        self.batch_bytes = batch_bytes
        self.kind: Message | None = None
        self.parts: list[bytes] = []
        self.size = 0
        self.entries = 0

    def _add(self, kind: Message, entry: bytes) -> None:
        if kind is not self.kind and self.parts:
            self._send()
        self.kind = kind
        self.parts.append(entry)
        self.size += len(entry)
        if self.size >= self.batch_bytes:
            self._send()

    def add_file(self, path: bytes, st: os.stat_result, node: int, fh_info: int) -> None:
        self._add(
            Message.FH_ADD_FILE,
            _ONE_UNIX_NAME
            + _xdr_string(path)
            + _stat_bytes(st)
            + _QUADS.pack(node & _M64, fh_info & _M64),
        )

    def add_dir(self, name: bytes, node: int, parent: int) -> None:
        self._add(
            Message.FH_ADD_DIR,
            _ONE_UNIX_NAME + _xdr_string(name) + _QUADS.pack(node & _M64, parent & _M64),
        )

    def add_node(self, st: os.stat_result, node: int, fh_info: int) -> None:
        self._add(Message.FH_ADD_NODE, _stat_bytes(st) + _QUADS.pack(node & _M64, fh_info & _M64))

    def flush(self) -> None:
        if self.parts:
            self._send()

    def _send(self) -> None:
        kind, parts = self.kind, self.parts
        self.parts, self.size = [], 0
        if kind is None or not parts:
            return
        self.entries += len(parts)
        body = _COUNT.pack(len(parts)) + b"".join(parts)
        self.session.wait_writable()
        self.session.post_encoded_threadsafe(kind, body)
