"""A small blocking NDMP client (a Python DMA) for tests and tools, over a plain socket.

It is a thin shell around ``NdmpConnection("client")``: ``call`` sends one request and returns
its reply, keeping any posts that arrive meanwhile in ``posts`` for ``wait_post``.
"""

from __future__ import annotations

import socket
import time
from types import TracebackType
from typing import Any

from ndmpd.protocol import messages as m
from ndmpd.protocol.auth import md5_digest
from ndmpd.protocol.connection import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    NdmpConnection,
    Post,
    ProtocolBroken,
    Reply,
)
from ndmpd.protocol.constants import DEFAULT_PORT, NDMP_VERSION, AuthType, Error, Message

__all__ = ["NdmpCallError", "NdmpClient"]

_RECV_SIZE = 1 << 20


class NdmpCallError(Exception):
    """A reply carried an error (raised only when the caller asked for ``check=True``)."""

    def __init__(self, reply: Reply) -> None:
        err = reply.error
        name = Error(err).name if err in Error._value2member_map_ else str(err)
        code = reply.code.name if isinstance(reply.code, Message) else hex(reply.code)
        super().__init__(f"{code}: {name}")
        self.reply = reply
        self.error = err


class NdmpClient:
    """One NDMP control connection from the DMA side, blocking, with a per-call timeout."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = NdmpConnection("client")
        self.posts: list[Post] = []
        """Posts received and not yet taken by ``wait_post``, oldest first."""
        self.stray: list[Event] = []
        """Other events nobody asked for (unmatched replies, undecodable messages)."""
        self.closed_by_peer = False

    # ----------------------------------------------------------------------- plumbing

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def next_event(self, timeout: float | None = None) -> Event:
        """The next event of any kind (posts are returned, not stored); TimeoutError if none."""
        deadline = self._deadline(timeout)
        while True:
            ev = self.conn.next_event()
            if ev is not NEED_DATA:
                if isinstance(ev, ConnectionClosed | ProtocolBroken):
                    self.closed_by_peer = True
                return ev
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no NDMP message from the server in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(_RECV_SIZE)
            except TimeoutError:
                raise TimeoutError("no NDMP message from the server in time") from None
            except OSError:
                data = b""  # reset by peer: same as EOF for our purposes
            self.conn.receive_data(data)

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (framed or not), for testing the server with odd input."""
        self.sock.sendall(data)

    # ------------------------------------------------------------------------ requests

    def send(self, code: Message | int, body: object | bytes | None = None) -> int:
        """Send a request without waiting; returns its sequence number (see ``reply_to``)."""
        data, seq = self.conn.send_request(code, body)
        self.sock.sendall(data)
        return seq

    def reply_to(self, sequence: int, timeout: float | None = None) -> Reply:
        """Wait for the reply to request ``sequence``, storing posts that arrive first."""
        deadline = self._deadline(timeout)
        while True:
            ev = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(ev, Reply) and ev.header.reply_sequence == sequence:
                return ev
            if isinstance(ev, Post):
                self.posts.append(ev)
            elif isinstance(ev, ConnectionClosed | ProtocolBroken):
                raise ConnectionError(f"connection ended before the reply: {ev}")
            else:
                self.stray.append(ev)

    def call(
        self,
        code: Message | int,
        body: object | bytes | None = None,
        *,
        check: bool = False,
        timeout: float | None = None,
    ) -> Reply:
        """Send one request and return its reply. ``body`` None sends the default body.
        ``check=True`` raises NdmpCallError if the reply carries an error."""
        reply = self.reply_to(self.send(code, body), timeout)
        if check and reply.error:
            raise NdmpCallError(reply)
        return reply

    def wait_post(self, code: Message, timeout: float | None = None) -> Post:
        """The oldest stored or next arriving post with ``code`` (TimeoutError if none)."""
        for i, post in enumerate(self.posts):
            if post.code == code:
                return self.posts.pop(i)
        deadline = self._deadline(timeout)
        while True:
            ev = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(ev, Post):
                if ev.code == code:
                    return ev
                self.posts.append(ev)
            elif isinstance(ev, ConnectionClosed | ProtocolBroken):
                raise ConnectionError(f"connection ended while waiting for {code!r}: {ev}")
            else:
                self.stray.append(ev)

    # ----------------------------------------------------------------------- shortcuts

    def open(self, version: int = NDMP_VERSION, *, check: bool = False) -> Reply:
        """CONNECT_OPEN."""
        return self.call(Message.CONNECT_OPEN, m.ConnectOpenRequest(version), check=check)

    def auth_text(self, user: str, password: str | bytes, *, check: bool = False) -> Reply:
        """CONNECT_CLIENT_AUTH with a clear-text password."""
        pw = password if isinstance(password, str) else password.decode("utf-8", "surrogateescape")
        data = m.AuthData(AuthType.TEXT, auth_id=user, auth_password=pw)
        return self.call(Message.CONNECT_CLIENT_AUTH, m.ConnectClientAuthRequest(data), check=check)

    def auth_md5(self, user: str, password: str | bytes, *, check: bool = False) -> Reply:
        """CONFIG_GET_AUTH_ATTR(MD5) for a challenge, then CONNECT_CLIENT_AUTH with the digest.
        Returns the GET_AUTH_ATTR reply instead if that one failed."""
        attr = self.call(
            Message.CONFIG_GET_AUTH_ATTR,
            m.ConfigGetAuthAttrRequest(AuthType.MD5),
            check=check,
        )
        if attr.error:
            return attr
        pw = password.encode("utf-8", "surrogateescape") if isinstance(password, str) else password
        digest = md5_digest(pw, attr.body.server_attr.challenge)
        data = m.AuthData(AuthType.MD5, auth_id=user, auth_digest=digest)
        return self.call(Message.CONNECT_CLIENT_AUTH, m.ConnectClientAuthRequest(data), check=check)

    # ---------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the socket (the polite CONNECT_CLOSE is up to the caller)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> NdmpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            peer: Any = self.sock.getpeername()
        except OSError:
            peer = "closed"
        return f"<NdmpClient {peer}>"
