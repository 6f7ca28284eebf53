"""Record marking: reassembly across any fragment and feed split, NDMJOB's 3 996-byte fragments,
the size cap, and cost with tiny feeds and 16 MiB records."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndmpd.protocol.framing import (
    LAST_FRAGMENT,
    MAX_FRAGMENT,
    FramingError,
    RecordReader,
    RecordTooLarge,
    frame,
)


def fragments(payload: bytes, cuts: list[int], empty_at: set[int] = frozenset()) -> bytes:  # type: ignore[assignment]
    """``payload`` as several fragments cut at ``cuts``; zero-length fragments where asked."""
    bounds = sorted({c for c in cuts if 0 < c < len(payload)})
    pieces = []
    start = 0
    for i, b in enumerate([*bounds, len(payload)]):
        if i in empty_at:
            pieces.append(struct.pack(">I", 0))
        last = b == len(payload)
        pieces.append(struct.pack(">I", (LAST_FRAGMENT if last else 0) | (b - start)))
        pieces.append(payload[start:b])
        start = b
    return b"".join(pieces)


def ndmjob_style(payload: bytes, size: int = 3996) -> bytes:
    return fragments(payload, list(range(size, len(payload), size)))


def feed_split(reader: RecordReader, data: bytes, cuts: list[int]) -> list[bytes]:
    out = []
    start = 0
    for c in [*sorted(set(cuts)), len(data)]:
        if start <= c <= len(data):
            reader.feed(data[start:c])
            start = c
        while (r := reader.next_record()) is not None:
            out.append(r)
    return out


def test_frame_is_one_last_fragment() -> None:
    assert frame(b"abcd") == bytes.fromhex("80000004") + b"abcd"
    assert frame(memoryview(b"xy")) == bytes.fromhex("80000002") + b"xy"
    assert frame(b"") == bytes.fromhex("80000000")


def test_frame_refuses_24_bit_overflow() -> None:
    frame(bytes(MAX_FRAGMENT))  # the largest allowed
    with pytest.raises(ValueError):
        frame(bytes(MAX_FRAGMENT + 1))


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    frag_cuts=st.lists(st.integers(0, 300), max_size=6),
    empties=st.sets(st.integers(0, 6), max_size=3),
    feed_cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_reassembly_any_split(
    records: list[bytes], frag_cuts: list[int], empties: set[int], feed_cuts: list[int]
) -> None:
    stream = b"".join(fragments(r, frag_cuts, empties) for r in records)
    reader = RecordReader()
    got = feed_split(reader, stream, feed_cuts)
    assert got == records
    assert not reader.mid_record


def test_ndmjob_3996_byte_fragments() -> None:
    payload = bytes(range(256)) * 128  # 32 768 bytes, like an FH_ADD_FILE post
    wire = ndmjob_style(payload)
    assert wire.count(struct.pack(">I", 3996)) == 8  # 8 full fragments + the last
    reader = RecordReader()
    for i in range(0, len(wire), 1460):  # TCP-segment-sized feeds
        reader.feed(wire[i : i + 1460])
    assert reader.next_record() == payload
    assert reader.next_record() is None


def test_byte_at_a_time() -> None:
    reader = RecordReader()
    wire = frame(b"hello world!") + frame(b"")
    for b in wire:
        reader.feed(bytes([b]))
    assert reader.next_record() == b"hello world!"
    assert reader.next_record() == b""
    assert reader.next_record() is None


def test_bytearray_input_is_copied() -> None:
    reader = RecordReader()
    buf = bytearray(frame(b"abcd"))
    reader.feed(buf[:6])
    chunk = bytearray(buf[6:])
    reader.feed(chunk)
    chunk[:] = b"zz"
    assert reader.next_record() == b"abcd"


def test_size_cap_raises_at_the_header_and_breaks_the_stream() -> None:
    reader = RecordReader(max_record=1000)
    reader.feed(frame(bytes(1000)))
    assert reader.next_record() == bytes(1000)
    with pytest.raises(RecordTooLarge):
        reader.feed(struct.pack(">I", LAST_FRAGMENT | 1001))
    with pytest.raises(FramingError):
        reader.feed(b"more")


def test_size_cap_counts_all_fragments_of_a_record() -> None:
    reader = RecordReader(max_record=8000)
    with pytest.raises(RecordTooLarge):
        reader.feed(ndmjob_style(bytes(8001)))


def test_huge_declared_fragment_does_not_allocate() -> None:
    reader = RecordReader()
    with pytest.raises(RecordTooLarge):
        reader.feed(struct.pack(">I", 0x7FFFFFFF))


def test_many_small_feeds_and_big_records_are_linear() -> None:
    reader = RecordReader()
    payload = bytes(MAX_FRAGMENT)
    wire = frame(payload)
    t0 = time.perf_counter()
    for i in range(0, len(wire), 65536):
        reader.feed(wire[i : i + 65536])
    record = reader.next_record()
    big = time.perf_counter() - t0
    assert record is not None and len(record) == len(payload)
    # 1-byte-fragment stream of 20 000 small records, fed in 7-byte chunks
    small = b"".join(frame(b"0123456789abcdef0123") for _ in range(20_000))
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(small), 7):
        reader.feed(small[i : i + 7])
        while reader.next_record() is not None:
            n += 1
    many = time.perf_counter() - t0
    assert n == 20_000
    assert big < 1.0 and many < 2.0, (big, many)
