"""TapeDrive against the tape rules of spec §9, on real image files."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ndmpd.protocol.constants import Error, MtioOp, TapeOpenMode, TapeStateFlag
from ndmpd.tapes import TapeDrive, TapeError, TapeState

RDWR, READ, RAW = TapeOpenMode.RDWR, TapeOpenMode.READ, TapeOpenMode.RAW
MakeDrive = Callable[..., TapeDrive]  # the make_drive fixture of conftest.py


def error_of(fn: Callable[..., object], *args: object) -> Error:
    with pytest.raises(TapeError) as info:
        fn(*args)
    assert isinstance(info.value.error, Error)
    return info.value.error


def rec(i: int, size: int = 100) -> bytes:
    return (i.to_bytes(4, "big") * (size // 4 + 1))[:size]


def read_file(drive: TapeDrive, count: int = 1 << 20) -> list[bytes]:
    """Records up to the next filemark (crossing it), as a DMA would."""
    out = []
    while True:
        try:
            out.append(drive.read(count))
        except TapeError as exc:
            assert exc.error in (Error.EOF_ERR, Error.EOM_ERR)
            if exc.error == Error.EOF_ERR:
                drive.mtio(MtioOp.FSF, 1)
            return out


def pos(drive: TapeDrive) -> tuple[int, int]:
    st = drive.state()
    return st.file_num, st.blockno


# -- open / close ------------------------------------------------------------------------


def test_not_open_errors(make_drive: MakeDrive) -> None:
    d = make_drive()
    assert error_of(d.write, b"x") == Error.DEV_NOT_OPEN_ERR
    assert error_of(d.read, 10) == Error.DEV_NOT_OPEN_ERR
    assert error_of(d.readinto, bytearray(10)) == Error.DEV_NOT_OPEN_ERR
    assert error_of(d.mtio, MtioOp.REW, 1) == Error.DEV_NOT_OPEN_ERR
    assert error_of(d.state) == Error.DEV_NOT_OPEN_ERR
    assert error_of(d.close) == Error.DEV_NOT_OPEN_ERR
    assert not d.is_open and d.mode is None


def test_open_twice_and_bad_mode(make_drive: MakeDrive) -> None:
    d = make_drive()
    assert error_of(d.open, 7) == Error.ILLEGAL_ARGS_ERR
    d.open(RDWR)
    assert d.is_open and d.mode == RDWR
    assert error_of(d.open, READ) == Error.DEVICE_OPENED_ERR
    d.close()
    assert not d.is_open


def test_blank_tape_reads_eom_and_creates_image(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(READ)
    assert d.path.exists()
    assert error_of(d.read, 100) == Error.EOM_ERR
    st = d.state()
    assert (st.file_num, st.blockno, st.unsupported) == (0, 0, 0)
    assert st.flags & TapeStateFlag.NOREWIND
    d.close()


def test_unknown_state_shape() -> None:
    st = TapeState.unknown()
    assert st.unsupported == 0x3F
    assert st.file_num == st.blockno == st.block_size == st.soft_errors == 0xFFFFFFFF
    assert st.total_space == st.space_remain == 2**64 - 1


# -- write / read --------------------------------------------------------------------------


def test_records_keep_boundaries(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(RDWR)
    sizes = [1, 100, 100, 100, 5000, 1, 70000, 3]
    for i, size in enumerate(sizes):
        assert d.write(rec(i, size)) == size
    assert pos(d) == (0, len(sizes))
    d.mtio(MtioOp.REW, 1)  # implicit filemark, then rewind
    assert read_file(d) == [rec(i, s) for i, s in enumerate(sizes)]
    assert pos(d) == (1, 0)
    d.close()


def test_read_truncates_and_discards(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(RDWR)
    d.write(b"abcdefgh")
    d.write(b"ijkl")
    d.mtio(MtioOp.REW, 0)
    assert d.read(3) == b"abc"
    assert d.read(100) == b"ijkl"  # the rest of the first record is gone
    d.mtio(MtioOp.REW, 0)
    buf = bytearray(5)
    assert d.readinto(buf) == 5 and buf == b"abcde"
    assert d.readinto(buf) == 4 and buf[:4] == b"ijkl"
    d.close()


def test_zero_counts(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(RDWR)
    assert d.write(b"") == 0
    assert d.write(memoryview(b"")) == 0
    assert pos(d) == (0, 0)
    d.write(b"data")
    d.mtio(MtioOp.REW, 1)
    assert d.read(0) == b""
    assert d.readinto(bytearray()) == 0
    assert pos(d) == (0, 0)  # count 0 does not move
    assert d.read(10) == b"data"
    d.close()


def test_readinto_needs_writable_buffer(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(RDWR)
    with pytest.raises(TypeError):
        d.readinto(b"immutable")  # type: ignore[arg-type]
    d.close()


def test_memoryview_of_other_format(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(RDWR)
    words = memoryview(bytearray(range(16))).cast("I")
    assert d.write(words) == 16
    d.mtio(MtioOp.REW, 1)
    out = memoryview(bytearray(16)).cast("I")
    assert d.readinto(out) == 16
    assert out.tobytes() == bytes(range(16))
    d.close()


def test_filemark_read_stays_on_bot_side(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(RDWR)
    d.write(b"one")
    d.mtio(MtioOp.EOF, 1)
    d.write(b"two")
    d.mtio(MtioOp.EOF, 1)
    d.mtio(MtioOp.REW, 1)
    assert d.read(10) == b"one"
    for _ in range(3):
        assert error_of(d.read, 10) == Error.EOF_ERR
        assert error_of(d.readinto, bytearray(10)) == Error.EOF_ERR
        assert pos(d) == (0, 0xFFFFFFFF)  # blockno unknown after a filemark read
    assert d.mtio(MtioOp.FSF, 1) == 0
    assert pos(d) == (1, 0)
    assert d.read(10) == b"two"
    assert error_of(d.read, 10) == Error.EOF_ERR
    d.mtio(MtioOp.FSF, 1)
    assert error_of(d.read, 10) == Error.EOM_ERR
    d.close()


def test_large_records_bypass_buffers(make_drive: MakeDrive) -> None:
    d = make_drive(write_buffer=1 << 20)
    d.open(RDWR)
    big = [os.urandom(3 << 20), os.urandom(1 << 20), os.urandom(5 << 20)]
    for b in big:
        d.write(b)
    d.write(b"tail")
    d.mtio(MtioOp.REW, 1)
    for b in big:
        buf = bytearray(len(b))
        assert d.readinto(buf) == len(b) and buf == b
    assert d.read(100) == b"tail"
    d.close()


def test_permission_err_in_read_mode(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(READ)
    assert error_of(d.write, b"x") == Error.PERMISSION_ERR
    assert error_of(d.mtio, MtioOp.EOF, 1) == Error.PERMISSION_ERR
    d.close()


def test_write_protect(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(RDWR)
    d.write(b"keep")
    d.close()
    d.write_protected = True
    assert error_of(d.open, RDWR) == Error.WRITE_PROTECT_ERR
    assert not d.is_open
    d.open(RAW)
    assert d.state().flags & TapeStateFlag.WR_PROT
    assert error_of(d.write, b"x") == Error.WRITE_PROTECT_ERR
    assert error_of(d.mtio, MtioOp.EOF, 1) == Error.WRITE_PROTECT_ERR
    d.mtio(MtioOp.REW, 1)
    assert d.read(10) == b"keep"
    d.close()
    d.open(READ)  # no-rewind: still on the BOT side of the filemark after "keep"
    assert error_of(d.read, 10) == Error.EOF_ERR
    d.close()


# -- implicit filemark ---------------------------------------------------------------------


@pytest.mark.parametrize("op", [MtioOp.REW, MtioOp.OFF])
def test_implicit_filemark_before_rewind_and_unload(make_drive: MakeDrive, op: MtioOp) -> None:
    d = make_drive()
    d.open(RDWR)
    d.write(b"a")
    d.write(b"b")
    d.mtio(op, 0)  # count 0 moves nothing, but the filemark comes first
    if op == MtioOp.OFF:
        d.close()
        d.open(READ)  # reloads at BOT
    d.mtio(MtioOp.REW, 1)
    assert d.read(5) == b"a" and d.read(5) == b"b"
    assert error_of(d.read, 5) == Error.EOF_ERR
    d.mtio(MtioOp.FSF, 1)
    assert error_of(d.read, 5) == Error.EOM_ERR  # exactly one filemark was written
    d.close()


def test_spacing_after_a_write_adds_no_filemark(make_drive: MakeDrive) -> None:
    """ndmjob's T-BWR: one record, then BSR/FSR move over it with no filemark between."""
    d = make_drive()
    d.open(RDWR)
    d.mtio(MtioOp.REW, 1)
    d.write(b"x" * 512)
    assert d.mtio(MtioOp.BSR, 100) == 99
    assert d.mtio(MtioOp.FSR, 100) == 99
    assert d.mtio(MtioOp.FSR, 100) == 100
    assert d.mtio(MtioOp.FSF, 100) == 100
    d.close()
    d.open(READ)
    d.mtio(MtioOp.REW, 1)
    assert d.read(1024) == b"x" * 512
    assert error_of(d.read, 5) == Error.EOM_ERR  # no filemark: spacing left the tape as it was
    d.close()


