"""Serve the REST app with uvicorn on the NDMP server's own event loop.

One loop means handlers read live sessions without locks or copies (DESIGN: one source of
truth). uvicorn's signal handling is off: `ndmpd serve` owns SIGTERM/SIGINT and calls `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import uvicorn

from ndmpd.rest.app import create_app
from ndmpd.rest.tls import certificate_paths

if TYPE_CHECKING:
    from ndmpd.catalog.config import Config
    from ndmpd.catalog.store import Catalog
    from ndmpd.server.listener import NdmpServer

log = logging.getLogger("ndmpd.rest")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the host process handles signals


@dataclass
class RestHandle:
    """The running REST server: its URLs, and `stop()` for shutdown."""

    urls: list[str]
    server: uvicorn.Server
    task: asyncio.Task[None]
    sockets: list[socket.socket] = field(default_factory=list)

    async def stop(self) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 5)
        except (TimeoutError, asyncio.CancelledError):
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        except Exception:
            log.exception("REST server failed while stopping")
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when it is given.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind((host or "0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def start_rest(config: Config, catalog: Catalog, server: NdmpServer) -> RestHandle:
    """Start serving; returns once the listening socket is bound and uvicorn is up."""
    rest = config.rest
    ssl: dict[str, str] = {}
    if rest.tls:
        cert, key = await asyncio.to_thread(certificate_paths, config)
        ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    sock = _bind(rest.listen_host, rest.listen_port)
    app = create_app(config, catalog, server)
    uv_config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=None,
        server_header=False,
        date_header=True,
        timeout_keep_alive=30,
        **ssl,  # type: ignore[arg-type]
    )
    uv = _Server(uv_config)
    task = asyncio.get_running_loop().create_task(uv.serve(sockets=[sock]), name="rest")
    while not uv.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the REST server stopped during start-up")
        await asyncio.sleep(0.01)
    host, port = sock.getsockname()[:2]
    scheme = "https" if rest.tls else "http"
    shown = f"[{host}]" if ":" in host else host
    return RestHandle(urls=[f"{scheme}://{shown}:{port}"], server=uv, task=task, sockets=[sock])
