"""Random operation sequences on a real TapeDrive, checked against a list-of-records model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ndmpd.protocol.constants import Error, MtioOp, TapeOpenMode
from ndmpd.tapes import TapeDrive, TapeError

CAPACITY = 600_000
EARLY_WARNING = 450_000
FM = None


class ModelTape:
    """The obvious tape: a list of records (bytes) and filemarks (None) and a head position."""

    def __init__(self) -> None:
        self.elems: list[bytes | None] = []
        self.pos = 0
        self.dirty = False
        self.ew_signalled = False
        self.blockno_unknown = False  # a read stopped at a filemark (ndmjob's T-READ wants -1)

    def used(self, pos: int | None = None) -> int:
        return sum(len(e) for e in self.elems[: self.pos if pos is None else pos] if e)

    def file_num(self) -> int:
        return self.elems[: self.pos].count(FM)

    def blockno(self) -> int:
        if self.blockno_unknown:
            return 0xFFFFFFFF
        marks = [i for i, e in enumerate(self.elems[: self.pos]) if e is FM]
        return self.pos - (marks[-1] + 1 if marks else 0)

    def moved(self) -> None:
        if self.used() < EARLY_WARNING:
            self.ew_signalled = False

    def write(self, data: bytes) -> int | Error:
        before = self.used()
        if before + len(data) > CAPACITY:
            return Error.IO_ERR
        if before >= EARLY_WARNING:
            if not self.ew_signalled:
                self.ew_signalled = True
                return Error.EOM_ERR
        else:
            self.ew_signalled = False
        del self.elems[self.pos :]
        self.elems.append(data)
        self.pos += 1
        self.dirty = True
        self.blockno_unknown = False
        return len(data)

    def filemarks(self, n: int) -> None:
        del self.elems[self.pos :]
        self.elems.extend([FM] * n)
        self.pos += n
        self.dirty = False
        if n:
            self.blockno_unknown = False

    def read(self, count: int) -> bytes | Error:
        if count == 0:
            return b""
        if self.pos >= len(self.elems):
            return Error.EOM_ERR
        e = self.elems[self.pos]
        if e is FM:
            self.blockno_unknown = True
            return Error.EOF_ERR
        self.pos += 1
        self.blockno_unknown = False
        return e[:count]

    def mtio(self, op: MtioOp, count: int) -> int:
        if op == MtioOp.TUR:
            return 0
        if op == MtioOp.EOF:
            if count:
                self.filemarks(count)
            return 0
        self.blockno_unknown = False
        if self.dirty and op in (MtioOp.REW, MtioOp.OFF):
            self.filemarks(1)  # REW/OFF end the write session; spacing does not
        self.dirty = False
        resid = 0
        if op == MtioOp.REW:
            self.pos = 0
        elif op == MtioOp.FSF:
            while resid < count:
                nxt = [i for i in range(self.pos, len(self.elems)) if self.elems[i] is FM]
                if not nxt:
                    self.pos = len(self.elems)
                    break
                self.pos = nxt[0] + 1
                count -= 1
            resid = count
        elif op == MtioOp.BSF:
            while count:
                prev = [i for i in range(self.pos) if self.elems[i] is FM]
                if not prev:
                    self.pos = 0
                    break
                self.pos = prev[-1]
                count -= 1
            resid = count
        elif op == MtioOp.FSR:
            while count and self.pos < len(self.elems) and self.elems[self.pos] is not FM:
                self.pos += 1
                count -= 1
            resid = count
        elif op == MtioOp.BSR:
            while count and self.pos > 0 and self.elems[self.pos - 1] is not FM:
                self.pos -= 1
                count -= 1
            resid = count
        self.moved()
        return resid


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except TapeError as exc:
        return exc.error


sizes = st.one_of(st.integers(0, 5000), st.sampled_from([10240, 70_000, 130_000]))


class TapeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tape-model-"))
        self.model = ModelTape()
        self.serial = 0
        self.drive = self.new_drive()
        self.drive.open(TapeOpenMode.RDWR)

    def new_drive(self) -> TapeDrive:
        return TapeDrive(
            "m",
            self.dir / "m.img",
            CAPACITY,
            early_warning=EARLY_WARNING,
            durable=False,
            write_buffer=64 * 1024,
        )

    def teardown(self) -> None:
        if self.drive.is_open:
            self.drive.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def payload(self, size: int) -> bytes:
        self.serial += 1
        return (self.serial.to_bytes(4, "little") * (size // 4 + 1))[:size]

    @precondition(lambda self: self.drive.mode != TapeOpenMode.READ)
    @rule(size=sizes)
    def write(self, size: int) -> None:
        data = self.payload(size)
        if size == 0:
            assert self.drive.write(data) == 0
            return
        assert outcome(self.drive.write, data) == self.model.write(data)

    @rule(count=st.sampled_from([0, 1, 3, 100, 5000, 200_000]))
    def read(self, count: int) -> None:
        assert outcome(self.drive.read, count) == self.model.read(count)

    @rule(count=st.sampled_from([1, 100, 200_000]))
    def readinto(self, count: int) -> None:
        buf = bytearray(count)
        got = outcome(self.drive.readinto, buf)
        want = self.model.read(count)
        if isinstance(want, bytes):
            assert got == len(want) and bytes(buf[: len(want)]) == want
        else:
            assert got == want

    @rule(
        op=st.sampled_from(
            [MtioOp.FSF, MtioOp.BSF, MtioOp.FSR, MtioOp.BSR, MtioOp.REW, MtioOp.TUR]
        ),
        count=st.integers(0, 4),
    )
    def mtio(self, op: MtioOp, count: int) -> None:
        assert self.drive.mtio(op, count) == self.model.mtio(op, count)

    @precondition(lambda self: self.drive.mode != TapeOpenMode.READ)
    @rule(count=st.integers(0, 3))
    def filemarks(self, count: int) -> None:
        assert self.drive.mtio(MtioOp.EOF, count) == self.model.mtio(MtioOp.EOF, count)

    @rule(mode=st.sampled_from([TapeOpenMode.READ, TapeOpenMode.RDWR, TapeOpenMode.RAW]))
    def reopen(self, mode: TapeOpenMode) -> None:
        self.drive.close()
        if self.model.dirty:
            self.model.filemarks(1)
        self.drive.open(mode)  # no-rewind: the head stays where it was
        self.model.ew_signalled = False
        self.model.blockno_unknown = False  # opening reads the position again

    @rule()
    def restart(self) -> None:
        """A new process: the image is read back from disk, the head at BOT."""
        self.drive.close()
        if self.model.dirty:
            self.model.filemarks(1)
        self.drive = self.new_drive()
        self.drive.open(TapeOpenMode.RDWR)
        self.model.pos = 0
        self.model.moved()
        self.model.ew_signalled = False
        self.model.blockno_unknown = False

    @invariant()
    def state_matches(self) -> None:
        s = self.drive.state()
        assert (s.file_num, s.blockno) == (self.model.file_num(), self.model.blockno())
        assert s.space_remain == CAPACITY - self.model.used()
        assert self.drive.position == self.model.pos


TapeMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTapeModel = TapeMachine.TestCase


BLOCK = 512


class FixedModelTape(ModelTape):
    """Fixed-block mode: a write of k blocks is k records; a read returns whole blocks up to
    a filemark or blank tape."""

    def write(self, data: bytes) -> int | Error:
        before = self.used()
        if before + len(data) > CAPACITY:
            return Error.IO_ERR
        if before >= EARLY_WARNING:
            if not self.ew_signalled:
                self.ew_signalled = True
                return Error.EOM_ERR
        else:
            self.ew_signalled = False
        del self.elems[self.pos :]
        blocks = [data[i : i + BLOCK] for i in range(0, len(data), BLOCK)]
        self.elems.extend(blocks)
        self.pos += len(blocks)
        self.dirty = True
        self.blockno_unknown = False
        return len(data)

    def read(self, count: int) -> bytes | Error:
        if count == 0:
            return b""
        if self.pos >= len(self.elems):
            return Error.EOM_ERR
        if self.elems[self.pos] is FM:
            self.blockno_unknown = True
            return Error.EOF_ERR
        self.blockno_unknown = False
        out = b""
        while len(out) < count and self.pos < len(self.elems):
            e = self.elems[self.pos]
            if e is FM:
                break
            out += e
            self.pos += 1
        return out


class FixedTapeMachine(TapeMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = FixedModelTape()

    def new_drive(self) -> TapeDrive:
        return TapeDrive(
            "f",
            self.dir / "f.img",
            CAPACITY,
            block_size=BLOCK,
            early_warning=EARLY_WARNING,
            durable=False,
            write_buffer=64 * 1024,
        )

    @precondition(lambda self: self.drive.mode != TapeOpenMode.READ)
    @rule(size=st.one_of(st.integers(0, 12), st.sampled_from([20, 140, 260])))
    def write(self, size: int) -> None:
        super().write(size * BLOCK)

    @rule(count=st.sampled_from([0, 1, 2, 5, 200]))
    def read(self, count: int) -> None:
        super().read(count * BLOCK)

    @rule(count=st.sampled_from([1, 3, 300]))
    def readinto(self, count: int) -> None:
        super().readinto(count * BLOCK)


FixedTapeMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFixedTapeModel = FixedTapeMachine.TestCase
