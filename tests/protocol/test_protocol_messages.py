"""Message bodies: tables, schema-driven round trips, error replies, byte-exact vectors."""

from __future__ import annotations

import dataclasses
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_strategies import ALL_BODY_CLASSES, for_class

from ndmpd.protocol import messages as m
from ndmpd.protocol.constants import (
    ALL_ONES_32,
    ALL_ONES_64,
    AddrType,
    AuthType,
    ConnectionStatusReason,
    Error,
    FsType,
    Message,
    MtioOp,
    TapeOpenMode,
)
from ndmpd.protocol.messages import decode_body, encode_body, error_reply
from ndmpd.protocol.xdr import XdrArgsError, XdrError, codec_of


def _camel(code: Message) -> str:
    return "".join(w.capitalize() for w in code.name.split("_"))


# ---------------------------------------------------------------------------- tables


def test_every_code_is_a_request_or_a_post_with_conventional_names() -> None:
    for code in Message:
        if code in m.POSTS:
            assert code not in m.REQUESTS
            assert m.POSTS[code].__name__ == _camel(code) + "Post"
        else:
            assert m.REPLIES[code].__name__ in (_camel(code) + "Reply", "ExecuteCdbReply")
            assert m.REQUESTS[code].__name__ in (_camel(code) + "Request", "ExecuteCdbRequest")
    assert set(m.REQUESTS) == set(m.REPLIES)
    assert set(m.POSTS) == {c for c in Message if 0x500 <= c < 0x800}


def test_empty_requests_are_empty_dataclasses_that_encode_to_nothing() -> None:
    empty = [c for c in m.REQUESTS if not dataclasses.fields(m.REQUESTS[c])]
    assert Message.CONNECT_CLOSE in empty and Message.TAPE_CLOSE in empty
    assert Message.CONFIG_GET_HOST_INFO in empty and Message.MOVER_GET_STATE in empty
    for code in empty:
        assert encode_body(m.REQUESTS[code]()) == b""
        assert decode_body(m.REQUESTS[code], b"") == m.REQUESTS[code]()


