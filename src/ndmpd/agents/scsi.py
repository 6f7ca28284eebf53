"""The SCSI (media changer) service of one session.

ndmpd has virtual drives and no robot yet, so no SCSI device exists: SCSI_OPEN answers
NO_DEVICE_ERR for any name, and the other requests answer as the spec says for a session
with no SCSI device open. The one-device-per-connection rule is kept for when robots come.
"""

from __future__ import annotations

from collections.abc import Callable

from ndmpd.agents.errors import NdmpError
from ndmpd.protocol.constants import Error


class ScsiService:
    def __init__(self, device_in_use: Callable[[], bool]) -> None:
        self._other_device_open = device_in_use
        self.device: str | None = None

    @property
    def is_open(self) -> bool:
        return self.device is not None

    def open(self, device: str) -> None:
        if self.device is not None or self._other_device_open():
            raise NdmpError(Error.DEVICE_OPENED_ERR)
        raise NdmpError(Error.NO_DEVICE_ERR, f"no SCSI device {device!r}")

    def require(self) -> str:
        if self.device is None:
            raise NdmpError(Error.DEV_NOT_OPEN_ERR)
        return self.device

    def release_all(self) -> None:
        self.device = None
