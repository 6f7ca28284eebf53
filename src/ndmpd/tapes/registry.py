"""The configured drives of a node, and who holds each one.

Only names from the configuration are ever accepted, so a DMA can name a drive but never a
path. One owner (a session) at a time holds a drive; another gets DEVICE_BUSY_ERR (spec §9).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from pathlib import Path

from ndmpd.protocol.constants import Error
from ndmpd.tapes.drive import TapeDrive
from ndmpd.tapes.errors import TapeError
from ndmpd.tapes.paths import image_path, valid_drive_name

_SIZE = re.compile(r"\s*(\d+)\s*([KMGTP]?)(?:i?B)?\s*", re.IGNORECASE)
_UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}


def parse_capacity(text: str | int) -> int:
    """``"2T"`` -> bytes. K/M/G/T/P are powers of 1024; a trailing ``B``/``iB`` is allowed."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE.fullmatch(str(text))
        if m is None:
            raise ValueError(f"invalid capacity {text!r} (expected e.g. 2T, 500G, 1048576)")
        value = int(m.group(1)) << _UNITS[m.group(2).upper()]
    if value <= 0:
        raise ValueError(f"capacity must be positive, not {text!r}")
    return value


class DriveRegistry:
    """Drives by name, built once from the configuration."""

    def __init__(
        self, drives: Iterable[tuple[str, int, int, *tuple[int, ...]]], state_dir: Path
    ) -> None:
        """``drives``: (name, capacity, block_size[, speed in bytes per second])."""
        self.state_dir = Path(state_dir)
        self._drives: dict[str, TapeDrive] = {}
        self._owners: dict[str, object] = {}
        self._lock = threading.Lock()
        for name, capacity, block_size, *rest in drives:
            if not valid_drive_name(name):
                raise ValueError(f"invalid tape drive name {name!r}")
            if name in self._drives:
                raise ValueError(f"tape drive {name!r} configured twice")
            path = image_path(self.state_dir, name)
            self._drives[name] = TapeDrive(
                name, path, capacity, block_size, speed=rest[0] if rest else 0
            )

    def names(self) -> list[str]:
        return list(self._drives)

    def get(self, name: str) -> TapeDrive:
        drive = self._drives.get(name) if isinstance(name, str) else None
        if drive is None:
            raise TapeError(Error.NO_DEVICE_ERR, f"no tape drive named {name!r}")
        return drive

    def acquire(self, name: str, owner: object) -> TapeDrive:
        """Reserve a drive for ``owner`` (idempotent for the same owner)."""
        drive = self.get(name)
        with self._lock:
            holder = self._owners.get(name)
            if holder is not None and holder is not owner:
                raise TapeError(Error.DEVICE_BUSY_ERR, f"tape drive {name} is in use")
            self._owners[name] = owner
        return drive

    def release(self, name: str, owner: object) -> bool:
        """Give a drive back; closes it first if still open (the implicit TAPE_CLOSE of a
        vanished session). Returns False if ``owner`` did not hold it."""
        drive = self.get(name)
        with self._lock:
            if self._owners.get(name) is not owner:
                return False
        if drive.is_open:
            try:
                drive.close()
            except TapeError:
                if drive.is_open:
                    try:
                        drive.close()  # the second close does no I/O (spec §9)
                    except TapeError:
                        pass
        with self._lock:
            if self._owners.get(name) is owner:
                del self._owners[name]
        return True

    def owner_of(self, name: str) -> object | None:
        self.get(name)
        return self._owners.get(name)

    def close_all(self) -> None:
        """At shutdown: close every open drive (writing its implicit filemark)."""
        for drive in self._drives.values():
            if drive.is_open:
                try:
                    drive.close()
                except TapeError:
                    if drive.is_open:
                        try:
                            drive.close()
                        except TapeError:
                            pass
