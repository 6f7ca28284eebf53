"""Shared helpers for the end-to-end benchmarks: servers on loopback, data sets, timing, RSS.

The benchmarks are scripts, not tests: they start a real ``ndmpd serve`` (and, as the peer,
ndmjob's own NDMP server), drive them with Debian's ndmjob DMA and print figures. Everything
listens on 127.0.0.1 only and every process started here is stopped by PID.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.serverproc import ADMIN_PASSWORD, NDMPD, write_config  # noqa: E402

NDMJOB = "/usr/lib/amanda/ndmjob"
PEER_DIR = Path("/work/shared/peer")
MB = 1e6


# --------------------------------------------------------------------------- timing


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(cmd: list[str], *, timeout: float = 900, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command, raise with its output on failure (a failed run must never be timed)."""
    out = subprocess.run(
        cmd, capture_output=True, text=True, errors="replace", timeout=timeout, **kw
    )  # type: ignore[call-overload]
    if out.returncode != 0:
        raise RuntimeError(
            f"{cmd!r} failed rc={out.returncode}:\n{(out.stdout + out.stderr)[-3000:]}"
        )
    return out


def fmt_rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / MB:8.1f}" if seconds > 0 else "     n/a"


# --------------------------------------------------------------------------- memory


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in KiB from /proc (0 when the process is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


class RssSampler:
    """Samples a process's VmRSS in a thread; VmHWM covers spikes shorter than the interval."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss_kib = 0
        self.hwm_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            st = proc_status(self.pid)
            if st:
                self.samples += 1
                self.peak_rss_kib = max(self.peak_rss_kib, st.get("VmRSS", 0))
                self.hwm_kib = max(self.hwm_kib, st.get("VmHWM", 0))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- ndmpd


@dataclass
class Ndmpd:
    """An ``ndmpd serve`` on loopback whose log lines are stamped on arrival.

    The server's own log timestamps have one-second resolution, so the data phase is measured
    from when its "started" / "data halted" lines reach our pipe (milliseconds).
    """

    base: Path
    proc: subprocess.Popen[bytes]
    port: int = 0
    password: str = ""
    lines: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def volume(self) -> Path:
        return self.base / "svm1" / "vol1"

    def agent(self) -> str:
        return f"127.0.0.1:{self.port}/4m,admin,{self.password}"

    def mark(self) -> int:
        with self.lock:
            return len(self.lines)

    def since(self, mark: int) -> list[tuple[float, str]]:
        with self.lock:
            return list(self.lines[mark:])

    def data_phase(self, mark: int, timeout: float = 10.0) -> float:
        """Seconds from the data operation's start line to its "data halted" line."""
        deadline = time.monotonic() + timeout
        while True:
            start = end = None
            for t, line in self.since(mark):
                if start is None and re.search(
                    r"(backup of .* started|recovery started|table of contents started)", line
                ):
                    start = t
                elif start is not None and "data halted" in line:
                    if "SUCCESSFUL" not in line:
                        raise RuntimeError(f"ndmpd data halted badly: {line}")
                    end = t
                    break
            if start is not None and end is not None:
                return end - start
            if time.monotonic() > deadline:
                raise RuntimeError("no start/halt lines in the ndmpd log")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_ndmpd(
    base: Path, tapes: int = 4, capacity: str = "64G", log_level: str = "INFO"
) -> Ndmpd:
    base.mkdir(parents=True, exist_ok=True)
    config = write_config(base, tapes={f"nrst{i}a": capacity for i in range(tapes)})
    (base / "svm1" / "vol1").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "NDMPD_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "NDMPD_LOG_LEVEL": log_level,
            "PYTHONUNBUFFERED": "1",
        }
    )
    proc = subprocess.Popen(
        [*NDMPD, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    srv = Ndmpd(base=base, proc=proc)
    ready = threading.Event()
    log = open(base / "server.log", "a")  # noqa: SIM115 - closed by the pump thread

    def pump_err() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            now = time.monotonic()
            line = raw.decode(errors="replace").rstrip("\n")
            with srv.lock:
                srv.lines.append((now, line))
            log.write(f"{now:.3f} {line}\n")
        log.close()

    def pump_out() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if m := re.search(r"NDMP listening on 127\.0\.0\.1:(\d+)", line):
                srv.port = int(m.group(1))
            if "ndmpd: ready" in line:
                ready.set()

    threading.Thread(target=pump_err, daemon=True).start()
    threading.Thread(target=pump_out, daemon=True).start()
    if not ready.wait(60) or not srv.port:
        srv.stop()
        raise RuntimeError("ndmpd did not start; see " + str(base / "server.log"))
    pw = run([*NDMPD, "password", "admin", "--svm", "svm1", "--config", str(config)])
    srv.password = pw.stdout.strip()
    return srv


# --------------------------------------------------------------------------- ndmjob's server


@dataclass
class NdmjobServer:
    """ndmjob's own NDMP server (``-o test-daemon``) with the peer's ``wrap_tar`` formatter.

    Its formatter is wrapped by a shim that stamps its start and end, which is the peer's data
    phase (the daemon itself logs nothing).
    """

    work: Path
    proc: subprocess.Popen[str]
    port: int
    tape: Path
    stamps: Path

    def agent(self) -> str:
        return f"127.0.0.1:{self.port}/4m,ndmp,ndmp"

    def reset_stamps(self) -> None:
        self.stamps.write_text("")

    def data_phase(self, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            parts = self.stamps.read_text().split()
            starts = [float(p[1:]) for p in parts if p.startswith("S")]
            ends = [float(p[1:]) for p in parts if p.startswith("E")]
            if starts and ends:
                return max(ends) - min(starts)
            if time.monotonic() > deadline:
                raise RuntimeError("the peer's formatter left no start/end stamps")
            time.sleep(0.02)

    def children(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == self.proc.pid:  # process group
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # test-daemon exits at stdin EOF
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for pid in [*self.children(), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)
        for lck in self.tape.parent.glob("*.lck"):
            lck.unlink()


def start_ndmjob_server(work: Path, fs_root: Path, port: int) -> NdmjobServer:
    work.mkdir(parents=True, exist_ok=True)
    tape = work / "tape0"
    tape.write_bytes(b"")
    conf = (PEER_DIR / "ndmjob.conf").read_text()
    conf = conf.replace("/path/to/source/dir", str(fs_root)).replace(
        "/path/to/tape-file", str(tape)
    )
    (work / "ndmjob.conf").write_text(conf)
    bindir = work / "bin"
    bindir.mkdir(exist_ok=True)
    stamps = work / "stamps"
    stamps.write_text("")
    shim = bindir / "wrap_tar"
    shim.write_text(
        "#!/bin/bash\n"
        f'echo "S$(date +%s.%N)" >> {stamps}\n'
        f'{PEER_DIR / "wrap_tar"} "$@"\n'
        "rc=$?\n"
        f'echo "E$(date +%s.%N)" >> {stamps}\n'
        "exit $rc\n"
    )
    shim.chmod(0o755)
    env = dict(os.environ)
    env["NDMJOB_CONF"] = str(work / "ndmjob.conf")
    env["PATH"] = f"{bindir}:{PEER_DIR}:{env['PATH']}"
    proc = subprocess.Popen(
        [NDMJOB, "-o", "test-daemon", "-p", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=work,
        start_new_session=True,  # its own process group: the children it forks are findable
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "READY" not in line:
        proc.kill()
        raise RuntimeError(f"ndmjob test-daemon did not start: {line!r}")
    return NdmjobServer(work=work, proc=proc, port=port, tape=tape, stamps=stamps)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def epoch_now() -> float:
    return time.time()


# --------------------------------------------------------------------------- the DMA


def ndmjob(args: list[str], timeout: float = 900) -> tuple[float, str]:
    """Run the ndmjob DMA; wall seconds and its output. Fails unless it says OKAY."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [NDMJOB, *args], capture_output=True, text=True, errors="replace", timeout=timeout
    )
    wall = time.perf_counter() - t0
    text = out.stdout + out.stderr
    if out.returncode != 0 or "Operation ended OKAY" not in text or "ended in failure" in text:
        raise RuntimeError(f"ndmjob {' '.join(args)} failed rc={out.returncode}:\n{text[-3000:]}")
    return wall, text


# --------------------------------------------------------------------------- data sets


def make_big_files(root: Path, count: int, size: int) -> int:
    """Incompressible files (a few random MiB repeated would compress; keep them random)."""
    root.mkdir(parents=True, exist_ok=True)
    chunk = 8 << 20
    for i in range(count):
        with open(root / f"big{i:02d}.bin", "wb") as fh:
            left = size
            while left:
                n = min(chunk, left)
                fh.write(os.urandom(n))
                left -= n
    return count * size


def make_small_files(root: Path, count: int, size: int, per_dir: int = 1000) -> int:
    """``count`` files of ``size`` bytes in directories of ``per_dir``; distinct contents."""
    root.mkdir(parents=True, exist_ok=True)
    base = bytearray(os.urandom(size)) if size else bytearray()
    for i in range(count):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(exist_ok=True)
        if size:
            base[:8] = i.to_bytes(8, "little")
        with open(d / f"f{i % per_dir:05d}", "wb") as fh:
            fh.write(base)
    return count * size


def tree_bytes(root: Path) -> tuple[int, int]:
    """(regular files, their bytes) under root."""
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            files += 1
            total += st.st_size
    return files, total


def same_tree(a: Path, b: Path) -> None:
    """Raise unless both trees hold the same names and contents (``diff -r``)."""
    out = subprocess.run(["diff", "-rq", str(a), str(b)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"restore differs from the source:\n{(out.stdout + out.stderr)[:2000]}")


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def scratch(prefix: str, parent: str | None) -> Iterator[Path]:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        rmtree(path)


def disk_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
