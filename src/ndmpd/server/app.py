"""``ndmpd serve``: one process, one event loop, serving NDMP (and the REST API) for a node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ndmpd import __version__
from ndmpd.engines.registry import available
from ndmpd.server import logs
from ndmpd.server.listener import NdmpServer
from ndmpd.tapes import DriveRegistry

if TYPE_CHECKING:
    from ndmpd.catalog.config import Config
    from ndmpd.catalog.store import Catalog, FirstStart

log = logging.getLogger("ndmpd.server")


def _print_first_start(first: FirstStart) -> None:
    out = sys.stdout
    print("ndmpd: first start: created the catalog, the node and SVM identities", file=out)
    how = " (from NDMPD_ADMIN_PASSWORD)" if first.admin_password_from_env else ""
    print(f"  REST admin user:  {first.admin_user}", file=out)
    print(f"  REST admin password: {first.admin_password}{how}", file=out)
    print(f"  NDMP user:        {first.ndmp_user} (SVM {first.ndmp_svm})", file=out)
    print(f"  NDMP password:    {first.ndmp_password}", file=out)
    print("  (later: `ndmpd password USER --svm SVM` prints an NDMP password again)", file=out)


def _prepare_dirs(config: Config) -> None:
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (config.state_dir / "tapes").mkdir(exist_ok=True, mode=0o700)
    for svm in config.svms:
        for vol in svm.volumes:
            path = Path(vol.path)
            if not path.exists():
                path.mkdir(parents=True, exist_ok=True)
                log.info("created volume directory %s for /%s/%s", path, svm.name, vol.name)


def serve(config: Config, catalog: Catalog) -> int:
    level = os.environ.get("NDMPD_LOG_LEVEL", "INFO").upper()
    logs.configure(level)
    first = catalog.initialize(config)
    if first is not None:
        _print_first_start(first)
    _prepare_dirs(config)
    drives = DriveRegistry(
        [(t.name, t.capacity, t.block_size, t.speed) for t in config.tapes], config.state_dir
    )
    engines = available()
    try:
        return asyncio.run(_main(config, catalog, drives, engines))
    except KeyboardInterrupt:
        return 0


async def _main(config: Config, catalog: Catalog, drives: DriveRegistry, engines: dict) -> int:
    loop = asyncio.get_running_loop()
    server = NdmpServer(config, catalog, drives, engines)
    try:
        addrs = await server.start()
    except OSError as exc:
        print(
            f"ndmpd: cannot listen for NDMP on {config.ndmp.listen_host}:"
            f"{config.ndmp.listen_port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    for host, port in addrs:
        shown = f"[{host}]" if ":" in host else host
        print(f"ndmpd {__version__}: NDMP listening on {shown}:{port}", flush=True)
    rest = None
    try:
        from ndmpd.rest.server import start_rest
    except ImportError:
        start_rest = None  # type: ignore[assignment]
    if start_rest is not None:
        rest = await start_rest(config, catalog, server)
        for url in rest.urls:
            print(f"ndmpd {__version__}: REST API at {url}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print("ndmpd: ready", flush=True)
    await stop.wait()
    log.info("shutting down")
    if rest is not None:
        await rest.stop()
    with contextlib.suppress(Exception):
        await server.stop()
    return 0
