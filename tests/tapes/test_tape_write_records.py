"""write_records (the mover's bulk path) behaves exactly like one write() per record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndmpd.protocol.constants import Error, MtioOp, TapeOpenMode
from ndmpd.tapes import TapeDrive, TapeError


def outcome(fn: Callable[..., object], *args: object) -> object:
    try:
        return fn(*args)
    except TapeError as e:
        return e.error


def run(path: Path, batches: list[tuple[int, int]], bulk: bool, capacity: int, ew: int) -> tuple:
    d = TapeDrive("t", path, capacity, early_warning=ew)
    d.open(TapeOpenMode.RDWR)
    log = []
    seq = 0
    for count, size in batches:
        data = b"".join(bytes([(seq + i) % 251]) * size for i in range(count))
        seq += count
        if bulk:
            done = d.write_records(data, size)
            log.append(("bulk", done))
            for i in range(done, count):  # the rest one by one, as the mover does
                log.append(outcome(d.write, data[i * size : (i + 1) * size]))
        else:
            for i in range(count):
                log.append(outcome(d.write, data[i * size : (i + 1) * size]))
    d.mtio(MtioOp.EOF, 1)
    d.mtio(MtioOp.REW, 1)
    records = []
    while True:
        r = outcome(d.read, 1 << 20)
        if not isinstance(r, bytes):
            break
        records.append(r)
    st_ = d.state()
    d.close()
    errors = [x for x in log if isinstance(x, Error)]
    return records, errors, st_.space_remain


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.tuples(st.integers(1, 40), st.sampled_from([512, 1024, 3000])), min_size=1, max_size=6
    ),
    capacity=st.integers(20_000, 120_000),
    ew_gap=st.integers(1, 10_000),
)
def test_bulk_equals_one_by_one(tmp_path_factory, batches, capacity, ew_gap) -> None:
    base = tmp_path_factory.mktemp("wr")
    ew = max(1, capacity - ew_gap)
    one = run(base / "one.img", batches, False, capacity, ew)
    bulk = run(base / "bulk.img", batches, True, capacity, ew)
    assert bulk == one


def test_write_records_refuses_partial_records(tmp_path: Path) -> None:
    d = TapeDrive("t", tmp_path / "t.img", 1 << 20)
    d.open(TapeOpenMode.RDWR)
    assert outcome(d.write_records, b"x" * 1000, 512) == Error.ILLEGAL_ARGS_ERR
    assert d.write_records(b"x" * 1024, 512) == 2
    d.close()


def drain(d: TapeDrive, bulk: bool, rs: int) -> list[object]:
    out: list[object] = []
    buf = bytearray(rs * 7)
    while True:
        try:
            n = d.readinto_records(buf, rs) if bulk else d.readinto(memoryview(buf)[:rs])
        except TapeError as e:
            out.append(e.error)
            if e.error == Error.EOM_ERR:
                return out
            d.mtio(MtioOp.FSF, 1)
            continue
        out.append(bytes(buf[:n]))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.lists(st.lists(st.sampled_from([512, 1024, 700]), max_size=30), min_size=1, max_size=4)
)
def test_bulk_reads_equal_one_by_one(tmp_path_factory, files) -> None:
    d = TapeDrive("t", tmp_path_factory.mktemp("rd") / "t.img", 1 << 30)
    d.open(TapeOpenMode.RDWR)
    i = 0
    for sizes in files:
        for size in sizes:
            d.write(bytes([i % 251]) * size)
            i += 1
        d.mtio(MtioOp.EOF, 1)
    got = {}
    for bulk in (False, True):
        d.mtio(MtioOp.REW, 1)
        items = drain(d, bulk, 1024)
        data = b"".join(x for x in items if isinstance(x, bytes))
        errors = [x for x in items if not isinstance(x, bytes)]
        got[bulk] = (data, errors, d.state().file_num)
    assert got[True] == got[False]
    d.close()


def test_speed_paces_writes_and_reads(tmp_path: Path) -> None:
    """A drive with ``speed`` takes no more bytes per second than that, either way, and the
    records are the same as on an unpaced drive."""
    import time

    d = TapeDrive("t", tmp_path / "t.img", 1 << 30, durable=False, speed=8 << 20)
    d.open(TapeOpenMode.RDWR)
    data = bytes(range(256)) * 4096  # 1 MiB
    t0 = time.monotonic()
    for _ in range(4):
        assert d.write_records(data, 64 << 10) == 16
    written = time.monotonic() - t0
    d.mtio(MtioOp.EOF, 1)
    d.mtio(MtioOp.REW, 1)
    buf = bytearray(1 << 20)
    t0 = time.monotonic()
    got = b""
    for _ in range(4):
        n = d.readinto_records(buf, 64 << 10)
        got += bytes(buf[:n])
    read = time.monotonic() - t0
    assert got == data * 4
    # 4 MiB at 8 MiB/s is 0.5 s; a quarter second of burst is free
    assert 0.2 <= written < 2.0 and 0.2 <= read < 2.0, (written, read)
    fast = TapeDrive("u", tmp_path / "u.img", 1 << 30, durable=False)
    fast.open(TapeOpenMode.RDWR)
    t0 = time.monotonic()
    for _ in range(4):
        fast.write_records(data, 64 << 10)
    assert time.monotonic() - t0 < 0.2
