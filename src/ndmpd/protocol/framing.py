"""ONC-RPC record marking (RFC 5531 §11), the framing every NDMP message travels in.

Each record is one or more fragments behind a 4-byte big-endian word: bit 31 = last fragment,
bits 0-30 = fragment length. We send every message as one last-fragment; we accept any split
(NDMJOB cuts at 3 996 bytes). The reader keeps the received chunks as zero-copy slices and joins
a record once, so neither many tiny feeds nor 16 MiB records cost more than one copy.
"""

from __future__ import annotations

import struct
from collections import deque

__all__ = [
    "DEFAULT_MAX_RECORD",
    "MAX_FRAGMENT",
    "FramingError",
    "RecordReader",
    "RecordTooLarge",
    "frame",
    "frame_parts",
]

LAST_FRAGMENT = 0x80000000
MAX_FRAGMENT = (1 << 24) - 1  # NDMJOB's reader masks fragment lengths to 24 bits
DEFAULT_MAX_RECORD = 32 * 1024 * 1024

_MARK = struct.Struct(">I")


class FramingError(Exception):
    """The byte stream can no longer be split into records; the connection must close."""


class RecordTooLarge(FramingError):
    """A record grew past the reader's ``max_record``."""


def _length(payload: bytes | bytearray | memoryview) -> int:
    return payload.nbytes if isinstance(payload, memoryview) else len(payload)


def frame_parts(parts: list[bytes | memoryview]) -> bytes:
    """One last-fragment holding the concatenation of ``parts``, built with a single join."""
    n = sum(_length(p) for p in parts)
    if n > MAX_FRAGMENT:
        raise ValueError(f"message of {n} bytes does not fit one fragment (< 2**24)")
    return b"".join([_MARK.pack(LAST_FRAGMENT | n), *parts])


def frame(payload: bytes | bytearray | memoryview) -> bytes:
    """``payload`` as one record of one last-fragment (ValueError if it is 2**24 bytes or more)."""
    return frame_parts([payload])


class RecordReader:
    """Reassemble records from arbitrary chunks of a stream.

    ``feed`` parses as it goes and raises ``RecordTooLarge`` as soon as a fragment header
    announces more than ``max_record`` bytes in total, before buffering any of it. After a
    ``FramingError`` the reader refuses further input.
    """

    def __init__(self, max_record: int = DEFAULT_MAX_RECORD) -> None:
        self.max_record = max_record
        self._records: deque[bytes] = deque()
        self._hdr = b""  # a partially received fragment header
        self._need = 0  # bytes still to come in the current fragment
        self._last = False  # the current fragment ends its record
        self._in_fragment = False
        self._parts: list[bytes | memoryview] = []
        self._size = 0  # bytes of the current record so far (incl. announced)
        self._broken: FramingError | None = None

    @property
    def pending(self) -> int:
        """Complete records not yet taken."""
        return len(self._records)

    @property
    def mid_record(self) -> bool:
        """True if part of a record has been received (EOF now would truncate it)."""
        return bool(self._hdr) or self._in_fragment or bool(self._parts) or self._size > 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._broken is not None:
            raise FramingError(f"stream already broken: {self._broken}")
        if not data:
            return
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer; keep our own copy
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            if not self._in_fragment:
                take = 4 - len(self._hdr)
                if not self._hdr and end - pos >= 4:
                    (word,) = _MARK.unpack_from(data, pos)
                    pos += 4
                else:
                    self._hdr += data[pos : pos + take]
                    pos += min(take, end - pos)
                    if len(self._hdr) < 4:
                        break
                    (word,) = _MARK.unpack(self._hdr)
                    self._hdr = b""
                self._start_fragment(word)
                if self._need == 0:
                    self._end_fragment()
                continue
            n = min(self._need, end - pos)
            if pos == 0 and n == end:
                self._parts.append(data)
            else:
                self._parts.append(view[pos : pos + n])
            pos += n
            self._need -= n
            if self._need == 0:
                self._end_fragment()

    def _start_fragment(self, word: int) -> None:
        length = word & ~LAST_FRAGMENT
        self._size += length
        if self._size > self.max_record:
            self._broken = RecordTooLarge(
                f"record of at least {self._size} bytes exceeds the limit of {self.max_record}"
            )
            raise self._broken
        self._last = bool(word & LAST_FRAGMENT)
        self._need = length
        self._in_fragment = True

    def _end_fragment(self) -> None:
        self._in_fragment = False
        if not self._last:
            return
        parts = self._parts
        record = parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)
        self._records.append(record)
        self._parts = []
        self._size = 0

    def next_record(self) -> bytes | None:
        """The next complete record, or None until more data arrives."""
        if self._records:
            return self._records.popleft()
        return None
