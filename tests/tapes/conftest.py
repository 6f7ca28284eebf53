"""Fixtures for the virtual tape tests: real image files in a temporary folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ndmpd.tapes import TapeDrive

MakeDrive = Callable[..., TapeDrive]


@pytest.fixture
def make_drive(tmp_path: Path) -> MakeDrive:
    """Build drives on ``tmp_path/tapes/<name>.img``; fsync off, it proves nothing here."""

    def make(
        capacity: int = 1 << 30,
        block_size: int = 0,
        early_warning: int | None = None,
        name: str = "nrst0a",
        **kwargs: object,
    ) -> TapeDrive:
        kwargs.setdefault("durable", False)
        path = tmp_path / "tapes" / f"{name}.img"
        return TapeDrive(name, path, capacity, block_size, early_warning, **kwargs)  # type: ignore[arg-type]

    return make
