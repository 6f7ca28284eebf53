"""The NDMP listener and the registry of live sessions, shared with the REST layer."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ndmpd.server.session import Session

if TYPE_CHECKING:
    from ndmpd.catalog.config import Config
    from ndmpd.catalog.store import Catalog
    from ndmpd.engines.base import Engine
    from ndmpd.tapes import DriveRegistry

log = logging.getLogger("ndmpd.server")


class NdmpServer:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        drives: DriveRegistry,
        engines: Mapping[str, Engine],
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.drives = drives
        self.engines = dict(engines)
        self.svm_names = [svm.name for svm in config.svms]
        self.default_svm = self.svm_names[0] if self.svm_names else ""
        self.sessions: dict[int, Session] = {}
        self._ids = itertools.count(1000)
        self._server: asyncio.base_events.Server | None = None
        self.loop: asyncio.AbstractEventLoop = asyncio.get_event_loop_policy().get_event_loop()
        self.ports = PortPool(*config.ndmp.data_port_range)

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> list[tuple[str, int]]:
        self.loop = asyncio.get_running_loop()
        host = self.config.ndmp.listen_host
        self._server = await self.loop.create_server(
            self._new_session,
            host=host or None,
            port=self.config.ndmp.listen_port,
            reuse_address=True,
            backlog=1024,
        )
        addrs = []
        for sock in self._server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            name = sock.getsockname()
            addrs.append((str(name[0]), int(name[1])))
        return addrs

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions.values()):
            session.kill("server shutting down")
        waits = [s.closed.wait() for s in list(self.sessions.values())]
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def _new_session(self) -> Session:
        return Session(self, next(self._ids))

    # ---- registry -----------------------------------------------------------------------

    def register(self, session: Session) -> None:
        self.sessions[session.id] = session

    def unregister(self, session: Session) -> None:
        self.sessions.pop(session.id, None)

    def session_may_use_svm(self, session: Session, svm: str) -> bool:
        """An SVM user sees its own SVM; a cluster user sees every SVM (ONTAP's CAB view)."""
        if session.user is None:
            return False
        try:
            user = self.catalog.get_user(session.user)
        except Exception:
            user = None
        user_svm = getattr(user, "svm", None)
        return user_svm is None or user_svm == svm

    # ---- factories for the data path (filled by the data and mover services) ---------------

    def make_data_service(self, session: Session) -> Any:
        from ndmpd.agents.data import DataService

        return DataService(session)

    def make_mover_service(self, session: Session) -> Any:
        from ndmpd.agents.mover import MoverService

        return MoverService(session)


class PortPool:
    """Hands out ports of ``data_port_range`` for data and mover listens, lowest free first."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self._used: set[int] = set()

    def bind(self, host: str) -> socket.socket:
        """A listening socket on a free port of the range (port 0 in the range = ephemeral)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        candidates = [0] if self.low == 0 else range(self.low, self.high + 1)
        last_error: OSError | None = None
        for port in candidates:
            if port and port in self._used:
                continue
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(1)
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            sock.setblocking(False)
            self._used.add(sock.getsockname()[1])
            return sock
        raise OSError(f"no free port in {self.low}-{self.high}: {last_error}")

    def release(self, port: int) -> None:
        self._used.discard(port)
