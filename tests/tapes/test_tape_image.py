"""The image format: header checks, torn tails cut at whole records, crash survival."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from ndmpd.protocol.constants import Error, MtioOp, TapeOpenMode
from ndmpd.tapes import TapeDrive, TapeError, export_file
from ndmpd.tapes.image import CHUNK_HEADER, FILE_HEADER, scan

RDWR, READ = TapeOpenMode.RDWR, TapeOpenMode.READ


def drive(path: Path, **kw: object) -> TapeDrive:
    kw.setdefault("durable", False)
    return TapeDrive("t", path, 1 << 30, **kw)  # type: ignore[arg-type]


def records(d: TapeDrive, count: int = 1 << 20) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(d.read(count))
        except TapeError as exc:
            if exc.error == Error.EOF_ERR:
                d.mtio(MtioOp.FSF, 1)
            return out


def make_tape(path: Path, files: list[list[bytes]], close: bool = True) -> TapeDrive:
    d = drive(path)
    d.open(RDWR)
    for i, f in enumerate(files):
        for r in f:
            d.write(r)
        if i < len(files) - 1:
            d.mtio(MtioOp.EOF, 1)
    d.flush()
    if close:
        d.close()
    return d


def test_layout_is_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    make_tape(path, [[b"abc", b"def"], [b"g"]])
    raw = path.read_bytes()
    magic, version, hsize, csize, _created, _medium, crc = FILE_HEADER.unpack(raw[:64])
    assert (magic, version, hsize, csize) == (b"NDMPTAPE", 1, 64, 32)
    assert crc == zlib.crc32(raw[:60])
    chunks = []
    off = 64
    while off < len(raw):
        magic, kind, flags, res, size, count, first, crc = CHUNK_HEADER.unpack(raw[off : off + 32])
        assert (
            magic == b"TCHK" and flags == 0 and res == 0 and crc == zlib.crc32(raw[off : off + 28])
        )
        chunks.append((kind, size, count, first, raw[off + 32 : off + 32 + size * count]))
        off += 32 + size * count
    assert chunks == [
        (1, 3, 2, 0, b"abcdef"),  # two 3-byte records, contiguous
        (2, 0, 1, 2, b""),  # a filemark
        (1, 1, 1, 3, b"g"),
        (2, 0, 1, 4, b""),  # the implicit filemark written by close
    ]


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    path.write_bytes(b"hello, this is not a tape image at all" * 4)
    d = drive(path)
    with pytest.raises(TapeError) as info:
        d.open(RDWR)
    assert info.value.error == Error.IO_ERR and "not an ndmpd tape image" in str(info.value)
    assert not d.is_open
    assert path.read_bytes().startswith(b"hello")  # never overwritten


def test_header_checksum(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    make_tape(path, [[b"x"]])
    raw = bytearray(path.read_bytes())
    raw[20] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(TapeError) as info:
        drive(path).open(READ)
    assert info.value.error == Error.IO_ERR and "checksum" in str(info.value)


def test_unwritable_state_dir_is_io_err(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    d = drive(blocker / "tapes" / "t.img")
    with pytest.raises(TapeError) as info:
        d.open(RDWR)
    assert info.value.error == Error.IO_ERR
    assert not d.is_open


@pytest.mark.parametrize("cut", [1, 31, 32, 33, 32 + 99, 32 + 100, 32 + 250, 32 + 299])
def test_torn_tail_cut_at_whole_record(tmp_path: Path, cut: int) -> None:
    """A chunk of three 100-byte records torn ``cut`` bytes into its header+data."""
    path = tmp_path / "t.img"
    first = [bytes([i]) * 50 for i in range(4)]
    make_tape(path, [first, []])  # file 0, filemark, then the chunk below
    good_size = path.stat().st_size
    tail = [bytes([0x40 + i]) * 100 for i in range(3)]
    d = make_tape(path, [first, tail], close=False)
    d.close()
    raw = path.read_bytes()
    # drop the implicit filemark chunk and tear the last records chunk
    torn = raw[: good_size + cut]
    path.write_bytes(torn)
    whole = max(0, (cut - 32) // 100)

    # read-only open and export see the cut image but leave the file alone
    ro = drive(path)
    ro.open(READ)
    assert records(ro) == first
    assert records(ro) == tail[:whole]
    ro.close()
    assert path.read_bytes() == torn
    out = tmp_path / "f1"
    with out.open("wb") as f:
        if whole:
            assert export_file(path, 1, f) == whole * 100
        else:
            with pytest.raises(TapeError):
                export_file(path, 1, f)
    assert out.read_bytes() == b"".join(tail[:whole])

    # a writable open cuts the tail for good; the next write appends after the last whole record
    rw = drive(path)
    rw.open(RDWR)
    rw.mtio(MtioOp.FSF, 1)
    rw.mtio(MtioOp.FSR, 10)
    assert rw.state().blockno == whole
    rw.write(b"appended")
    rw.close()
    assert scan_repair(path) is None
    again = drive(path)
    again.open(READ)
    assert records(again) == first
    assert records(again) == [*tail[:whole], b"appended"]
    again.close()


def scan_repair(path: Path) -> object:
    fd = os.open(path, os.O_RDONLY)
    try:
        return scan(fd, path)[1]
    finally:
        os.close(fd)


def test_garbage_after_last_chunk_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    make_tape(path, [[b"a", b"b"], [b"c"]])
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(b"TCHK" + b"\x01" * 100)  # right magic, wrong checksum
    d = drive(path)
    d.open(RDWR)
    assert path.stat().st_size == size
    assert records(d) == [b"a", b"b"]
    assert records(d) == [b"c"]
    d.close()


def test_chunk_with_wrong_position_is_cut(tmp_path: Path) -> None:
    """A well-formed header that does not continue the tape (e.g. stale bytes) ends it."""
    path = tmp_path / "t.img"
    make_tape(path, [[b"a"]])
    body = struct.pack("<4sBBHIIQ4x", b"TCHK", 1, 0, 0, 1, 1, 999)
    with path.open("ab") as f:
        f.write(body + struct.pack("<I", zlib.crc32(body)) + b"z")
    d = drive(path)
    d.open(READ)
    assert records(d) == [b"a"]
    assert records(d) == []
    d.close()


WRITER = r"""
import sys
from pathlib import Path
from ndmpd.protocol.constants import MtioOp, TapeOpenMode
from ndmpd.tapes import TapeDrive

