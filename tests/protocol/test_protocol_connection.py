"""The sans-IO endpoint: headers, events per role, sending, sequence numbers, fuzz."""

from __future__ import annotations

import random
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_strategies import for_class, headers

from ndmpd.protocol import messages as m
from ndmpd.protocol.connection import (
    NEED_DATA,
    BadMessage,
    BadRequest,
    ConnectionClosed,
    Header,
    NdmpConnection,
    Post,
    ProtocolBroken,
    Reply,
    Request,
    UnknownRequest,
)
from ndmpd.protocol.constants import (
    ConnectionStatusReason,
    Error,
    Message,
    MessageType,
    TapeOpenMode,
)
from ndmpd.protocol.framing import LAST_FRAGMENT, frame


def events(conn: NdmpConnection) -> list[object]:
    out = []
    while (ev := conn.next_event()) is not NEED_DATA:
        out.append(ev)
        if isinstance(ev, ConnectionClosed | ProtocolBroken):
            break
    return out


def raw_message(
    mtype: int, code: int, body: bytes = b"", seq: int = 1, rseq: int = 0, err: int = 0
) -> bytes:
    return frame(Header(seq, 0, mtype, code, rseq, err).pack() + body)


# --------------------------------------------------------------------------- header


@given(headers)
def test_header_round_trip(h: Header) -> None:
    packed = h.pack()
    assert len(packed) == 24
    assert Header.unpack(packed) == h
    assert Header.unpack(packed + b"extra") == h


def test_header_layout() -> None:
    h = Header(1, 0x5F5E1000, MessageType.REPLY, Message.TAPE_OPEN, 7, Error.IO_ERR)
    assert h.pack() == bytes.fromhex("00000001 5f5e1000 00000001 00000300 00000007 00000007")
    unknown = Header.unpack(bytes.fromhex("00000001 00000000 00000000 00007777 00000000 00000063"))
    assert unknown.message_code == 0x7777 and unknown.error_code == 99
    with pytest.raises(ValueError):
        Header.unpack(bytes(23))


# ------------------------------------------------------------------------ server role


def test_byte_exact_connect_open_request() -> None:
    client = NdmpConnection("client")
    before = int(time.time())
    data, seq = client.send_request(Message.CONNECT_OPEN, m.ConnectOpenRequest(4))
    assert seq == 1
    assert data[:4] == bytes.fromhex("8000001c")
    assert data[4:8] == bytes.fromhex("00000001")
    assert before <= struct.unpack(">I", data[8:12])[0] <= int(time.time())
    assert data[12:] == bytes.fromhex("00000000 00000900 00000000 00000000 00000004")


def test_server_decodes_requests_and_replies_with_sequences() -> None:
    server, client = NdmpConnection("server"), NdmpConnection("client")
    hello = server.send_post(
        Message.NOTIFY_CONNECTION_STATUS,
        m.NotifyConnectionStatusPost(ConnectionStatusReason.CONNECTED, 4, ""),
    )
    data1, s1 = client.send_request(
        Message.TAPE_OPEN, m.TapeOpenRequest("nrst0a", TapeOpenMode.RDWR)
    )
    data2, s2 = client.send_request(Message.TAPE_CLOSE)
    assert (s1, s2) == (1, 2)
    server.receive_data(data1 + data2)
    ev1, ev2 = events(server)
    assert isinstance(ev1, Request) and ev1.code is Message.TAPE_OPEN
    assert ev1.body == m.TapeOpenRequest("nrst0a", TapeOpenMode.RDWR)
    assert isinstance(ev2, Request) and ev2.body == m.TapeCloseRequest()
    r1 = server.send_reply(ev1.header, m.TapeOpenReply(Error.NO_TAPE_LOADED_ERR))
    r2 = server.send_reply(ev2.header, m.TapeCloseReply())
    client.receive_data(hello + r1 + r2)
    post, rep1, rep2 = events(client)
    assert isinstance(post, Post) and post.header.sequence == 1
    assert post.body.protocol_version == 4
    assert isinstance(rep1, Reply) and rep1.header.reply_sequence == s1
    assert rep1.header.sequence == 2 and rep1.error is Error.NO_TAPE_LOADED_ERR
    assert isinstance(rep2, Reply) and rep2.header.sequence == 3 and rep2.error is Error.NO_ERR
    assert server.last_sequence == 3