@pytest.mark.parametrize("cls", ALL_BODY_CLASSES, ids=lambda c: c.__name__)
def test_defaults_are_a_valid_body(cls: type) -> None:
    body = cls()
    assert decode_body(cls, encode_body(body)) == body


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("cls", ALL_BODY_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_every_body(cls: type, data: st.DataObject) -> None:
    body = data.draw(for_class(cls))
    wire = encode_body(body)
    assert len(wire) % 4 == 0
    assert decode_body(cls, wire) == body
    # Re-encoding the decoded value is byte-identical (canonical encoding).
    assert encode_body(decode_body(cls, wire)) == wire


@pytest.mark.parametrize("cls", ALL_BODY_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_bodies_raise_only_xdr_errors(cls: type, data: st.DataObject) -> None:
    wire = bytearray(encode_body(data.draw(for_class(cls))))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "extend", "word"]))
    if mutation == "flip" and wire:
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] ^= data.draw(st.integers(1, 255))
    elif mutation == "truncate" and wire:
        del wire[data.draw(st.integers(0, len(wire) - 1)) :]
    elif mutation == "extend":
        wire += data.draw(st.binary(min_size=1, max_size=12))
    elif wire:
        i = data.draw(st.integers(0, max(0, len(wire) // 4 - 1))) * 4
        wire[i : i + 4] = struct.pack(">I", data.draw(st.sampled_from([0x7FFFFFFF, 2**32 - 1])))
    try:
        value = decode_body(cls, bytes(wire))
    except XdrError:
        return
    assert type(value) is cls
    # Anything that decodes must encode again (to the same length: encodings are canonical
    # except for padding bytes, which are ignored on input).
    assert len(encode_body(value)) == len(wire)


@pytest.mark.parametrize("cls", ALL_BODY_CLASSES, ids=lambda c: c.__name__)
def test_random_bytes_raise_only_xdr_errors(cls: type) -> None:
    rng = random.Random(cls.__name__)
    for _ in range(200):
        blob = rng.randbytes(rng.randrange(0, 96))
        try:
            assert type(decode_body(cls, blob)) is cls
        except XdrError:
            pass


# ------------------------------------------------------------------------- limits


def test_limits_are_enforced_on_both_sides() -> None:
    ok = m.TapeOpenRequest("d" * m.MAX_DEVICE_NAME, TapeOpenMode.READ)
    assert decode_body(m.TapeOpenRequest, encode_body(ok)) == ok
    too_long = m.TapeOpenRequest("d" * (m.MAX_DEVICE_NAME + 1))
    with pytest.raises(XdrArgsError):
        encode_body(too_long)
    wire = struct.pack(">I", m.MAX_DEVICE_NAME + 1) + b"d" * (m.MAX_DEVICE_NAME + 4) + bytes(4)
    with pytest.raises(XdrArgsError):
        decode_body(m.TapeOpenRequest, wire)


def test_enum_outside_its_range_is_illegal_args() -> None:
    with pytest.raises(XdrArgsError):
        decode_body(m.TapeMtioRequest, struct.pack(">II", 8, 1))
    with pytest.raises(XdrArgsError):
        decode_body(m.ConnectOpenRequest, struct.pack(">I", 0x10000))
    assert decode_body(m.TapeMtioRequest, struct.pack(">II", 7, 1)).tape_op is MtioOp.TUR


def test_unknown_error_codes_in_replies_are_tolerated() -> None:
    reply = decode_body(m.TapeOpenReply, struct.pack(">I", 4711))
    assert reply.error == 4711


def test_huge_declared_lengths_are_decode_errors_not_allocations() -> None:
    with pytest.raises(XdrError) as e:
        decode_body(m.TapeWriteRequest, struct.pack(">I", 0xFFFFFFFF))
    assert not isinstance(e.value, XdrArgsError)  # runs past the end: malformed
    with pytest.raises(XdrError):
        decode_body(m.FhAddFilePost, struct.pack(">I", 0xFFFFFFFF))
    with pytest.raises(XdrError):
        decode_body(m.DataStartRecoverRequest, struct.pack(">II", 0, 0x7FFFFFFF))


def test_nlist_and_fh_limits() -> None:
    # A count within the buffer but above the declared maximum is illegal args.
    wire = struct.pack(">II", 0, m.MAX_NLIST + 1) + bytes(40 * (m.MAX_NLIST + 1)) + bytes(4)
    with pytest.raises(XdrArgsError):
        decode_body(m.DataStartRecoverRequest, wire)


# ------------------------------------------------------------------------ error replies


@pytest.mark.parametrize("code", list(m.REPLIES), ids=lambda c: c.name)
def test_error_reply_sets_the_error_and_encodes(code: Message) -> None:
    body = error_reply(code, Error.IO_ERR)
    assert type(body) is m.REPLIES[code]
    if code is not Message.CONNECT_CLOSE:
        assert body.error is Error.IO_ERR  # type: ignore[attr-defined]
    assert decode_body(type(body), encode_body(body)) == body


def test_error_reply_for_get_state_marks_everything_unknown() -> None:
    tape = error_reply(Message.TAPE_GET_STATE, Error.DEV_NOT_OPEN_ERR)
    assert isinstance(tape, m.TapeGetStateReply)
    assert tape.unsupported == 0x3F
    assert (tape.file_num, tape.blockno, tape.block_size) == (ALL_ONES_32,) * 3
    assert tape.total_space == tape.space_remain == ALL_ONES_64
    wire = encode_body(tape)
    assert wire[:8] == bytes.fromhex("0000003f 00000006")  # unsupported before error
    data = error_reply(Message.DATA_GET_STATE, Error.UNDEFINED_ERR)
    assert isinstance(data, m.DataGetStateReply)
    assert data.unsupported == 0x3
    assert data.est_bytes_remain == ALL_ONES_64 and data.est_time_remain == ALL_ONES_32


# --------------------------------------------------------------------- byte-exact vectors


def test_vector_connect_open_4() -> None:
    assert encode_body(m.ConnectOpenRequest(4)) == bytes.fromhex("00000004")


def test_vector_notify_connection_status() -> None:
    post = m.NotifyConnectionStatusPost(ConnectionStatusReason.CONNECTED, 4, "Hello")
    expected = bytes.fromhex("00000000 00000004 00000005 48656c6c6f000000")
    assert encode_body(post) == expected
    assert decode_body(m.NotifyConnectionStatusPost, expected) == post


def test_vector_addr_one_tcp_entry() -> None:
    addr = m.Addr(AddrType.TCP, [m.TcpAddr(0x7F000001, 18600, [])])
    expected = bytes.fromhex("00000001 00000001 7f000001 000048a8 00000000")
    assert encode_body(m.DataConnectRequest(addr)) == expected
    assert decode_body(m.DataConnectRequest, expected).addr == addr
    assert encode_body(m.DataConnectRequest(m.Addr())) == bytes(4)  # LOCAL: void arm


def test_vector_mover_set_window_u_quad_high_word_first() -> None:
    body = m.MoverSetWindowRequest(offset=0x0000000100000002, length=ALL_ONES_64)
    assert encode_body(body) == bytes.fromhex("00000001 00000002 ffffffff ffffffff")


def test_vector_start_recover_field_order() -> None:
    body = m.DataStartRecoverRequest(
        env=[m.Pval("A", "b")],
        nlist=[m.Name("x", "/d", "", "", ALL_ONES_64, ALL_ONES_64)],
        butype_name="tar",
    )
    expected = bytes.fromhex(
        "00000001 00000001 41000000 00000001 62000000"  # env first
        "00000001 00000001 78000000 00000002 2f640000 00000000 00000000"  # nlist
        "ffffffff ffffffff ffffffff ffffffff"
        "00000003 74617200"  # butype last
    )
    assert encode_body(body) == expected


def test_vector_md5_auth_fixed_opaques_have_no_length() -> None:
    challenge = bytes(range(64))
    attr = m.ConfigGetAuthAttrReply(Error.NO_ERR, m.AuthAttr(AuthType.MD5, challenge))
    assert encode_body(attr) == bytes(4) + bytes.fromhex("00000002") + challenge
    auth = m.ConnectClientAuthRequest(m.AuthData(AuthType.MD5, "ndmp", auth_digest=b"\x11" * 16))
    assert encode_body(auth) == bytes.fromhex("00000002 00000004 6e646d70") + b"\x11" * 16
    text = m.ConnectClientAuthRequest(m.AuthData(AuthType.TEXT, "ab", auth_password="xyz"))
    assert encode_body(text) == bytes.fromhex("00000001 00000002 61620000 00000003 78797a00")


def test_vector_fh_add_file_unix_name_and_stat() -> None:
    f = m.File(
        names=[m.FileName(FsType.UNIX, "/a")],
        stats=[m.FileStat(fs_type=FsType.UNIX, ftype=m.FileType.REG, size=5, links=1)],
        node=7,
        fh_info=ALL_ONES_64,
    )
    wire = encode_body(m.FhAddFilePost([f]))
    assert wire[:20] == bytes.fromhex("00000001 00000001 00000000 00000002 2f610000")
    assert decode_body(m.FhAddFilePost, wire).files == [f]


def test_non_utf8_names_round_trip_exactly() -> None:
    raw = b"caf\xe9-\xff\xfe/\x80"
    name = raw.decode("utf-8", "surrogateescape")
    wire = encode_body(m.LogFilePost(name=name))
    assert raw in wire
    assert decode_body(m.LogFilePost, wire).name.encode("utf-8", "surrogateescape") == raw
    # bytes are accepted on the encode side too
    assert encode_body(m.LogFilePost(name=raw)) == wire  # type: ignore[arg-type]


def test_config_set_ext_list_follows_the_draft() -> None:
    req = m.ConfigSetExtListRequest([m.ClassVersion(0x2001, 1)])
    assert encode_body(req) == bytes.fromhex("00000001 00002001 00000001")
    assert [f.name for f in dataclasses.fields(m.ConfigSetExtListReply)] == ["error"]


def test_codec_groups_fixed_fields() -> None:
    codec = codec_of(m.MoverGetStateReply)
    # error..window_length is one struct run, then the Addr union
    assert codec.runs == 1  # type: ignore[attr-defined]
    assert codec_of(m.FileStat).runs == 1  # type: ignore[attr-defined]
