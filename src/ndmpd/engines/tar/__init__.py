"""The ``tar`` backup engine: POSIX pax streams that GNU tar 1.34 reads and writes."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ndmpd.engines.base import BackupJob, RecoverJob, RecoverResult
from ndmpd.protocol.constants import ButypeAttr

__all__ = ["TarEngine"]


class TarEngine:
    """NDMP butype ``tar``: file history as FH_ADD_FILE, selective restore by path."""

    name = "tar"
    attrs = int(
        ButypeAttr.BACKUP_FILELIST
        | ButypeAttr.RECOVER_FILELIST
        | ButypeAttr.BACKUP_FH_FILE
        | ButypeAttr.RECOVER_FILEHIST
        | ButypeAttr.RECOVER_FH_FILE
    )
    default_env: Mapping[str, str] = MappingProxyType(
        {"TYPE": "tar", "HIST": "n", "LEVEL": "0", "UPDATE": "n", "FILES": "", "EXCLUDE": ""}
    )

    def backup(self, job: BackupJob) -> None:
        from ndmpd.engines.tar.writer import TarWriter

        TarWriter(job).run()

    def recover(self, job: RecoverJob) -> RecoverResult:
        from ndmpd.engines.tar.reader import TarReader

        return TarReader(job).run()