def test_unknown_code_and_header_error_reply() -> None:
    server, client = NdmpConnection("server"), NdmpConnection("client")
    data, seq = client.send_request(0x20000001, b"\x00\x00\x00\x01")
    server.receive_data(data)
    (ev,) = events(server)
    assert isinstance(ev, UnknownRequest) and ev.header.message_code == 0x20000001
    reply = server.send_reply(ev.header, None, Error.NOT_SUPPORTED_ERR)
    assert len(reply) == 4 + 24  # no body
    client.receive_data(reply)
    (rep,) = events(client)
    assert isinstance(rep, Reply) and rep.body is None and rep.error is Error.NOT_SUPPORTED_ERR
    assert rep.header.reply_sequence == seq


def test_header_error_reply_to_known_code_has_no_body() -> None:
    server, client = NdmpConnection("server"), NdmpConnection("client")
    data, _ = client.send_request(Message.CONNECT_SERVER_AUTH)
    server.receive_data(data)
    (ev,) = events(server)
    client.receive_data(
        server.send_reply(ev.header, m.ConnectServerAuthReply(), Error.NOT_SUPPORTED_ERR)
    )
    (rep,) = events(client)
    assert isinstance(rep, Reply) and rep.body is None and rep.code is Message.CONNECT_SERVER_AUTH


def test_bad_bodies_become_bad_request_events() -> None:
    server = NdmpConnection("server")
    truncated = raw_message(0, Message.TAPE_OPEN, struct.pack(">I", 9) + b"abc\0")
    illegal = raw_message(0, Message.TAPE_MTIO, struct.pack(">II", 99, 1), seq=2)
    too_long = raw_message(0, Message.SCSI_OPEN, struct.pack(">I", 2000) + bytes(2000), seq=3)
    trailing = raw_message(0, Message.TAPE_CLOSE, bytes(4), seq=4)
    server.receive_data(truncated + illegal + too_long + trailing)
    evs = events(server)
    assert [type(e) for e in evs] == [BadRequest] * 4
    assert [e.error for e in evs] == [  # type: ignore[attr-defined]
        Error.XDR_DECODE_ERR,
        Error.ILLEGAL_ARGS_ERR,
        Error.ILLEGAL_ARGS_ERR,
        Error.XDR_DECODE_ERR,
    ]
    assert [e.header.sequence for e in evs] == [1, 2, 3, 4]  # type: ignore[attr-defined]


def test_short_records_and_wrong_direction_are_dropped_and_counted() -> None:
    server = NdmpConnection("server")
    server.receive_data(frame(b"") + frame(bytes(23)))
    server.receive_data(raw_message(MessageType.REPLY, Message.CONNECT_OPEN, bytes(4)))
    server.receive_data(raw_message(7, Message.CONNECT_OPEN, bytes(4)))
    server.receive_data(raw_message(0, Message.CONNECT_OPEN, struct.pack(">I", 4), seq=9))
    (ev,) = events(server)
    assert isinstance(ev, Request) and ev.header.sequence == 9
    assert server.dropped_short == 2
    assert server.dropped_wrong_direction == 2
    client = NdmpConnection("client")
    client.receive_data(raw_message(0, Message.TAPE_OPEN, bytes(8)))  # a request to a client
    assert events(client) == []
    assert client.dropped_wrong_direction == 1


def test_tape_write_data_is_a_zero_copy_view() -> None:
    server, client = NdmpConnection("server"), NdmpConnection("client")
    payload = bytes(range(256)) * 4096
    data, _ = client.send_request(Message.TAPE_WRITE, m.TapeWriteRequest(payload))
    server.receive_data(data)
    (ev,) = events(server)
    assert isinstance(ev, Request)
    assert isinstance(ev.body.data_out, memoryview) and ev.body.data_out == payload


def test_eof_and_truncated_eof() -> None:
    server = NdmpConnection("server")
    server.receive_data(b"")
    assert events(server) == [ConnectionClosed(False)]
    assert server.next_event() == ConnectionClosed(False)
    with pytest.raises(RuntimeError):
        server.receive_data(b"x")
    server = NdmpConnection("server")
    server.receive_data(raw_message(0, Message.TAPE_CLOSE)[:10])
    server.receive_data(b"")
    assert events(server) == [ConnectionClosed(True)]


