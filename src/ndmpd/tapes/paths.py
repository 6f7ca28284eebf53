"""Where a drive's image lives; only configured, plain names ever become paths."""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def valid_drive_name(name: str) -> bool:
    """A drive name is a short plain word (no separators, no leading dot)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def image_path(state_dir: Path, drive: str) -> Path:
    """``<state_dir>/tapes/<drive>.img``; refuses names that could escape that folder."""
    if not valid_drive_name(drive):
        raise ValueError(f"invalid tape drive name {drive!r}")
    return Path(state_dir) / "tapes" / f"{drive}.img"