@pytest.mark.parametrize("op", [MtioOp.FSF, MtioOp.BSF, MtioOp.FSR, MtioOp.BSR])
def test_close_after_spacing_writes_no_filemark(make_drive: MakeDrive, op: MtioOp) -> None:
    d = make_drive()
    d.open(RDWR)
    for i in range(3):
        d.write(rec(i))
    d.mtio(op, 0)
    d.close()  # the write session ended with the spacing operation
    d.open(READ)
    d.mtio(MtioOp.REW, 1)
    for i in range(3):
        assert d.read(100) == rec(i)
    assert error_of(d.read, 100) == Error.EOM_ERR
    d.close()


def test_no_implicit_filemark_after_eof_or_tur(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(RDWR)
    d.write(b"x")
    assert d.mtio(MtioOp.TUR, 5) == 0
    assert pos(d) == (0, 1)
    d.mtio(MtioOp.EOF, 2)
    assert pos(d) == (2, 0)
    d.close()  # nothing written since the marks: no third one
    d.open(READ)
    d.mtio(MtioOp.REW, 1)
    assert d.mtio(MtioOp.FSF, 5) == 3
    assert pos(d) == (2, 0)
    d.close()


def test_close_writes_implicit_filemark_once(make_drive: MakeDrive) -> None:
    d = make_drive()
    d.open(RDWR)
    d.write(b"x")
    d.close()
    assert pos_after_reopen(d) == (1, 0)
    d.open(RDWR)  # opened and closed without writing: no filemark
    d.close()
    d.open(RAW)
    d.write(b"y")
    d.close()
    d.open(READ)
    d.mtio(MtioOp.REW, 1)
    assert d.mtio(MtioOp.FSF, 9) == 7
    d.close()


def pos_after_reopen(d: TapeDrive) -> tuple[int, int]:
    d.open(READ)
    try:
        return pos(d)
    finally:
        d.close()


# -- MTIO spacing --------------------------------------------------------------------------


def three_files(d: TapeDrive) -> None:
    """BOT r0 r1 r2 FM r3 r4 FM FM r5 (blank)."""
    d.open(RDWR)
    for i in range(3):
        d.write(rec(i))
    d.mtio(MtioOp.EOF, 1)
    d.write(rec(3))
    d.write(rec(4))
    d.mtio(MtioOp.EOF, 2)
    d.write(rec(5))
    d.mtio(MtioOp.EOF, 1)
    d.mtio(MtioOp.REW, 1)


def test_fsf_bsf_resid(make_drive: MakeDrive) -> None:
    d = make_drive()
    three_files(d)
    assert d.mtio(MtioOp.FSF, 2) == 0 and pos(d) == (2, 0)
    assert d.mtio(MtioOp.FSF, 5) == 3 and pos(d) == (4, 0)  # blank tape
    assert d.mtio(MtioOp.BSF, 1) == 0 and pos(d) == (3, 1)  # BOT side of the last mark
    assert d.mtio(MtioOp.BSF, 2) == 0 and pos(d) == (1, 2)
    assert d.mtio(MtioOp.BSF, 9) == 8 and pos(d) == (0, 0)  # BOT
    assert d.mtio(MtioOp.BSF, 1) == 1 and pos(d) == (0, 0)
    d.close()


def test_fsr_bsr_stop_at_filemarks(make_drive: MakeDrive) -> None:
    d = make_drive()
    three_files(d)
    assert d.mtio(MtioOp.FSR, 2) == 0 and pos(d) == (0, 2)
    assert d.mtio(MtioOp.FSR, 5) == 4 and pos(d) == (0, 3)  # BOT side of the mark
    assert error_of(d.read, 100) == Error.EOF_ERR
    d.mtio(MtioOp.FSF, 1)
    assert d.mtio(MtioOp.BSR, 1) == 1 and pos(d) == (1, 0)  # EOT side of the mark
    assert d.mtio(MtioOp.FSR, 1) == 0 and d.read(100) == rec(4)
    assert d.mtio(MtioOp.BSR, 9) == 7 and pos(d) == (1, 0)
    assert d.read(100) == rec(3)
    d.mtio(MtioOp.REW, 1)
    assert d.mtio(MtioOp.BSR, 3) == 3 and pos(d) == (0, 0)  # BOT
    d.mtio(MtioOp.FSF, 3)
    assert d.mtio(MtioOp.FSR, 4) == 3 and d.mtio(MtioOp.FSR, 1) == 1  # stops before the mark
    d.mtio(MtioOp.FSF, 1)
    assert d.mtio(MtioOp.FSR, 2) == 2  # blank tape
    d.close()


def test_count_zero_and_ignored_counts(make_drive: MakeDrive) -> None:
    d = make_drive()
    three_files(d)
    d.mtio(MtioOp.FSF, 1)
    for op in (MtioOp.FSF, MtioOp.BSF, MtioOp.FSR, MtioOp.BSR, MtioOp.EOF):
        assert d.mtio(op, 0) == 0 and pos(d) == (1, 0)
    assert d.mtio(MtioOp.REW, 77) == 0 and pos(d) == (0, 0)
    assert d.mtio(MtioOp.TUR, 77) == 0
    assert error_of(d.mtio, MtioOp.FSF, -1) == Error.ILLEGAL_ARGS_ERR
    assert error_of(d.mtio, MtioOp.FSF, 2**32) == Error.ILLEGAL_ARGS_ERR
    assert error_of(d.mtio, 99, 1) == Error.ILLEGAL_ARGS_ERR
    d.close()


def test_off_unloads_until_reopen_or_load(make_drive: MakeDrive) -> None:
    d = make_drive()
    three_files(d)
    d.mtio(MtioOp.FSF, 2)
    assert d.mtio(MtioOp.OFF, 3) == 0
    assert not d.loaded
    assert error_of(d.mtio, MtioOp.TUR, 1) == Error.NO_TAPE_LOADED_ERR
    assert error_of(d.read, 10) == Error.NO_TAPE_LOADED_ERR
    assert error_of(d.write, b"x") == Error.NO_TAPE_LOADED_ERR
    assert error_of(d.state) == Error.NO_TAPE_LOADED_ERR
    assert error_of(d.mtio, MtioOp.OFF, 1) == Error.NO_TAPE_LOADED_ERR
    d.close()
    d.open(RAW)  # RAW opens with no medium and does not load one
    assert error_of(d.mtio, MtioOp.TUR, 0) == Error.NO_TAPE_LOADED_ERR
    d.load()
    assert d.mtio(MtioOp.TUR, 0) == 0 and pos(d) == (0, 0)
    assert d.read(100) == rec(0)  # the same medium came back
    d.mtio(MtioOp.OFF, 1)
    d.close()
    d.open(RDWR)  # a new READ/RDWR open reloads it
    assert pos(d) == (0, 0) and d.read(100) == rec(0)
    d.mtio(MtioOp.OFF, 1)
    d.close()
    d.auto_load = False
    assert error_of(d.open, READ) == Error.NO_TAPE_LOADED_ERR
    assert not d.is_open
    d.load()
    d.open(READ)
    assert d.read(100) == rec(0)
    d.close()


# -- end of medium -------------------------------------------------------------------------


def test_early_warning_then_physical_end(make_drive: MakeDrive) -> None:
    k = 10 * 1024
    d = make_drive(capacity=10 * k, early_warning=45 * 1024)
    d.open(RDWR)
    for i in range(5):  # the fifth write crosses the early-warning mark and succeeds
        assert d.write(rec(i, k)) == k
    assert error_of(d.write, rec(5, k)) == Error.EOM_ERR
    assert pos(d) == (0, 5)  # count 0: nothing written
    for i in range(5, 10):  # later writes succeed again
        assert d.write(rec(i, k)) == k
    assert d.state().space_remain == 0
    assert error_of(d.write, rec(10, k)) == Error.IO_ERR
    assert error_of(d.write, b"z") == Error.IO_ERR
    assert d.state().flags & TapeStateFlag.ERROR
    assert d.mtio(MtioOp.EOF, 1) == 0  # a filemark at logical EOM still succeeds
    assert not d.state().flags & TapeStateFlag.ERROR
    d.mtio(MtioOp.REW, 1)
    assert read_file(d, k) == [rec(i, k) for i in range(10)]
    d.close()


def test_physical_end_refuses_whole_record(make_drive: MakeDrive) -> None:
    d = make_drive(capacity=1000, early_warning=1000)
    d.open(RDWR)
    d.write(b"a" * 900)
    assert error_of(d.write, b"b" * 101) == Error.IO_ERR  # never half-written
    assert d.write(b"c" * 100) == 100
    d.mtio(MtioOp.REW, 1)
    assert d.read(2000) == b"a" * 900
    assert d.read(2000) == b"c" * 100
    d.close()


def test_early_warning_is_signalled_again_after_rewrite(make_drive: MakeDrive) -> None:
    d = make_drive(capacity=100, early_warning=50)
    d.open(RDWR)
    for _ in range(5):
        d.write(b"x" * 10)
    assert error_of(d.write, b"x") == Error.EOM_ERR
    d.write(b"x" * 10)
    d.mtio(MtioOp.REW, 1)
    for _ in range(5):
        d.write(b"y" * 10)  # overwrites from BOT
    assert error_of(d.write, b"y") == Error.EOM_ERR
    assert d.write(b"y") == 1
    d.close()


def test_default_early_warning() -> None:
    d = TapeDrive("t", Path("/nonexistent/t.img"), 1 << 40)
    assert d.early_warning == (1 << 40) - (1 << 40) // 100
    d = TapeDrive("t", Path("/nonexistent/t.img"), 10 << 20)
    assert d.early_warning == (10 << 20) - (1 << 20)
    d = TapeDrive("t", Path("/nonexistent/t.img"), 1 << 20)
    assert d.early_warning == 1 << 19
    with pytest.raises(ValueError):
        TapeDrive("t", Path("/nonexistent/t.img"), 0)
    with pytest.raises(ValueError):
        TapeDrive("t", Path("/nonexistent/t.img"), 100, early_warning=101)


def test_space_fields(make_drive: MakeDrive) -> None:
    d = make_drive(capacity=1 << 20)
    d.open(RDWR)
    d.write(b"x" * 1000)
    d.write(b"x" * 24)
    st = d.state()
    assert st.total_space == 1 << 20 and st.space_remain == (1 << 20) - 1024
    d.mtio(MtioOp.REW, 1)
    assert d.state().space_remain == 1 << 20
    d.mtio(MtioOp.FSR, 1)
    assert d.state().space_remain == (1 << 20) - 1000
    d.close()


# -- fixed-block mode ----------------------------------------------------------------------


def test_fixed_block_mode(make_drive: MakeDrive) -> None:
    d = make_drive(block_size=512)
    d.open(RDWR)
    assert d.state().block_size == 512
    assert error_of(d.write, b"x" * 513) == Error.ILLEGAL_ARGS_ERR
    data = bytes(range(256)) * 2 * 5  # five blocks in one write
    assert d.write(data) == 2560
    assert pos(d) == (0, 5)
    d.mtio(MtioOp.EOF, 1)
    d.write(b"\x07" * 512)
    d.mtio(MtioOp.REW, 1)
    assert error_of(d.read, 100) == Error.ILLEGAL_ARGS_ERR
    assert d.read(1024) == data[:1024]
    assert pos(d) == (0, 2)
    buf = bytearray(4096)
    assert d.readinto(buf) == 1536 and buf[:1536] == data[1024:]  # stops at the filemark
    assert error_of(d.readinto, buf) == Error.EOF_ERR
    d.mtio(MtioOp.FSF, 1)
    assert d.read(512) == b"\x07" * 512
    d.mtio(MtioOp.BSR, 1)
    assert d.mtio(MtioOp.BSR, 1) == 1 and pos(d) == (1, 0)
    d.close()


def test_fixed_mode_rejects_foreign_record_sizes(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    v = TapeDrive("t", path, 1 << 20, durable=False)
    v.open(RDWR)
    v.write(b"x" * 100)
    v.close()
    f = TapeDrive("t", path, 1 << 20, block_size=512, durable=False)
    f.open(READ)
    assert error_of(f.read, 512) == Error.IO_ERR
    assert f.state().flags & TapeStateFlag.ERROR
    f.close()


# -- persistence and overwrite -------------------------------------------------------------


def test_reopen_in_new_process_sees_everything_at_bot(make_drive: MakeDrive) -> None:
    d = make_drive()
    three_files(d)
    d.mtio(MtioOp.FSF, 2)
    d.close()
    fresh = make_drive()  # same image, as after a restart
    fresh.open(READ)
    assert pos(fresh) == (0, 0)
    assert read_file(fresh) == [rec(0), rec(1), rec(2)]
    assert read_file(fresh) == [rec(3), rec(4)]
    assert read_file(fresh) == []
    assert read_file(fresh) == [rec(5)]
    assert error_of(fresh.read, 10) == Error.EOM_ERR
    fresh.close()


def test_no_rewind_position_survives_close(make_drive: MakeDrive) -> None:
    d = make_drive()
    three_files(d)
    d.mtio(MtioOp.FSF, 1)
    d.mtio(MtioOp.FSR, 1)
    d.close()
    d.open(READ)
    assert pos(d) == (1, 1)
    assert d.read(100) == rec(4)
    d.close()


def test_write_mid_tape_truncates(make_drive: MakeDrive) -> None:
    d = make_drive()
    three_files(d)
    size_before = d.path.stat().st_size
    d.mtio(MtioOp.FSF, 1)
    d.mtio(MtioOp.FSR, 1)
    d.write(b"new")
    d.mtio(MtioOp.EOF, 1)
    assert error_of(d.read, 10) == Error.EOM_ERR
    d.close()
    assert d.path.stat().st_size < size_before
    fresh = make_drive()
    fresh.open(READ)
    assert read_file(fresh) == [rec(0), rec(1), rec(2)]
    assert read_file(fresh) == [rec(3), b"new"]
    assert read_file(fresh) == []
    fresh.close()


def test_filemark_mid_tape_truncates(make_drive: MakeDrive) -> None:
    d = make_drive()
    three_files(d)
    d.mtio(MtioOp.FSR, 1)
    d.mtio(MtioOp.EOF, 1)
    d.mtio(MtioOp.REW, 1)
    assert read_file(d) == [rec(0)]
    assert read_file(d) == []
    assert d.mtio(MtioOp.FSF, 1) == 1
    d.close()


def test_write_at_bot_erases_tape(make_drive: MakeDrive) -> None:
    d = make_drive()
    three_files(d)
    d.write(b"only")
    d.close()
    d.open(READ)
    d.mtio(MtioOp.REW, 1)
    assert read_file(d) == [b"only"]
    assert read_file(d) == []
    d.close()


# -- concurrency ---------------------------------------------------------------------------


def test_state_snapshot_is_consistent_while_writing(make_drive: MakeDrive) -> None:
    size = 4096
    d = make_drive(capacity=1 << 32, write_buffer=256 * 1024)
    d.open(RDWR)
    total = 20000
    record = b"r" * size
    failures: list[str] = []

    def writer() -> None:
        for _ in range(total):
            d.write(record)

    t = threading.Thread(target=writer)
    t.start()
    last = 0
    polls = 0
    while t.is_alive() or polls == 0:
        st = d.state()
        polls += 1
        used = st.total_space - st.space_remain
        if used != st.blockno * size:
            failures.append(f"blockno {st.blockno} but {used} bytes used")
        if st.blockno < last:
            failures.append("blockno went backwards")
        last = st.blockno
    t.join()
    assert not failures
    assert d.state().blockno == total
    assert polls > 1
    d.close()


# -- media errors (a real write failure: RLIMIT_FSIZE in a child process) ----------------------

CHILD = r"""
import resource, signal, sys
from pathlib import Path
from ndmpd.protocol.constants import Error, MtioOp, TapeOpenMode
from ndmpd.tapes import TapeDrive, TapeError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
d = TapeDrive("t", Path(sys.argv[1]), 1 << 30, durable=False, write_buffer=64 * 1024)
d.open(TapeOpenMode.RDWR)
for i in range(10):
    d.write(bytes([i]) * 1000)
d.mtio(MtioOp.EOF, 1)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
codes = []
try:
    for i in range(100):
        d.write(bytes([i]) * 1000)
except TapeError as exc:
    codes.append(exc.error.name)
d.write(b"y" * 30000)  # buffered; the implicit filemark at close must flush it
try:
    d.close()
except TapeError as exc:
    codes.append(exc.error.name)
codes.append(str(d.is_open))
d.close()  # the second close closes without I/O
codes.append(str(d.is_open))
print(" ".join(codes))
"""


def test_write_failure_gives_io_err_and_second_close_closes(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["IO_ERR", "IO_ERR", "True", "False"]
    d = TapeDrive("t", path, 1 << 30, durable=False)
    d.open(READ)
    assert read_file(d) == [bytes([i]) * 1000 for i in range(10)]
    assert error_of(d.read, 10) == Error.EOM_ERR  # the failed chunks left nothing behind
    d.close()
    assert path.stat().st_size == 64 + 32 + 10 * 1000 + 32
