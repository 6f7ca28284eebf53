"""File history from an engine to the DMA: batched posts with flow control.

Engines call ``add_file`` / ``add_dir`` / ``add_node`` from their worker thread. Entries are
gathered into posts of a bounded size (ndmjob's own server sends about 32 KB per post) and
handed to the event loop. When the control connection's send buffer is full (a slow DMA), the
worker waits instead of queueing more, so memory stays bounded however large the tree is.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from ndmpd.protocol import messages as m
from ndmpd.protocol.constants import ALL_ONES_64, FileType, FsType, Message

if TYPE_CHECKING:
    from ndmpd.server.session import Session

BATCH = 512  # entries per post: about 40 KB of XDR for typical names

_FTYPE = {
    stat.S_IFDIR: FileType.DIR,
    stat.S_IFREG: FileType.REG,
    stat.S_IFLNK: FileType.SLINK,
    stat.S_IFIFO: FileType.FIFO,
    stat.S_IFCHR: FileType.CSPEC,
    stat.S_IFBLK: FileType.BSPEC,
    stat.S_IFSOCK: FileType.SOCK,
}


def file_stat(st: os.stat_result) -> m.FileStat:
    return m.FileStat(
        unsupported=0,
        fs_type=FsType.UNIX,
        ftype=_FTYPE.get(stat.S_IFMT(st.st_mode), FileType.OTHER),
        mtime=int(st.st_mtime) & 0xFFFFFFFF,
        atime=int(st.st_atime) & 0xFFFFFFFF,
        ctime=int(st.st_ctime) & 0xFFFFFFFF,
        owner=st.st_uid & 0xFFFFFFFF,
        group=st.st_gid & 0xFFFFFFFF,
        fattr=stat.S_IMODE(st.st_mode),
        size=st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
        links=st.st_nlink & 0xFFFFFFFF,
    )


def _name(path: bytes) -> m.FileName:
    return m.FileName(fs_type=FsType.UNIX, unix_name=os.fsdecode(path))


class HistoryBatcher:
    """The HistorySink an engine writes to (see ndmpd.engines.base.HistorySink)."""

    def __init__(self, session: Session, batch: int = BATCH) -> None:
        self.session = session
        self.batch = batch
        self.files: list[m.File] = []
        self.dirs: list[m.Dir] = []
        self.nodes: list[m.Node] = []
        self.entries = 0

    def add_file(self, path: bytes, st: os.stat_result, node: int, fh_info: int) -> None:
        self.files.append(
            m.File(
                names=[_name(path)],
                stats=[file_stat(st)],
                node=node & ALL_ONES_64,
                fh_info=fh_info & ALL_ONES_64,
            )
        )
        if len(self.files) >= self.batch:
            self._send(Message.FH_ADD_FILE)

    def add_dir(self, name: bytes, node: int, parent: int) -> None:
        if self.nodes:  # keep the order the engine chose between dirs and nodes
            self._send(Message.FH_ADD_NODE)
        self.dirs.append(m.Dir(names=[_name(name)], node=node, parent=parent))
        if len(self.dirs) >= self.batch:
            self._send(Message.FH_ADD_DIR)

    def add_node(self, st: os.stat_result, node: int, fh_info: int) -> None:
        if self.dirs:
            self._send(Message.FH_ADD_DIR)
        self.nodes.append(m.Node(stats=[file_stat(st)], node=node, fh_info=fh_info & ALL_ONES_64))
        if len(self.nodes) >= self.batch:
            self._send(Message.FH_ADD_NODE)

    def flush(self) -> None:
        for code in (Message.FH_ADD_FILE, Message.FH_ADD_DIR, Message.FH_ADD_NODE):
            self._send(code)

    def _send(self, code: Message) -> None:
        if code == Message.FH_ADD_FILE:
            items, self.files = self.files, []
            body: object = m.FhAddFilePost(files=items)
        elif code == Message.FH_ADD_DIR:
            items, self.dirs = self.dirs, []
            body = m.FhAddDirPost(dirs=items)
        else:
            items, self.nodes = self.nodes, []
            body = m.FhAddNodePost(nodes=items)
        if not items:
            return
        self.entries += len(items)
        self.session.wait_writable()
        self.session.post_threadsafe(code, body)
