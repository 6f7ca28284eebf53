"""The backup engines this server offers, by NDMP butype name (dump first: ONTAP's default)."""

from __future__ import annotations

from ndmpd.engines.base import Engine


def available() -> dict[str, Engine]:
    from ndmpd.engines.dump import DumpEngine
    from ndmpd.engines.tar import TarEngine

    return {"dump": DumpEngine(), "tar": TarEngine()}
