"""Virtual tape drives: the image format, the drive semantics, the registry, and export."""

from __future__ import annotations

from ndmpd.tapes.drive import TapeDrive, TapeState
from ndmpd.tapes.errors import TapeError
from ndmpd.tapes.export import export_file
from ndmpd.tapes.paths import image_path, valid_drive_name
from ndmpd.tapes.registry import DriveRegistry, parse_capacity

__all__ = [
    "DriveRegistry",
    "TapeDrive",
    "TapeError",
    "TapeState",
    "export_file",
    "image_path",
    "parse_capacity",
    "valid_drive_name",
]
