"""XDR primitives and the schema DSL, independent of any NDMP message."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ndmpd.protocol import messages as m
from ndmpd.protocol import xdr
from ndmpd.protocol.constants import AddrType, FileType, FsType
from ndmpd.protocol.xdr import XdrArgsError, XdrError


def enc(t: xdr.XdrType, v: object) -> bytes:
    parts: list[bytes | memoryview] = []
    t.encode(v, parts)
    return b"".join(parts)


def dec(t: xdr.XdrType, data: bytes) -> object:
    value, off = t.decode(memoryview(data), 0)
    assert off == len(data)
    return value


@pytest.mark.parametrize(
    ("t", "value", "wire"),
    [
        (xdr.U32, 0xDEADBEEF, "deadbeef"),
        (xdr.I32, -2, "fffffffe"),
        (xdr.U16, 10000, "00002710"),
        (xdr.I16, -1, "ffffffff"),
        (xdr.U8, 0x02, "00000002"),
        (xdr.BOOL, True, "00000001"),
        (xdr.UQUAD, 0x0000000100000002, "0000000100000002"),
        (xdr.StringType(10), "", "00000000"),
        (xdr.StringType(10), "a", "00000001 61000000"),
        (xdr.StringType(10), "abcd", "00000004 61626364"),
        (xdr.StringType(10), "abcde", "00000005 61626364 65000000"),
        (xdr.OpaqueType(10), b"\x01\x02", "00000002 01020000"),
        (xdr.FixedOpaqueType(3), b"xyz", "78797a00"),
        (xdr.ArrayType(xdr.U16, 4), [1, 2], "00000002 00000001 00000002"),
    ],
)
def test_wire_layouts(t: xdr.XdrType, value: object, wire: str) -> None:
    assert enc(t, value) == bytes.fromhex(wire)
    assert dec(t, bytes.fromhex(wire)) == value


@given(st.binary(max_size=200))
def test_any_bytes_round_trip_through_strings(raw: bytes) -> None:
    t = xdr.StringType(1000)
    value = dec(t, enc(t, raw))
    assert isinstance(value, str)
    assert value.encode("utf-8", "surrogateescape") == raw
    assert enc(t, value) == enc(t, raw)


@given(st.integers(0, 2**64 - 1))
def test_u_quad_is_high_word_then_low_word(v: int) -> None:
    wire = enc(xdr.UQUAD, v)
    assert struct.unpack(">II", wire) == (v >> 32, v & 0xFFFFFFFF)


@pytest.mark.parametrize(
    ("t", "bad"),
    [
        (xdr.U32, -1),
        (xdr.U32, 2**32),
        (xdr.U32, "1"),
        (xdr.U16, 0x10000),
        (xdr.I16, 40000),
        (xdr.U8, 256),
        (xdr.UQUAD, 2**64),
        (xdr.StringType(3), "abcd"),
        (xdr.StringType(3), None),
        (xdr.StringType(9), "\ud800"),  # a lone surrogate that is not an escaped byte
        (xdr.OpaqueType(3), b"abcd"),
        (xdr.OpaqueType(3), "ab"),
        (xdr.FixedOpaqueType(16), b"short"),
        (xdr.ArrayType(xdr.U32, 2), [1, 2, 3]),
        (xdr.ArrayType(xdr.U16, 2), [70000]),
        (xdr.ArrayType(xdr.U32, 2), 5),
        (xdr.EnumType(FileType), 99),
    ],
)
def test_encode_rejects_values_with_args_error(t: xdr.XdrType, bad: object) -> None:
    with pytest.raises(XdrArgsError):
        enc(t, bad)


def test_decode_errors_are_typed() -> None:
    with pytest.raises(XdrArgsError):
        dec(xdr.U16, bytes.fromhex("00010000"))
    with pytest.raises(XdrArgsError):
        dec(xdr.BOOL, bytes.fromhex("00000002"))
    with pytest.raises(XdrArgsError):
        dec(xdr.EnumType(FsType), bytes.fromhex("00000003"))
    assert dec(xdr.EnumType(FsType, strict=False), bytes.fromhex("00000009")) == 9
    for t, data in [
        (xdr.U32, b"\0\0\0"),
        (xdr.UQUAD, bytes(7)),
        (xdr.StringType(100), bytes.fromhex("00000005 6162")),
        (xdr.StringType(100), bytes.fromhex("00000005 61626364 65")),  # padding missing
        (xdr.FixedOpaqueType(16), bytes(12)),
        (xdr.ArrayType(xdr.U32, 100), bytes.fromhex("00000002 00000001")),
    ]:
        with pytest.raises(XdrError) as e:
            t.decode(memoryview(data), 0)
        assert not isinstance(e.value, XdrArgsError)


def test_huge_counts_fail_before_allocating() -> None:
    # 4 GiB of u16 or of structs is refused from the first 4 bytes, in microseconds.
    t0 = time.perf_counter()
    for t in (xdr.ArrayType(xdr.U16, 2**32), xdr.ArrayType(xdr.codec_of(m.File), 2**32)):
        with pytest.raises(XdrError):
            t.decode(memoryview(b"\xff\xff\xff\xff" + bytes(64)), 0)
    with pytest.raises(XdrError):
        xdr.OpaqueType(2**32).decode(memoryview(b"\xff\xff\xff\xf0"), 0)
    assert time.perf_counter() - t0 < 0.1


def test_unions() -> None:
    addr = xdr.codec_of(m.Addr)
    assert dec(addr, bytes.fromhex("00000002")) == m.Addr(AddrType.RESERVED)  # tolerated, void
    ipc = m.Addr(AddrType.IPC, ipc_comm_data=b"abc")
    assert enc(addr, ipc) == bytes.fromhex("00000003 00000003 61626300")
    with pytest.raises(XdrArgsError):
        dec(addr, bytes.fromhex("00000004"))
    name = xdr.codec_of(m.FileName)
    nt = m.FileName(FsType.NT, nt_path="C:\\a", dos_path="A")
    assert dec(name, enc(name, nt)) == nt
    other = m.FileName(FsType.OTHER, other_name="x")
    assert enc(name, other) == bytes.fromhex("00000002 00000001 78000000")


def test_decode_accepts_bytes_bytearray_memoryview_and_rejects_trailing() -> None:
    wire = m.encode_body(m.TapeMtioRequest(count=3))
    for data in (wire, bytearray(wire), memoryview(wire)):
        assert m.decode_body(m.TapeMtioRequest, data).count == 3
    with pytest.raises(XdrError):
        m.decode_body(m.TapeMtioRequest, wire + bytes(4))
    with pytest.raises(XdrError):
        m.decode_body(m.TapeMtioRequest, wire[:-1])


def test_schema_dsl_rejects_untyped_fields() -> None:
    with pytest.raises(TypeError):

        @xdr.xdr_struct
        class Bad:
            x: int = 0

    with pytest.raises(TypeError):
        xdr.codec_of(int)


def test_file_history_post_speed() -> None:
    """Thousands of FH entries must be cheap both ways (measured, loosely bounded)."""
    st_ = m.FileStat(0, FsType.UNIX, FileType.REG, 1, 2, 3, 0, 0, 0o644, 12345, 1)
    files = [
        m.File([m.FileName(FsType.UNIX, f"/dir/file{i:06d}.bin")], [st_], i, i * 512)
        for i in range(10_000)
    ]
    post = m.FhAddFilePost(files)
    t0 = time.perf_counter()
    wire = m.encode_body(post)
    t1 = time.perf_counter()
    back = m.decode_body(m.FhAddFilePost, wire)
    t2 = time.perf_counter()
    assert back == post
    assert (t1 - t0) < 1.0 and (t2 - t1) < 1.0, (t1 - t0, t2 - t1)
