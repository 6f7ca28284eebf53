"""Hypothesis strategies derived from the XDR schema, so every new message is covered for free."""

from __future__ import annotations

from functools import cache
from typing import Any

from hypothesis import strategies as st

from ndmpd.protocol import xdr
from ndmpd.protocol.connection import Header
from ndmpd.protocol.messages import POSTS, REPLIES, REQUESTS

# Small sizes keep the suite fast; the limits themselves are tested separately.
MAX_STR = 24
MAX_OPAQUE = 40
MAX_ITEMS = 3

ALL_BODY_CLASSES: list[type] = sorted(
    {c for t in (REQUESTS, REPLIES, POSTS) for c in t.values()}, key=lambda c: c.__name__
)

wire_strings = st.binary(max_size=MAX_STR).map(lambda b: b.decode("utf-8", "surrogateescape"))


@cache
def for_type(t: xdr.XdrType) -> st.SearchStrategy[Any]:
    if isinstance(t, xdr.EnumType):
        members = st.sampled_from(sorted(t.members.values()))
        return members if t.strict else st.one_of(members, st.integers(0, 2**32 - 1))
    if t is xdr.BOOL:
        return st.booleans()
    if isinstance(t, xdr.Primitive):
        return st.integers(t.lo, t.hi)
    if isinstance(t, xdr.StringType):
        return wire_strings
    if isinstance(t, xdr.OpaqueType):
        return st.binary(max_size=min(t.max_len, MAX_OPAQUE))
    if isinstance(t, xdr.FixedOpaqueType):
        return st.binary(min_size=t.size, max_size=t.size)
    if isinstance(t, xdr.ArrayType):
        return st.lists(for_type(t.elem), max_size=min(t.max_len, MAX_ITEMS))
    if isinstance(t, xdr.UnionCodec):
        return _union(t)
    if isinstance(t, xdr.StructCodec):
        return st.builds(t.cls, *(for_type(ft) for _, ft in t.schema))
    raise TypeError(f"no strategy for {t!r}")


def _union(u: xdr.UnionCodec) -> st.SearchStrategy[Any]:
    assert isinstance(u.disc, xdr.EnumType)
    choices = sorted(u.disc.members.values())

    def build(d: Any) -> st.SearchStrategy[Any]:
        arm = u.arm_for(d)
        return st.builds(u.cls, st.just(d), **{n: for_type(ft) for n, ft in arm})

    return st.sampled_from(choices).flatmap(build)


def for_class(cls: type) -> st.SearchStrategy[Any]:
    return for_type(xdr.codec_of(cls))


headers = st.builds(
    Header,
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
