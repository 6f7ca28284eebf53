"""The ``dump`` backup engine: BSD/Linux dump streams that Debian's ``restore`` reads."""

from __future__ import annotations

from collections.abc import Mapping

from ndmpd.engines.base import BackupJob, RecoverJob, RecoverResult
from ndmpd.protocol.constants import ButypeAttr

__all__ = ["DumpEngine"]


class DumpEngine:
    """Level-0 dump backups with DIR/NODE file history; full and selective recovery."""

    name = "dump"
    attrs = int(
        ButypeAttr.BACKUP_FH_DIR
        | ButypeAttr.RECOVER_FILEHIST
        | ButypeAttr.RECOVER_FH_DIR
        | ButypeAttr.RECOVER_FILELIST
        | ButypeAttr.BACKUP_UTF8
        | ButypeAttr.RECOVER_UTF8
    )
    default_env: Mapping[str, str] = {
        "HIST": "N",
        "LEVEL": "0",
        "UPDATE": "Y",
        "EXTRACT": "N",
        "FILESYSTEM": "",
    }

    def backup(self, job: BackupJob) -> None:
        from ndmpd.engines.dump.writer import DumpWriter

        DumpWriter(job).run()

    def recover(self, job: RecoverJob) -> RecoverResult:
        from ndmpd.engines.dump.reader import DumpReader

        return DumpReader(job).run()
