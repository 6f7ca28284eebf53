"""Helpers for the REST tests that watch real sessions: a data set big enough to watch, and
ndmjob running in the background while the test looks at it through the REST API."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.serverproc import NDMJOB

T = TypeVar("T")
MIB = 1 << 20


def make_tree(root: Path, mib: int) -> Path:
    """`mib` files of 1 MiB each, all different (one random block, rotated), plus a small file.

    A dump of it takes long enough (about a second per 400 MiB here) to be seen while active.
    """
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MIB)
    for i in range(mib):
        shift = (i * 4099) % MIB
        (root / f"f{i:05d}.bin").write_bytes(block[shift:] + block[:shift])
    (root / "README").write_text("ndmpd REST acceptance data\n")
    return root


class Ndmjob:
    """An ndmjob run in the background; `finish()` waits and returns (status, output)."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [NDMJOB, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return self.proc.returncode, out or ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            pass


def backup(agent: str, path: str, drive: str = "nrst0a", *extra: str) -> Ndmjob:
    """A LOCAL dump backup of ONTAP data path `path` to `drive`, started now."""
    return Ndmjob(["-c", "-D", agent, "-B", "dump", "-C", path, "-f", drive, *extra])


def tcp_local_ports(pid: int) -> set[int]:
    """Local ports of the TCP sockets process `pid` has open (from /proc, no extra tools)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def wait_until(
    probe: Callable[[], T | None], timeout: float = 20, interval: float = 0.02, what: str = ""
) -> T:
    """Call `probe` until it returns something other than None (or falsy), else fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
        time.sleep(interval)