def test_oversize_record_breaks_the_protocol_after_earlier_records() -> None:
    server = NdmpConnection("server", max_record=1000)
    ok = raw_message(0, Message.TAPE_CLOSE)
    server.receive_data(ok + struct.pack(">I", LAST_FRAGMENT | 5000) + bytes(100))
    server.receive_data(bytes(100))  # ignored once broken
    first, second = events(server)
    assert isinstance(first, Request)
    assert isinstance(second, ProtocolBroken) and "1000" in second.detail
    assert isinstance(server.next_event(), ProtocolBroken)


def test_client_bad_reply_body() -> None:
    client = NdmpConnection("client")
    client.receive_data(raw_message(1, Message.TAPE_GET_STATE, bytes(8)))
    client.receive_data(raw_message(0, Message.NOTIFY_DATA_HALTED, struct.pack(">I", 77)))
    a, b = events(client)
    assert isinstance(a, BadMessage) and a.error is Error.XDR_DECODE_ERR
    assert isinstance(b, BadMessage) and b.error is Error.ILLEGAL_ARGS_ERR


def test_roles_and_body_types_are_checked() -> None:
    server, client = NdmpConnection("server"), NdmpConnection("client")
    with pytest.raises(RuntimeError):
        server.send_request(Message.CONNECT_OPEN)
    with pytest.raises(RuntimeError):
        client.send_reply(Header(), None)
    with pytest.raises(RuntimeError):
        client.send_post(Message.NOTIFY_DATA_HALTED, m.NotifyDataHaltedPost())
    with pytest.raises(TypeError):
        client.send_request(Message.TAPE_OPEN, m.TapeCloseRequest())
    with pytest.raises(TypeError):
        server.send_reply(Header(message_code=Message.TAPE_OPEN), m.TapeCloseReply())
    with pytest.raises(ValueError):
        server.send_post(Message.TAPE_OPEN, m.TapeOpenRequest())
    with pytest.raises(ValueError):
        NdmpConnection("peer")  # type: ignore[arg-type]
    # a failed send does not consume a sequence number
    with pytest.raises(ValueError):
        server.send_reply(
            Header(message_code=Message.TAPE_READ),
            m.TapeReadReply(data_in=bytes(m.MAX_TAPE_DATA)),
        )
    assert server.last_sequence == 0
    server.send_reply(
        Header(message_code=Message.TAPE_READ), m.TapeReadReply(data_in=bytes(m.MAX_SEND_DATA))
    )
    assert server.last_sequence == 1


@pytest.mark.parametrize("code", list(m.POSTS), ids=lambda c: c.name)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_posts_round_trip_through_both_roles(code: Message, data: st.DataObject) -> None:
    server, client = NdmpConnection("server"), NdmpConnection("client")
    body = data.draw(for_class(m.POSTS[code]))
    client.receive_data(server.send_post(code, body))
    (ev,) = events(client)
    assert isinstance(ev, Post) and ev.code is code and ev.body == body


@pytest.mark.parametrize("code", list(m.REQUESTS), ids=lambda c: c.name)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_requests_and_replies_round_trip(code: Message, data: st.DataObject) -> None:
    server, client = NdmpConnection("server"), NdmpConnection("client")
    req = data.draw(for_class(m.REQUESTS[code]))
    wire, seq = client.send_request(code, req)
    server.receive_data(wire)
    (ev,) = events(server)
    assert isinstance(ev, Request) and ev.code is code and ev.body == req
    rep = data.draw(for_class(m.REPLIES[code]))
    client.receive_data(server.send_reply(ev.header, rep))
    (back,) = events(client)
    assert isinstance(back, Reply) and back.body == rep and back.header.reply_sequence == seq


# ------------------------------------------------------------------------------- fuzz

_OK_EVENTS = (Request, BadRequest, UnknownRequest, Reply, Post, BadMessage)


