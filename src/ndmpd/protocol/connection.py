"""The sans-IO NDMP endpoint: bytes in, events out; bodies in, framed bytes out (like ``h11``).

One ``NdmpConnection`` per control connection. The server role turns DMA bytes into
``Request`` / ``BadRequest`` / ``UnknownRequest`` events and builds replies and posts; the client
role (our tests and tools: a Python DMA) turns server bytes into ``Reply`` / ``Post`` events and
builds requests. No I/O, no clocks beyond ``time.time()`` for the header time stamp.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

from ndmpd.protocol.constants import Error, Message, MessageType
from ndmpd.protocol.framing import (
    DEFAULT_MAX_RECORD,
    MAX_FRAGMENT,
    FramingError,
    RecordReader,
    frame_parts,
)
from ndmpd.protocol.messages import POSTS, REPLIES, REQUESTS, decode_body, encode_body_parts
from ndmpd.protocol.xdr import XdrArgsError, XdrError

__all__ = [
    "HEADER_SIZE",
    "NEED_DATA",
    "BadMessage",
    "BadRequest",
    "ConnectionClosed",
    "Event",
    "Header",
    "NdmpConnection",
    "NeedData",
    "Post",
    "ProtocolBroken",
    "Reply",
    "Request",
    "UnknownRequest",
]

HEADER_SIZE: Final = 24
_HEADER = struct.Struct(">IIIIII")
_MESSAGES = {int(m): m for m in Message}
_ERRORS = {int(e): e for e in Error}
_TYPES = {int(t): t for t in MessageType}


@dataclass(slots=True)
class Header:
    """The 24-byte message header (spec §2). Known codes decode to their enums, others to int."""

    sequence: int = 0
    time_stamp: int = 0
    message_type: int = MessageType.REQUEST
    message_code: int = 0
    reply_sequence: int = 0
    error_code: int = Error.NO_ERR

    SIZE: ClassVar[int] = HEADER_SIZE

    def pack(self) -> bytes:
        try:
            return _HEADER.pack(
                self.sequence,
                self.time_stamp,
                self.message_type,
                self.message_code,
                self.reply_sequence,
                self.error_code,
            )
        except struct.error as e:
            raise ValueError(f"header field out of range: {e}") from None

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Header:
        """Decode the first 24 bytes of ``data`` (ValueError if there are fewer)."""
        if len(data) < HEADER_SIZE:
            raise ValueError(f"an NDMP header needs {HEADER_SIZE} bytes, got {len(data)}")
        seq, ts, mtype, code, rseq, err = _HEADER.unpack_from(data, 0)
        return cls(
            seq,
            ts,
            _TYPES.get(mtype, mtype),
            _MESSAGES.get(code, code),
            rseq,
            _ERRORS.get(err, err),
        )


# --------------------------------------------------------------------------------- events


class NeedData:
    """Sentinel: no complete message yet; feed more bytes."""

    _instance: ClassVar[NeedData | None] = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(slots=True, frozen=True)
class Request:
    """A decoded request (server role)."""

    header: Header
    code: Message
    body: Any


@dataclass(slots=True, frozen=True)
class Reply:
    """A reply (client role). ``body`` is None when the header carries an error, or when the
    code is not a v4 request (then ``code`` is a plain int)."""

    header: Header
    code: Message | int
    body: Any | None

    @property
    def error(self) -> Error | int:
        """The header error if any, else the body's ``error`` field (NO_ERR if it has none)."""
        if self.header.error_code:
            return self.header.error_code
        return getattr(self.body, "error", Error.NO_ERR)


@dataclass(slots=True, frozen=True)
class Post:
    """A notification, log or file-history post (client role)."""

    header: Header
    code: Message | int
    body: Any | None


@dataclass(slots=True, frozen=True)
class BadRequest:
    """A request whose header decoded but whose body did not; reply with ``error``
    (XDR_DECODE_ERR for malformed XDR, ILLEGAL_ARGS_ERR for a value over a limit)."""

    header: Header
    error: Error
    detail: str


