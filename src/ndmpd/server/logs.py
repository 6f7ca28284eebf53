"""Logging set-up and the per-session logger that prefixes every line with who it is about."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any


def configure(level: int | str = logging.INFO) -> None:
    """One line per event on stderr; timestamps so a session can be followed across lines."""
    root = logging.getLogger("ndmpd")
    if root.handlers:
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class SessionLog(logging.LoggerAdapter):
    """Prefixes ``session N [peer]`` so every line names its session and the DMA's address."""

    def __init__(self, logger: logging.Logger, session_id: int | str, peer: str) -> None:
        super().__init__(logger, {})
        self.prefix = f"session {session_id} [{peer}]"

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"{self.prefix} {msg}", kwargs
