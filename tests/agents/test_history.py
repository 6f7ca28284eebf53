"""File history batches decode with the declared FH_ADD_* message layouts."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from ndmpd.agents.history import HistoryBatcher
from ndmpd.protocol import messages as m
from ndmpd.protocol.constants import FileType, FsType, Message


class Collect:
    """Stands in for the session's transport: records what would be posted."""

    def __init__(self) -> None:
        self.posts: list[tuple[Message, bytes]] = []

    def wait_writable(self) -> None:
        pass

    def post_encoded_threadsafe(self, code: Message, body: bytes) -> None:
        self.posts.append((code, body))


def fake_stat(mode: int, size: int, uid: int, mtime: int, nlink: int) -> os.stat_result:
    return os.stat_result((mode, 1, 2, nlink, uid, uid + 1, size, mtime, mtime, mtime))


names = st.binary(min_size=1, max_size=300).filter(lambda b: b"\0" not in b)


@settings(max_examples=60)
@given(
    entries=st.lists(
        st.tuples(
            names,
            st.integers(0, 2**40),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**31),
            st.integers(1, 70000),
        ),
        min_size=1,
        max_size=40,
    ),
    batch=st.integers(1, 4000),
)
def test_add_file_batches_decode(entries: list, batch: int) -> None:
    sink = Collect()
    h = HistoryBatcher(sink, batch_bytes=batch)  # type: ignore[arg-type]
    for i, (name, size, uid, mtime, nlink) in enumerate(entries):
        h.add_file(b"/" + name, fake_stat(0o100644, size, uid, mtime, nlink), i, 512 * i)
    h.flush()
    files = []
    for code, body in sink.posts:
        assert code == Message.FH_ADD_FILE
        files += m.decode_body(m.FhAddFilePost, body).files
    assert len(files) == len(entries) == h.entries
    for i, (f, (name, size, uid, mtime, nlink)) in enumerate(zip(files, entries, strict=True)):
        assert f.names[0].fs_type == FsType.UNIX
        assert os.fsencode(f.names[0].unix_name) == b"/" + name
        s = f.stats[0]
        assert (s.ftype, s.size, s.owner, s.group, s.mtime, s.links, s.fattr) == (
            FileType.REG,
            size,
            uid,
            (uid + 1) & 0xFFFFFFFF,
            mtime,
            nlink,
            0o644,
        )
        assert (f.node, f.fh_info) == (i, 512 * i)


def test_dirs_and_nodes_keep_their_order_across_posts() -> None:
    sink = Collect()
    h = HistoryBatcher(sink)  # type: ignore[arg-type]
    h.add_dir(b".", 2, 2)
    h.add_dir(b"..", 2, 2)
    h.add_dir(b"sub", 3, 2)
    h.add_node(fake_stat(0o40755, 0, 0, 5, 3), 2, 0)
    h.add_dir(b"f", 4, 3)
    h.add_node(fake_stat(0o100600, 9, 7, 5, 1), 4, 1024)
    h.flush()
    kinds = [code for code, _ in sink.posts]
    assert kinds == [
        Message.FH_ADD_DIR,
        Message.FH_ADD_NODE,
        Message.FH_ADD_DIR,
        Message.FH_ADD_NODE,
    ]
    dirs = m.decode_body(m.FhAddDirPost, sink.posts[0][1]).dirs
    assert [(d.names[0].unix_name, d.node, d.parent) for d in dirs] == [
        (".", 2, 2),
        ("..", 2, 2),
        ("sub", 3, 2),
    ]
    node = m.decode_body(m.FhAddNodePost, sink.posts[3][1]).nodes[0]
    assert (node.node, node.fh_info, node.stats[0].size, node.stats[0].fattr) == (4, 1024, 9, 0o600)
    dir_node = m.decode_body(m.FhAddNodePost, sink.posts[1][1]).nodes[0]
    assert dir_node.stats[0].ftype == FileType.DIR and dir_node.stats[0].size == 0