@dataclass(slots=True, frozen=True)
class BadMessage:
    """Client role: a reply or post whose body did not decode."""

    header: Header
    error: Error
    detail: str


@dataclass(slots=True, frozen=True)
class UnknownRequest:
    """A request whose code is not a v4 request; the server replies NOT_SUPPORTED_ERR."""

    header: Header


@dataclass(slots=True, frozen=True)
class ConnectionClosed:
    """The peer closed its side. ``truncated``: it did so in the middle of a record."""

    truncated: bool = False


@dataclass(slots=True, frozen=True)
class ProtocolBroken:
    """The stream cannot be framed any more (oversize record); close the connection."""

    detail: str


Event = (
    Request
    | Reply
    | Post
    | BadRequest
    | BadMessage
    | UnknownRequest
    | ConnectionClosed
    | ProtocolBroken
    | NeedData
)


# ----------------------------------------------------------------------------- connection


class NdmpConnection:
    """One end of an NDMP control connection, without I/O.

    Feed received bytes with ``receive_data`` (``b""`` at EOF) and drain ``next_event`` until
    it returns ``NEED_DATA``; send the bytes that ``send_*`` return, in the order returned.
    """

    def __init__(
        self,
        role: Literal["server", "client"],
        max_record: int = DEFAULT_MAX_RECORD,
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        self.role: Literal["server", "client"] = role
        self._reader = RecordReader(max_record)
        self._eof = False
        self._truncated = False
        self._broken: str | None = None
        self._seq = 0
        self.dropped_short = 0
        """Records shorter than a header, dropped (spec §2)."""
        self.dropped_wrong_direction = 0
        """Messages of a type this role never receives (e.g. a reply sent to the server)."""
        self.messages_received = 0
        self.messages_sent = 0

    # -------------------------------------------------------------------------- receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the peer; ``b""`` means EOF. Never raises for bad input."""
        if self._eof:
            raise RuntimeError("receive_data after EOF")
        if not data:
            self._eof = True
            self._truncated = self._reader.mid_record
            return
        if self._broken is not None:
            return  # nothing more can be framed; the owner is closing the connection
        try:
            self._reader.feed(data)
        except FramingError as e:
            self._broken = str(e)

    def next_event(self) -> Event:
        """The next event, or ``NEED_DATA``. After EOF / breakage it keeps returning that."""
        while True:
            record = self._reader.next_record()
            if record is None:
                if self._broken is not None:
                    return ProtocolBroken(self._broken)
                if self._eof:
                    return ConnectionClosed(self._truncated)
                return NEED_DATA
            event = self._process(record)
            if event is not None:
                self.messages_received += 1
                return event

    def _process(self, record: bytes) -> Event | None:
        if len(record) < HEADER_SIZE:
            self.dropped_short += 1
            return None
        header = Header.unpack(record)
        code = header.message_code
        body = memoryview(record)[HEADER_SIZE:]
        if self.role == "server":
            if header.message_type != MessageType.REQUEST:
                self.dropped_wrong_direction += 1
                return None
            cls = REQUESTS.get(code)  # type: ignore[call-overload]
            if cls is None:
                return UnknownRequest(header)
            try:
                return Request(header, code, decode_body(cls, body))  # type: ignore[arg-type]
            except XdrArgsError as e:
                return BadRequest(header, Error.ILLEGAL_ARGS_ERR, str(e))
            except XdrError as e:
                return BadRequest(header, Error.XDR_DECODE_ERR, str(e))
        if header.message_type == MessageType.REPLY:
            cls = REPLIES.get(code)  # type: ignore[call-overload]
            if cls is None or header.error_code:
                return Reply(header, code, None)
            kind: type[Reply] | type[Post] = Reply
        elif header.message_type == MessageType.REQUEST:
            cls = POSTS.get(code)  # type: ignore[call-overload]
            if cls is None:
                self.dropped_wrong_direction += 1
                return None
            kind = Post
        else:
            self.dropped_wrong_direction += 1
            return None
        try:
            return kind(header, code, decode_body(cls, body))
        except XdrArgsError as e:
            return BadMessage(header, Error.ILLEGAL_ARGS_ERR, str(e))
        except XdrError as e:
            return BadMessage(header, Error.XDR_DECODE_ERR, str(e))

    # ---------------------------------------------------------------------------- sending

    @property
    def last_sequence(self) -> int:
        """The sequence number of the last message this side sent (0 before any)."""
        return self._seq

    def _build(
        self,
        mtype: MessageType,
        code: int,
        reply_sequence: int,
        error: int,
        body: object | bytes | None,
    ) -> tuple[bytes, int]:
        if body is None:
            parts: list[bytes | memoryview] = []
        elif isinstance(body, bytes | bytearray | memoryview):
            parts = [body if not isinstance(body, bytearray) else bytes(body)]
        else:
            parts = encode_body_parts(body)
        size = HEADER_SIZE + sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts)
        if size > MAX_FRAGMENT:
            raise ValueError(f"message of {size} bytes does not fit one fragment (< 2**24)")
        seq = self._seq % 0xFFFFFFFF + 1
        header = Header(seq, int(time.time()) & 0xFFFFFFFF, mtype, code, reply_sequence, error)
        data = frame_parts([header.pack(), *parts])
        self._seq = seq
        self.messages_sent += 1
        return data, seq

    @staticmethod
    def _check_body(table: dict[Message, type], code: int, body: object) -> None:
        cls = table.get(code)  # type: ignore[call-overload]
        if cls is not None and type(body) is not cls:
            raise TypeError(
                f"{Message(code).name} takes a {cls.__name__} body, not {type(body).__name__}"
            )

    def send_reply(
        self,
        request: Header,
        body: object | None,
        header_error: Error = Error.NO_ERR,
    ) -> bytes:
        """Framed reply to ``request``. With ``header_error`` ≠ NO_ERR no body is sent."""
        if self.role != "server":
            raise RuntimeError("only the server role sends replies")
        code = int(request.message_code)
        if header_error:
            body = None
        elif body is not None:
            self._check_body(REPLIES, code, body)
        data, _ = self._build(MessageType.REPLY, code, request.sequence, int(header_error), body)
        return data

    def send_post(self, code: Message, body: object) -> bytes:
        """Framed post (notification, log, file history)."""
        if self.role != "server":
            raise RuntimeError("only the server role sends posts")
        if code not in POSTS:
            raise ValueError(f"{code!r} is not a post")
        self._check_body(POSTS, code, body)
        data, _ = self._build(MessageType.REQUEST, int(code), 0, 0, body)
        return data

    def send_post_encoded(self, code: Message, body: bytes) -> bytes:
        """Framed post whose body was already XDR-encoded (``encode_body``), so that a worker
        thread can do the encoding of large file-history posts off the event loop."""
        if self.role != "server":
            raise RuntimeError("only the server role sends posts")
        if code not in POSTS:
            raise ValueError(f"{code!r} is not a post")
        data, _ = self._build(MessageType.REQUEST, int(code), 0, 0, body)
        return data

    def send_request(
        self, code: Message | int, body: object | bytes | None = None
    ) -> tuple[bytes, int]:
        """Framed request and its sequence number. ``body`` None: the empty/default body;
        raw ``bytes`` are sent as is (for testing servers with odd input)."""
        if self.role != "client":
            raise RuntimeError("only the client role sends requests")
        cls = REQUESTS.get(code)  # type: ignore[call-overload]
        if body is None and cls is not None:
            body = cls()
        elif body is not None and not isinstance(body, bytes | bytearray | memoryview):
            self._check_body(REQUESTS, int(code), body)
        return self._build(MessageType.REQUEST, int(code), 0, 0, body)
