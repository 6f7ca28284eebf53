"""The NDMP environment of a backup or recovery (spec §11), checked before anything starts.

Every problem raises ``EnvProblem`` with a message the DMA sees as a LOG_MESSAGE before the
ILLEGAL_ARGS_ERR reply. Unknown variable names are kept and echoed, never refused (spec §7).
Paths are ONTAP data paths ``/<svm>/<volume>[/path]``; nothing outside a volume is touched.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ndmpd.catalog.errors import DataPathError
from ndmpd.engines.base import Selection

if TYPE_CHECKING:
    from ndmpd.protocol.messages import Name
    from ndmpd.server.session import Session


class EnvProblem(Exception):
    """An environment value we cannot honour; the text is for the DMA's operator."""


_TRUE = {"y", "yes", "t", "true"}
_FALSE = {"n", "no", "f", "false"}
MAX_EXCLUDES = 32


@dataclass(frozen=True)
class BackupEnv:
    root: bytes
    data_path: str
    history: bool
    excludes: tuple[bytes, ...]
    files: tuple[bytes, ...]


@dataclass(frozen=True)
class RecoverEnv:
    confine: bytes
    destination: bytes
    data_path: str | None
    selections: tuple[Selection, ...]
    filehist: bool
    overwrite: bool


def _last(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    return {name: value for name, value in pairs}


def flag(env: dict[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise EnvProblem(f"{name}={value!r}: expected Y or N")


def history_wanted(env: dict[str, str]) -> bool:
    """HIST: y/n (ndmjob), Y/N/T/F (ONTAP), f/d (file or dir/node style: both mean on)."""
    value = env.get("HIST")
    if value is None or value == "":
        return False
    low = value.strip().lower()
    if low in _TRUE or low in ("f", "d"):
        return True
    if low in _FALSE:
        return False
    raise EnvProblem(f"HIST={value!r}: expected Y or N")


def split_excludes(value: str) -> tuple[bytes, ...]:
    """ONTAP's EXCLUDE: comma-separated names, ``\\,`` for a literal comma, at most 32."""
    items: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] == ",":
            current.append(",")
            i += 2
            continue
        if ch == ",":
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    items.append("".join(current).strip())
    names = [x for x in items if x]
    if len(names) > MAX_EXCLUDES:
        raise EnvProblem(f"EXCLUDE lists {len(names)} names; at most {MAX_EXCLUDES} are allowed")
    for name in names:
        if name.count("*") > 2:
            raise EnvProblem(f"EXCLUDE name {name!r}: at most two '*' per name")
    return tuple(os.fsencode(n) for n in names)


def _resolve(session: Session, path: str, what: str) -> tuple[bytes, bytes, str]:
    """(volume root, absolute path, normalised ONTAP path) for a data path the session may use."""
    server = session.server
    try:
        dp = server.config.resolve_data_path(path)
    except DataPathError as exc:
        raise EnvProblem(f"{what}={path!r}: {exc}") from exc
    if not server.session_may_use_svm(session, dp.svm.name):
        raise EnvProblem(f"{what}={path!r}: SVM {dp.svm.name} is not accessible to this user")
    root = os.path.abspath(os.fsencode(dp.volume.path))
    absolute = os.path.join(root, dp.relative) if dp.relative else root
    return root, absolute, dp.path


def _inside(root: bytes, path: bytes) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(b"/") + b"/")


def parse_backup_env(pairs: Sequence[tuple[str, str]], butype: str, session: Session) -> BackupEnv:
    env = _last(pairs)
    fs = env.get("FILESYSTEM")
    if not fs:
        raise EnvProblem("FILESYSTEM is missing: give the data path, e.g. /svm1/vol1/dir")
    volume_root, root, data_path = _resolve(session, fs, "FILESYSTEM")
    if not _inside(volume_root, root):
        raise EnvProblem(f"FILESYSTEM={fs!r} leads outside its volume through a symlink")
    try:
        st = os.stat(root)
    except OSError as exc:
        raise EnvProblem(f"FILESYSTEM={fs!r}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise EnvProblem(f"FILESYSTEM={fs!r} is not a directory")
    kind = env.get("TYPE")
    if kind and kind != butype:
        raise EnvProblem(f"TYPE={kind!r} does not match the backup type {butype!r}")
    level = env.get("LEVEL", "0").strip() or "0"
    if not level.isdigit() or int(level) > 31:
        raise EnvProblem(f"LEVEL={level!r}: expected a dump level 0-9")
    if int(level) != 0:
        raise EnvProblem(
            f"LEVEL={level}: incremental backups are not supported yet; run a level-0 backup"
        )
    base_date = env.get("BASE_DATE", "-1").strip()
    if base_date not in ("", "-1", "0"):
        raise EnvProblem(f"BASE_DATE={base_date!r}: token-based incrementals are not supported yet")
    for name, default in (
        ("UPDATE", True),
        ("DIRECT", False),
        ("VERBOSE", False),
        ("DEBUG", False),
    ):
        flag(env, name, default)
    excludes = split_excludes(env.get("EXCLUDE", ""))
    files: list[bytes] = []
    # ndmjob sends one FILES pair per name; a value may also hold several names, one per line
    values = [value for name, value in pairs if name == "FILES"]
    for raw in (line for value in values for line in value.split("\n")):
        item = raw.strip().strip("/")
        if not item:
            continue
        if ".." in item.split("/"):
            raise EnvProblem(f"FILES entry {raw!r} contains '..'")
        files.append(os.fsencode(item))
    return BackupEnv(
        root=root,
        data_path=data_path,
        history=history_wanted(env),
        excludes=excludes,
        files=tuple(files),
    )


def parse_recover_env(
    pairs: Sequence[tuple[str, str]],
    nlist: Sequence[Name],
    butype: str,
    session: Session,
    *,
    filehist: bool,
) -> RecoverEnv:
    env = _last(pairs)
    kind = env.get("TYPE")
    if kind and kind != butype:
        raise EnvProblem(f"TYPE={kind!r} does not match the backup type {butype!r}")
    overwrite = not flag(env, "NO_OVERWRITE", False)
    if "RESTORE_OVERWRITE" in env:
        overwrite = flag(env, "RESTORE_OVERWRITE", True)
    if filehist:
        return RecoverEnv(
            confine=b"",
            destination=b"",
            data_path=None,
            selections=(),
            filehist=True,
            overwrite=False,
        )
    base = env.get("PREFIX") or env.get("FILESYSTEM")
    if not base:
        raise EnvProblem("PREFIX (or FILESYSTEM) is missing: give the restore data path")
    confine, destination, data_path = _resolve(session, base, "PREFIX")
    if not _inside(confine, destination if os.path.lexists(destination) else confine):
        raise EnvProblem(f"PREFIX={base!r} leads outside its volume through a symlink")
    selections: list[Selection] = []
    for entry in nlist:
        original = entry.original_path.strip("/")
        if ".." in original.split("/"):
            raise EnvProblem(f"nlist original path {entry.original_path!r} contains '..'")
        dest_text = entry.destination_path
        if entry.name:
            dest_text = dest_text.rstrip("/") + "/" + entry.name
        if not dest_text:
            dest = os.path.join(destination, os.fsencode(original)) if original else destination
        else:
            vol, dest, _ = _resolve(session, dest_text, "destination path")
            if vol != confine:
                raise EnvProblem(
                    f"destination {dest_text!r} is in another volume than PREFIX={base!r}"
                )
        selections.append(
            Selection(original=os.fsencode(original), destination=dest, name=entry.original_path)
        )
    return RecoverEnv(
        confine=confine,
        destination=destination,
        data_path=data_path,
        selections=tuple(selections),
        filehist=False,
        overwrite=overwrite,
    )
