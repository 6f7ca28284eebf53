"""How jobs end badly: the DMA killed, aborts, a full tape, hostile images (issue 3 "Stops")."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from tests import dma
from tests.conftest import run_ndmjob
from tests.serverproc import NDMJOB, ServerProcess, start_server

from ndmpd.protocol import messages as m
from ndmpd.protocol.constants import (
    DataHaltReason,
    DataState,
    Message,
    MoverHaltReason,
    MoverPauseReason,
    MoverState,
    MtioOp,
    TapeOpenMode,
)

MIB = 1 << 20


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle_fds(srv: ServerProcess, baseline: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = fd_count(srv.proc.pid)
        if n <= baseline or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def make_files(root: Path, count: int, size: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    chunk = bytes(range(256)) * 4096  # 1 MiB, not zeros (no hole detection shortcuts)
    for i in range(count):
        with open(root / f"f{i:03d}.bin", "wb") as f:
            left = size
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n


def wait_log(srv: ServerProcess, needle: str, timeout: float = 30, after: int = 0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in srv.log_text()[after:]:
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} never logged")
        time.sleep(0.01)


def wait_moved(c: object, timeout: float = 20) -> None:
    """Until the mover has put some records on tape."""
    deadline = time.monotonic() + timeout
    while c.call(Message.MOVER_GET_STATE, check=True).body.bytes_moved == 0:  # type: ignore
        assert time.monotonic() < deadline, "the mover never moved a byte"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    srv = start_server(
        tmp_path_factory.mktemp("stops"),
        log_level="INFO",
        tapes={"nrst0a": "8G", "nrst1a": "8G", "small": "3M"},
    )
    make_files(srv.volume() / "big", 12, 64 * MIB)
    yield srv
    srv.stop()


def test_dma_killed_mid_backup_and_mid_restore(big: ServerProcess, ndmjob: str) -> None:
    srv = big
    baseline = fd_count(srv.proc.pid)
    agent = srv.agent()
    mark = len(srv.log_text())
    proc = subprocess.Popen(
        [NDMJOB, "-c", "-D", agent, "-B", "tar", "-C", "/svm1/vol1/big", "-f", "nrst0a"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_log(srv, "backup of /svm1/vol1/big started", after=mark)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    wait_log(srv, "data halted: ABORTED", after=mark)
    assert settle_fds(srv, baseline) <= baseline
    # the server goes on serving, and the tape has whole records up to where it stopped
    out = run_ndmjob(["-q", "-D", agent])
    assert out.returncode == 0 and "NDMPv4" in out.stdout

    # a complete backup to restore from
    out = run_ndmjob(["-c", "-D", agent, "-B", "tar", "-C", "/svm1/vol1/big", "-f", "nrst1a"])
    assert "Operation ended OKAY" in out.stdout + out.stderr
    baseline = fd_count(srv.proc.pid)
    mark = len(srv.log_text())
    proc = subprocess.Popen(
        [NDMJOB, "-x", "-D", agent, "-B", "tar", "-C", "/svm1/vol1/partial", "-f", "nrst1a"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_log(srv, "recovery started", after=mark)
        # let a few files complete, then pull the plug in the middle of one
        deadline = time.monotonic() + 20
        dest = srv.volume() / "partial"
        while time.monotonic() < deadline:
            done = [p for p in dest.glob("*.bin")] if dest.exists() else []
            if len(done) >= 2:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    wait_log(srv, "data halted", after=mark)
    assert settle_fds(srv, baseline) <= baseline
    dest = srv.volume() / "partial"
    names = sorted(os.listdir(dest))
    finals = [n for n in names if n.endswith(".bin")]
    assert 0 < len(finals) < 12, names  # stopped part-way
    for name in finals:  # no partial file under a final name
        assert (dest / name).read_bytes() == (srv.volume() / "big" / name).read_bytes(), name
    assert all(n.endswith(".bin") for n in names), f"temporary files left behind: {names}"


def test_data_abort_and_mover_abort_halt_with_their_reasons(big: ServerProcess) -> None:
    srv = big
    baseline = fd_count(srv.proc.pid)
    with dma.session(srv) as c:
        dma.start_local_backup(c, "nrst0a", "dump", "/svm1/vol1/big")
        wait_moved(c)
        c.call(Message.DATA_ABORT, check=True)
        assert dma.wait_post(c, Message.NOTIFY_DATA_HALTED).body.reason == DataHaltReason.ABORTED
        mover_halt = dma.wait_post(c, Message.NOTIFY_MOVER_HALTED).body.reason
        assert mover_halt in (MoverHaltReason.CONNECT_CLOSED, MoverHaltReason.ABORTED)
        state = c.call(Message.DATA_GET_STATE, check=True).body
        assert state.state == DataState.HALTED and state.halt_reason == DataHaltReason.ABORTED
        assert c.call(Message.DATA_ABORT).error == 0  # aborting a halted service is harmless
        dma.finish(c)
        # the image holds whole records only
        c.call(Message.TAPE_OPEN, m.TapeOpenRequest("nrst0a", TapeOpenMode.READ), check=True)
        c.call(Message.TAPE_MTIO, m.TapeMtioRequest(MtioOp.REW, 1), check=True)
        sizes = set()
        while True:
            r = c.call(Message.TAPE_READ, m.TapeReadRequest(65536))
            if r.error:
                break
            sizes.add(len(r.body.data_in))
        assert sizes == {10240}
        c.call(Message.TAPE_CLOSE, check=True)

        dma.start_local_backup(c, "nrst0a", "tar", "/svm1/vol1/big")
        wait_moved(c)
        c.call(Message.MOVER_ABORT, check=True)
        body = dma.wait_post(c, Message.NOTIFY_MOVER_HALTED).body
        assert body.reason == MoverHaltReason.ABORTED
        data_halt = dma.wait_post(c, Message.NOTIFY_DATA_HALTED).body.reason
        assert data_halt in (DataHaltReason.CONNECT_ERROR, DataHaltReason.ABORTED)
        assert c.call(Message.MOVER_GET_STATE, check=True).body.state == MoverState.HALTED
        dma.finish(c)
    assert settle_fds(srv, baseline) <= baseline


def test_full_tape_pauses_with_end_of_medium_and_keeps_whole_records(big: ServerProcess) -> None:
    srv = big
    with dma.session(srv) as c:
        dma.start_local_backup(c, "small", "tar", "/svm1/vol1/big")
        paused = dma.wait_post(c, Message.NOTIFY_MOVER_PAUSED)
        assert paused.body.reason == MoverPauseReason.EOM
        state = c.call(Message.MOVER_GET_STATE, check=True).body
        assert state.state == MoverState.PAUSED and state.pause_reason == MoverPauseReason.EOM
        assert state.bytes_moved > 0 and state.bytes_moved % 10240 == 0
        # the DMA has no other tape: it gives up
        c.call(Message.MOVER_ABORT, check=True)
        assert dma.wait_post(c, Message.NOTIFY_MOVER_HALTED).body.reason == MoverHaltReason.ABORTED
        dma.wait_post(c, Message.NOTIFY_DATA_HALTED)
        moved = state.bytes_moved
        c.call(Message.TAPE_MTIO, m.TapeMtioRequest(MtioOp.REW, 1), check=True)
        c.call(Message.TAPE_CLOSE, check=True)
        c.call(Message.DATA_STOP, check=True)
        c.call(Message.MOVER_STOP, check=True)
    image = srv.base / "full.tar"
    res = srv.cli("tape", "export", "small", "--file", "0", "-o", str(image))
    assert res.returncode == 0, res.stderr
    assert image.stat().st_size == moved  # everything the mover reported, in whole records
    listing = subprocess.run(["tar", "-tf", str(image)], capture_output=True, text=True)
    assert re.search(r"\./f\d{3}\.bin", listing.stdout), listing  # a readable prefix


def _write_image(srv: ServerProcess, drive: str, data: bytes) -> None:
    data += b"\0" * (-len(data) % 10240)
    with dma.session(srv) as c:
        c.call(Message.TAPE_OPEN, m.TapeOpenRequest(drive, TapeOpenMode.RDWR), check=True)
        c.call(Message.TAPE_MTIO, m.TapeMtioRequest(MtioOp.REW, 1), check=True)
        for off in range(0, len(data), 10240):
            c.call(Message.TAPE_WRITE, m.TapeWriteRequest(data[off : off + 10240]), check=True)
        c.call(Message.TAPE_MTIO, m.TapeMtioRequest(MtioOp.EOF, 2), check=True)
        c.call(Message.TAPE_CLOSE, check=True)


def test_hostile_images_write_nothing_outside_the_destination(tmp_path: Path, ndmjob: str) -> None:
    srv = start_server(tmp_path / "srv", log_level="INFO")
    try:
        outside = srv.volume().parent  # the SVM directory, just outside the volume
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

            def add(
                name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = ""
            ) -> None:
                info = tarfile.TarInfo(name)
                info.type = kind
                info.linkname = link
                info.size = len(data) if kind == tarfile.REGTYPE else 0
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

            add("./good.txt", b"fine\n")
            add("../escape-dotdot.txt")
            add("/escape-absolute.txt")
            add("./link", kind=tarfile.SYMTYPE, link=str(outside))
            add("./link/escape-through-symlink.txt")
            add("./dir/../../escape-nested.txt")
            add("./after.txt", b"still restored\n")
        _write_image(srv, "nrst0a", buf.getvalue())
        out = run_ndmjob(
            ["-x", "-v", "-D", srv.agent(), "-B", "tar", "-C", "/svm1/vol1/rest", "-f", "nrst0a"]
        )
        text = out.stdout + out.stderr
        dest = srv.volume() / "rest"
        assert (dest / "good.txt").read_bytes() == b"fine\n", text
        assert (dest / "after.txt").read_bytes() == b"still restored\n", text
        for name in ("escape-dotdot.txt", "escape-through-symlink.txt", "escape-nested.txt"):
            for where in (outside, srv.volume(), srv.base, Path("/")):
                assert not (where / name).exists(), where / name
        assert not Path("/escape-absolute.txt").exists()
        assert not (outside / "escape-absolute.txt").exists()
        assert "Traceback" not in srv.log_text()
    finally:
        srv.stop()