def rec(f, i, size):
    return (f"{f}:{i}:".encode() * (size // 4 + 1))[:size]

size = int(sys.argv[2])
d = TapeDrive("t", Path(sys.argv[1]), 1 << 40, durable=False, write_buffer=256 * 1024)
d.open(TapeOpenMode.RDWR)
for f, n in ((0, 300), (1, 7)):
    for i in range(n):
        d.write(rec(f, i, size))
    d.mtio(MtioOp.EOF, 1)
i = 0
while True:
    d.write(rec(2, i, size))
    i += 1
    if i == 2000:
        print("streaming", flush=True)
"""


def rec(f: int, i: int, size: int) -> bytes:
    return (f"{f}:{i}:".encode() * (size // 4 + 1))[:size]


@pytest.mark.parametrize("size", [10240, 65536 + 7])
def test_sigkill_mid_stream_keeps_whole_records(tmp_path: Path, size: int) -> None:
    path = tmp_path / "t.img"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"streaming\n", proc.stderr.read() if proc.stderr else b""
        # let it stream a while longer, then kill it wherever it is (often inside pwritev)
        target = path.stat().st_size + (8 << 20)
        while path.stat().st_size < target and proc.poll() is None:
            pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    d = drive(path)
    d.open(RDWR)
    assert records(d, size) == [rec(0, i, size) for i in range(300)]
    assert records(d, size) == [rec(1, i, size) for i in range(7)]
    survived = records(d, size)
    assert len(survived) >= 2000 - (256 * 1024 // size) - 1
    assert survived == [rec(2, i, size) for i in range(len(survived))]
    d.close()
    assert scan_repair(path) is None  # the RDWR open cut the torn tail for good
    out = tmp_path / "f2"
    with out.open("wb") as f:
        assert export_file(path, 2, f) == len(survived) * size
    assert out.read_bytes() == b"".join(survived)