@pytest.mark.parametrize("role", ["server", "client"])
@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=8), data=st.data())
def test_random_stream_yields_only_documented_events(
    role: str, chunks: list[bytes], data: st.DataObject
) -> None:
    conn = NdmpConnection(role, max_record=4096)  # type: ignore[arg-type]
    # Half the time, wrap random bodies in a plausible record so decoding is exercised.
    if data.draw(st.booleans()):
        code = data.draw(st.sampled_from([*list(Message), 0x7777]))
        mtype = data.draw(st.sampled_from([0, 1, 2]))
        chunks = [raw_message(mtype, code, b"".join(chunks))]
    for c in chunks:
        if c:
            conn.receive_data(c)
    seen = events(conn)
    conn.receive_data(b"")
    seen += events(conn)
    terminal = [i for i, e in enumerate(seen) if isinstance(e, ConnectionClosed | ProtocolBroken)]
    assert terminal, seen
    assert all(isinstance(e, _OK_EVENTS) for e in seen[: terminal[0]])


def test_mutated_valid_records_into_the_server() -> None:
    rng = random.Random(4)
    client = NdmpConnection("client")
    samples = [
        client.send_request(
            Message.DATA_START_RECOVER,
            m.DataStartRecoverRequest(
                env=[m.Pval("FILESYSTEM", "/svm1/vol1")],
                nlist=[m.Name("a/b", "/tmp/r", "", "", 2**64 - 1, 2**64 - 1)] * 3,
                butype_name="dump",
            ),
        )[0],
        client.send_request(
            Message.MOVER_CONNECT,
            m.MoverConnectRequest(
                addr=m.Addr(m.AddrType.TCP, [m.TcpAddr(0x7F000001, 10001, [m.Pval("k", "v")])])
            ),
        )[0],
        client.send_request(
            Message.CONNECT_CLIENT_AUTH,
            m.ConnectClientAuthRequest(m.AuthData(m.AuthType.MD5, "ndmp", auth_digest=bytes(16))),
        )[0],
    ]
    counts: dict[str, int] = {}
    for _ in range(3000):
        wire = bytearray(rng.choice(samples))
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(4, len(wire))
            wire[i] = rng.randrange(256)
        server = NdmpConnection("server", max_record=1 << 16)
        server.receive_data(bytes(wire))
        server.receive_data(b"")
        for ev in events(server):
            counts[type(ev).__name__] = counts.get(type(ev).__name__, 0) + 1
            assert isinstance(ev, (*_OK_EVENTS, ConnectionClosed, ProtocolBroken))
    assert counts["BadRequest"] > 100 and counts["Request"] > 100


def test_client_reassembles_ndmjob_style_fragmented_post() -> None:
    """A 32 KiB FH_ADD_FILE post cut into 3 996-byte fragments, as NDMJOB's xdrrec sends."""
    server, client = NdmpConnection("server"), NdmpConnection("client")
    files = [
        m.File([m.FileName(m.FsType.UNIX, f"/d/file{i:04d}")], [m.FileStat(size=i)], i, 512 * i)
        for i in range(300)
    ]
    framed = server.send_post(Message.FH_ADD_FILE, m.FhAddFilePost(files))
    record = framed[4:]
    cut = b"".join(
        struct.pack(">I", (LAST_FRAGMENT if i + 3996 >= len(record) else 0) | len(chunk)) + chunk
        for i in range(0, len(record), 3996)
        for chunk in [record[i : i + 3996]]
    )
    assert len(record) > 4 * 3996
    for i in range(0, len(cut), 1000):
        client.receive_data(cut[i : i + 1000])
    (ev,) = events(client)
    assert isinstance(ev, Post) and ev.body.files == files


@pytest.mark.parametrize("code", list(m.REPLIES), ids=lambda c: c.name)
def test_every_error_reply_is_sendable(code: Message) -> None:
    server, client = NdmpConnection("server"), NdmpConnection("client")
    wire, _ = client.send_request(code)
    server.receive_data(wire)
    (ev,) = events(server)
    assert isinstance(ev, Request)
    client.receive_data(server.send_reply(ev.header, m.error_reply(code, Error.ILLEGAL_STATE_ERR)))
    (rep,) = events(client)
    assert isinstance(rep, Reply)
    expected = Error.NO_ERR if code is Message.CONNECT_CLOSE else Error.ILLEGAL_STATE_ERR
    assert rep.error == expected
