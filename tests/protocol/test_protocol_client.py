"""The blocking client against a tiny NDMP responder of our own on 127.0.0.1 (the real server
is tested elsewhere). The responder is built from NdmpConnection("server"), so this also
exercises the server role over a real socket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from ndmpd.protocol import messages as m
from ndmpd.protocol.auth import md5_digest, new_challenge
from ndmpd.protocol.client import NdmpCallError, NdmpClient
from ndmpd.protocol.connection import (
    NEED_DATA,
    BadRequest,
    ConnectionClosed,
    NdmpConnection,
    ProtocolBroken,
    Request,
    UnknownRequest,
)
from ndmpd.protocol.constants import (
    AuthType,
    ConnectionStatusReason,
    DataHaltReason,
    Error,
    LogType,
    Message,
)

USER, PASSWORD = "ndmp", "s3cret"


def _serve_one(sock: socket.socket, received: list[object]) -> None:
    conn = NdmpConnection("server")
    challenge: bytes | None = None
    sock.sendall(
        conn.send_post(
            Message.NOTIFY_CONNECTION_STATUS,
            m.NotifyConnectionStatusPost(ConnectionStatusReason.CONNECTED, 4, ""),
        )
    )
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        received.append(ev)
        if isinstance(ev, ConnectionClosed | ProtocolBroken):
            return
        out = b""
        if isinstance(ev, UnknownRequest):
            out = conn.send_reply(ev.header, None, Error.NOT_SUPPORTED_ERR)
        elif isinstance(ev, BadRequest):
            out = conn.send_reply(ev.header, m.error_reply(ev.header.message_code, ev.error))
        elif isinstance(ev, Request):
            body: object = m.error_reply(ev.code, Error.NO_ERR)
            if ev.code is Message.CONFIG_GET_AUTH_ATTR:
                challenge = new_challenge()
                body = m.ConfigGetAuthAttrReply(server_attr=m.AuthAttr(AuthType.MD5, challenge))
            elif ev.code is Message.CONNECT_CLIENT_AUTH:
                a = ev.body.auth_data
                ok = a.auth_id == USER and (
                    (a.auth_type == AuthType.TEXT and a.auth_password == PASSWORD)
                    or (
                        a.auth_type == AuthType.MD5
                        and challenge is not None
                        and a.auth_digest == md5_digest(PASSWORD.encode(), challenge)
                    )
                )
                body = m.ConnectClientAuthReply(Error.NO_ERR if ok else Error.NOT_AUTHORIZED_ERR)
            elif ev.code is Message.TAPE_OPEN:
                # a post that arrives before the reply
                out += conn.send_post(
                    Message.LOG_MESSAGE,
                    m.LogMessagePost(LogType.NORMAL, 1, f"opening {ev.body.device}"),
                )
                body = m.TapeOpenReply(Error.NO_DEVICE_ERR)
            elif ev.code is Message.DATA_ABORT:
                body = m.DataAbortReply()
                reply = conn.send_reply(ev.header, body)
                halted = conn.send_post(
                    Message.NOTIFY_DATA_HALTED, m.NotifyDataHaltedPost(DataHaltReason.ABORTED)
                )
                sock.sendall(reply + halted)
                continue
            elif ev.code is Message.TAPE_WRITE:
                body = m.TapeWriteReply(count=len(ev.body.data_out))
            out += conn.send_reply(ev.header, body)
        sock.sendall(out)


@pytest.fixture
def server() -> Iterator[tuple[int, list[object], threading.Thread]]:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    received: list[object] = []

    def run() -> None:
        s, _ = lsock.accept()
        with s:
            _serve_one(s, received)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield lsock.getsockname()[1], received, t
    finally:
        t.join(5)
        lsock.close()
    assert not t.is_alive()


def test_session_with_md5_posts_and_errors(
    server: tuple[int, list[object], threading.Thread],
) -> None:
    port, received, thread = server
    with NdmpClient("127.0.0.1", port, timeout=5) as c:
        assert c.open(check=True).error == Error.NO_ERR
        hello = c.wait_post(Message.NOTIFY_CONNECTION_STATUS)
        assert hello.body.reason is ConnectionStatusReason.CONNECTED
        assert c.auth_md5(USER, PASSWORD).error == Error.NO_ERR
        assert c.auth_md5(USER, "wrong").error == Error.NOT_AUTHORIZED_ERR
        assert c.auth_text(USER, PASSWORD).error == Error.NO_ERR
        with pytest.raises(NdmpCallError) as e:
            c.auth_text(USER, b"nope", check=True)
        assert e.value.error == Error.NOT_AUTHORIZED_ERR
        r = c.call(Message.TAPE_OPEN, m.TapeOpenRequest("nrst9a"))
        assert r.error == Error.NO_DEVICE_ERR
        log = c.wait_post(Message.LOG_MESSAGE)
        assert log.body.entry == "opening nrst9a"
        r = c.call(Message.TAPE_WRITE, m.TapeWriteRequest(bytes(3 * 1024 * 1024)))
        assert r.body.count == 3 * 1024 * 1024
        r = c.call(0x7777)
        assert r.body is None and r.error == Error.NOT_SUPPORTED_ERR
        r = c.call(Message.TAPE_MTIO, b"\0\0\0\x63\0\0\0\1")  # op 99: out of the enum
        assert r.error == Error.ILLEGAL_ARGS_ERR
        c.call(Message.DATA_ABORT, check=True)
        assert c.wait_post(Message.NOTIFY_DATA_HALTED).body.reason is DataHaltReason.ABORTED
        with pytest.raises(TimeoutError):
            c.wait_post(Message.NOTIFY_MOVER_HALTED, timeout=0.2)
        assert c.posts == []
        sent = c.conn.last_sequence
    thread.join(5)
    assert isinstance(received[-1], ConnectionClosed)
    seqs = [e.header.sequence for e in received if hasattr(e, "header")]  # type: ignore[attr-defined]
    assert seqs == list(range(1, sent + 1)) and sent == 12  # numbered from 1, no gaps


def test_send_raw_and_peer_close(server: tuple[int, list[object], threading.Thread]) -> None:
    port, received, thread = server
    c = NdmpClient("127.0.0.1", port, timeout=5)
    try:
        c.send_raw(b"\x80\x00\x00\x04abcd")  # a record too short for a header: dropped
        assert c.call(Message.CONFIG_GET_HOST_INFO).error == Error.NO_ERR
        c.send_raw(b"\x7f\xff\xff\xff")  # a fragment far past the record limit
        ev = c.next_event()
        # the responder ends the session when the stream breaks
        assert isinstance(ev, ConnectionClosed)
        with pytest.raises(ConnectionError):
            c.call(Message.CONFIG_GET_HOST_INFO)
    finally:
        c.close()
    thread.join(5)
    assert isinstance(received[-1], ProtocolBroken)
