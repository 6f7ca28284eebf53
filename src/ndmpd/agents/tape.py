"""The tape service of one session: which drive it holds, and the NDMP rules around it.

The drive itself (ndmpd.tapes) knows tape semantics; this layer adds what belongs to the
session: one device per connection (tape or SCSI), ownership against other sessions, and the
interlock with the mover (spec §8: while the mover is active only TAPE_GET_STATE is allowed).
"""

from __future__ import annotations

from collections.abc import Callable

from ndmpd.protocol.constants import Error, MtioOp, TapeOpenMode
from ndmpd.tapes import DriveRegistry, TapeDrive, TapeError


class TapeService:
    def __init__(
        self,
        registry: DriveRegistry,
        owner: object,
        device_in_use: Callable[[], bool],
        mover_busy: Callable[[], bool],
        mover_holds: Callable[[], bool],
    ) -> None:
        self._registry = registry
        self._owner = owner
        self._other_device_open = device_in_use  # the SCSI service of the same session
        self._mover_busy = mover_busy  # ACTIVE: only TAPE_GET_STATE may touch the drive
        self._mover_holds = mover_holds  # LISTEN or ACTIVE: TAPE_CLOSE is refused
        self.drive: TapeDrive | None = None
        self.device: str | None = None
        self.mode: TapeOpenMode | None = None

    @property
    def is_open(self) -> bool:
        return self.drive is not None

    def open(self, device: str, mode: TapeOpenMode) -> None:
        if self.drive is not None or self._other_device_open():
            raise TapeError(Error.DEVICE_OPENED_ERR)
        drive = self._registry.acquire(device, self._owner)
        try:
            drive.open(mode)
        except BaseException:
            self._registry.release(device, self._owner)
            raise
        self.drive, self.device, self.mode = drive, device, mode

    def require(self, *, io: bool = True) -> TapeDrive:
        """The open drive, or the error the spec gives when there is none or the mover has it."""
        if self.drive is None:
            raise TapeError(Error.DEV_NOT_OPEN_ERR)
        if io and self._mover_busy():
            raise TapeError(Error.DEVICE_BUSY_ERR)
        return self.drive

    def close(self) -> None:
        drive = self.require()
        if self._mover_holds():
            raise TapeError(Error.DEVICE_BUSY_ERR, "the mover is using the drive")
        try:
            drive.close()
        finally:
            # A close that failed on its implied filemark leaves the drive open (spec §9);
            # the drive decides, and a second close then succeeds without I/O.
            if not drive.is_open:
                self._release()

    def mtio(self, op: MtioOp, count: int) -> int:
        return self.require().mtio(op, count)

    def write(self, data: bytes | memoryview) -> int:
        return self.require().write(data)

    def read(self, count: int) -> bytes:
        return self.require().read(count)

    def release_all(self) -> None:
        """The connection is gone: an implicit TAPE_CLOSE, whatever state the drive is in."""
        drive = self.drive
        if drive is None:
            return
        try:
            if drive.is_open:
                drive.close()
        except TapeError:
            try:
                if drive.is_open:
                    drive.close()
            except TapeError:
                pass
        finally:
            self._release()

    def _release(self) -> None:
        if self.device is not None:
            self._registry.release(self.device, self._owner)
        self.drive = self.device = self.mode = None
