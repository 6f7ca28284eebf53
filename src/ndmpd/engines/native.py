"""The optional C fast paths (``ndmpd._speedups``) the engines use for their per-file loops.

``speedups`` is the module, or None when it was not built (no compiler at install time) or
``NDMPD_NO_SPEEDUPS=1`` turns it off; every engine then runs its pure-Python path, which is
the reference the C paths are tested against. Engines read ``speedups`` when a job starts,
so a test can swap it.
"""

from __future__ import annotations

import os
from types import ModuleType

speedups: ModuleType | None = None
if os.environ.get("NDMPD_NO_SPEEDUPS", "") in ("", "0"):
    try:
        from ndmpd import _speedups as speedups
    except ImportError:  # built without a C compiler
        speedups = None

# scan results (the C module's constants, repeated so callers need not import it)
STOP, NEED, LIMIT, END = 0, 1, 2, 3
SCAN_BATCH = 512  # members parsed per call: bounds the batch's memory and abort latency
FAST_MAX_SIZE = 1 << 20  # larger members take the streaming path

# write_files flags
CHOWN, OVERWRITE, NAMED_TEMP = 1, 2, 4


def stat_result(t: tuple) -> os.stat_result:
    """The ``os.stat_result`` for a stat tuple of the C module (file history wants one)."""
    return os.stat_result(
        t[:10],
        {
            "st_atime": t[10] / 1e9,
            "st_mtime": t[11] / 1e9,
            "st_ctime": t[12] / 1e9,
            "st_atime_ns": t[10],
            "st_mtime_ns": t[11],
            "st_ctime_ns": t[12],
            "st_blocks": t[13],
            "st_blksize": t[14],
            "st_rdev": t[15],
        },
    )
