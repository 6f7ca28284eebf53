"""NDMP MD5 challenge authentication (spec §3): the digest both sides compute."""

from __future__ import annotations

import hashlib
import secrets

from ndmpd.protocol.constants import MD5_CHALLENGE_SIZE

__all__ = ["MAX_MD5_PASSWORD", "md5_digest", "new_challenge"]

MAX_MD5_PASSWORD = 32  # longer passwords are truncated, so the buffer padding is never negative
_BUFFER_SIZE = 128


def md5_digest(password: bytes, challenge: bytes) -> bytes:
    """MD5 of ``P || zeros || challenge || P`` in a 128-byte buffer, P = password[:32].

    The caller rejects an empty password (NOT_AUTHORIZED_ERR); this function only computes.
    """
    if len(challenge) != MD5_CHALLENGE_SIZE:
        raise ValueError(f"challenge must be {MD5_CHALLENGE_SIZE} bytes, not {len(challenge)}")
    p = bytes(password[:MAX_MD5_PASSWORD])
    buf = p + b"\0" * (_BUFFER_SIZE - 2 * len(p) - MD5_CHALLENGE_SIZE) + bytes(challenge) + p
    return hashlib.md5(buf, usedforsecurity=False).digest()


def new_challenge() -> bytes:
    """64 fresh random bytes for CONFIG_GET_AUTH_ATTR(MD5)."""
    return secrets.token_bytes(MD5_CHALLENGE_SIZE)
