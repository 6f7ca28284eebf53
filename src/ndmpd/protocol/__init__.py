"""Sans-IO NDMP version 4: XDR codec, message bodies, record framing and the connection.

Bytes in, events out; no sockets, threads or asyncio here (the server shell does the I/O).
"""

from ndmpd.protocol.auth import md5_digest, new_challenge
from ndmpd.protocol.connection import (
    NEED_DATA,
    BadMessage,
    BadRequest,
    ConnectionClosed,
    Event,
    Header,
    NdmpConnection,
    Post,
    ProtocolBroken,
    Reply,
    Request,
    UnknownRequest,
)
from ndmpd.protocol.framing import FramingError, RecordReader, RecordTooLarge, frame
from ndmpd.protocol.messages import (
    POSTS,
    REPLIES,
    REQUESTS,
    decode_body,
    encode_body,
    error_reply,
)
from ndmpd.protocol.xdr import XdrArgsError, XdrError

__all__ = [
    "NEED_DATA",
    "POSTS",
    "REPLIES",
    "REQUESTS",
    "BadMessage",
    "BadRequest",
    "ConnectionClosed",
    "Event",
    "FramingError",
    "Header",
    "NdmpConnection",
    "Post",
    "ProtocolBroken",
    "RecordReader",
    "RecordTooLarge",
    "Reply",
    "Request",
    "UnknownRequest",
    "XdrArgsError",
    "XdrError",
    "decode_body",
    "encode_body",
    "error_reply",
    "frame",
    "md5_digest",
    "new_challenge",
]
