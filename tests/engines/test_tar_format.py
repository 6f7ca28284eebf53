"""Pax primitives, and the reader against damaged streams (hypothesis)."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndmpd.engines.base import BackupJob, EngineError, RecoverJob
from ndmpd.engines.tar import TarEngine
from ndmpd.engines.tar import format as fmt


def test_record_length_counts_its_own_digits() -> None:
    assert fmt.record(b"mtime", b"1796312775.961968015") == b"30 mtime=1796312775.961968015\n"
    assert fmt.record(b"SCHILY.xattr.user.empty_value", b"") == (
        b"34 SCHILY.xattr.user.empty_value=\n"
    )
    for n in range(0, 1200, 7):  # around the 9/10, 99/100, 999/1000 boundaries
        r = fmt.record(b"k", b"v" * n)
        assert int(r.split(b" ", 1)[0]) == len(r)
        assert fmt.parse_records(r) == [(b"k", b"v" * n)]


@given(st.lists(st.tuples(st.binary(min_size=1).filter(lambda k: b"=" not in k), st.binary())))
def test_records_round_trip(pairs: list[tuple[bytes, bytes]]) -> None:
    assert fmt.parse_records(b"".join(fmt.record(k, v) for k, v in pairs)) == pairs


@given(st.binary(max_size=300))
def test_parse_records_garbage_is_typed(data: bytes) -> None:
    try:
        fmt.parse_records(data)
    except fmt.FormatError:
        pass


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (1_700_000_000_444_555_666, b"1700000000.444555666"),
        (1_796_313_125_333_983_180, b"1796313125.33398318"),
        (0, b"0"),
        (9_000_000_000_000_000_001, b"9000000000.000000001"),
        (-315_619_199_500_000_000, b"-315619199.5"),
    ],
)
def test_times(ns: int, text: bytes) -> None:
    assert fmt.format_time(ns) == text
    assert fmt.parse_time(text) == ns


@given(st.integers(min_value=-(10**20), max_value=10**20))
def test_time_round_trip(ns: int) -> None:
    assert fmt.parse_time(fmt.format_time(ns)) == ns


def test_numbers_and_checksums() -> None:
    assert fmt.parse_number(b"0000644\0") == 0o644
    assert fmt.parse_number(b"  644 \0") == 0o644
    assert fmt.parse_number(b"\x80" + (3_000_000).to_bytes(7, "big")) == 3_000_000
    assert fmt.parse_number(b"\xff" * 8) == -1
    with pytest.raises(fmt.FormatError):
        fmt.parse_number(b"12x\0")
    h = fmt.header(b"./caf\xc3\xa9", 0o644, 0, 0, 0, 0, fmt.REG)
    assert fmt.checksum_ok(h)
    signed = sum(b - 256 if b >= 128 else b for b in h[:148] + h[156:]) + 256
    h2 = bytearray(h)
    h2[148:156] = b"%06o\0 " % signed
    assert fmt.checksum_ok(h2)
    h2[0] ^= 1
    assert not fmt.checksum_ok(h2)


def test_acl_text_round_trip() -> None:
    blob = fmt.acl_from_text(b"user::rw-\nuser:1000:rw-\ngroup::r--\ngroup:2000:r--\nmask::rw-\n"
                             b"other::r--\n")  # fmt: skip
    assert fmt.acl_to_text(blob) == (
        b"user::rw-\nuser:1000:rw-\ngroup::r--\ngroup:2000:r--\nmask::rw-\nother::r--\n"
    )
    assert fmt.acl_to_text(b"junk") is None


class _Sink:
    def __init__(self) -> None:
        self.b = io.BytesIO()

    def write(self, d: bytes | memoryview) -> None:
        self.b.write(d)


@pytest.fixture(scope="module")
def small_stream(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    src = tmp_path_factory.mktemp("small")
    (src / "a.txt").write_bytes(b"alpha" * 100)
    (src / "d").mkdir()
    (src / "d" / "b").write_bytes(b"beta")
    with open(src / "sp", "wb") as f:
        f.truncate(100_000)
        f.seek(50_000)
        f.write(b"x" * 5000)
    os.symlink("a.txt", src / "l")
    os.link(src / "a.txt", src / "h")
    os.setxattr(src / "a.txt", b"user.k", b"v")
    sink = _Sink()
    TarEngine().backup(BackupJob(root=os.fsencode(src), env={}, sink=sink, history=None,
                                 log=lambda t, m: None, abort=threading.Event(),
                                 record_size=512))  # fmt: skip
    return sink.b.getvalue()


def _restore(data: bytes, dest: Path) -> None:
    job = RecoverJob(source=io.BytesIO(data), env={}, confine=os.fsencode(dest),
                     destination=os.fsencode(dest), selections=[], log=lambda t, m: None,
                     file_result=lambda n, s: None, abort=threading.Event())  # fmt: skip
    TarEngine().recover(job)


_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@_SETTINGS
@given(cut=st.integers(min_value=0, max_value=20_000))
def test_any_truncation_is_engine_error_or_success(
    small_stream: bytes, tmp_path_factory: pytest.TempPathFactory, cut: int
) -> None:
    dest = tmp_path_factory.mktemp("t")
    try:
        _restore(small_stream[: min(cut, len(small_stream))], dest)
    except EngineError:
        pass
    assert not list(dest.rglob(".ndmpd-tmp.*"))


@_SETTINGS
@given(data=st.data())
def test_any_bit_flip_is_engine_error_or_success(
    small_stream: bytes, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    buf = bytearray(small_stream)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= 1 << data.draw(st.integers(0, 7))
    dest = tmp_path_factory.mktemp("f")
    try:
        _restore(bytes(buf), dest)
    except EngineError:
        pass
    assert not list(dest.rglob(".ndmpd-tmp.*"))


@_SETTINGS
@given(st.binary(min_size=512, max_size=4096))
def test_random_bytes_are_engine_error_or_success(
    tmp_path_factory: pytest.TempPathFactory, blob: bytes
) -> None:
    dest = tmp_path_factory.mktemp("r")
    try:
        _restore(blob, dest)
    except EngineError:
        pass
