"""MD5 challenge digest (spec §3)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ndmpd.protocol.auth import md5_digest, new_challenge


def test_digest_matches_the_spec_formula() -> None:
    c = new_challenge()
    assert md5_digest(b"ndmp", c) == hashlib.md5(b"ndmp" + b"\0" * 56 + c + b"ndmp").digest()


@given(st.binary(min_size=1, max_size=80), st.binary(min_size=64, max_size=64))
def test_digest_buffer_layout(password: bytes, challenge: bytes) -> None:
    p = password[:32]
    buf = bytearray(128)
    buf[0 : len(p)] = p
    buf[64 - len(p) : 128 - len(p)] = challenge
    buf[128 - len(p) :] = p
    assert md5_digest(password, challenge) == hashlib.md5(bytes(buf)).digest()


def test_long_passwords_are_truncated_to_32_bytes() -> None:
    c = bytes(range(64))
    assert md5_digest(b"a" * 32, c) == md5_digest(b"a" * 33 + b"zzz", c)
    assert md5_digest(b"a" * 32, c) == hashlib.md5(b"a" * 32 + c + b"a" * 32).digest()
    assert md5_digest(b"a" * 31, c) != md5_digest(b"a" * 32, c)


def test_challenge_must_be_64_bytes() -> None:
    with pytest.raises(ValueError):
        md5_digest(b"ndmp", bytes(63))


def test_challenges_are_fresh() -> None:
    a, b = new_challenge(), new_challenge()
    assert len(a) == len(b) == 64 and a != b
