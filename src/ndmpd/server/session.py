"""One NDMP session per control connection: the asyncio shell around the sans-IO core.

Bytes from the socket go into an ``NdmpConnection``; each event it yields is queued and
handled in order by one task, so a handler may await (a TCP connect, a tape operation in a
thread) without reordering replies. Handlers live in ``ndmpd.server.handlers`` and return a
reply body or raise ``NdmpError``; nothing a DMA sends can raise out of this class. The
session object is the single source of truth for its state: the REST layer reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ndmpd.agents.errors import NdmpError
from ndmpd.agents.scsi import ScsiService
from ndmpd.agents.tape import TapeService
from ndmpd.protocol import connection as pc
from ndmpd.protocol.constants import (
    NDMP_VERSION,
    PRE_AUTH_MESSAGES,
    ConnectionStatusReason,
    Error,
    Message,
)
from ndmpd.protocol.messages import NotifyConnectionStatusPost, error_reply
from ndmpd.server.logs import SessionLog
from ndmpd.tapes import TapeError

if TYPE_CHECKING:
    from ndmpd.server.listener import NdmpServer

log = logging.getLogger("ndmpd.session")

_MAX_QUEUED = 64  # events waiting for the handler task before we stop reading the socket


class Session(asyncio.Protocol):
    def __init__(self, server: NdmpServer, session_id: int) -> None:
        self.server = server
        self.id = session_id
        self.created = time.time()
        self.conn = pc.NdmpConnection("server")
        self.transport: asyncio.Transport | None = None
        self.client_address = ""
        self.client_port = 0
        self.source_address = ""
        self.source_port = 0
        self.log: logging.LoggerAdapter = SessionLog(log, session_id, "?")
        # authentication
        self.protocol_version: int | None = None
        self.authorized = False
        self.user: str | None = None
        self.svm: str = server.default_svm
        self.challenge: bytes | None = None
        self.ext_list_state = "initial"  # initial -> got -> set (spec §4 D+N)
        # services
        self.tape = TapeService(
            server.drives,
            self,
            device_in_use=lambda: self.scsi.is_open,
            mover_busy=lambda: self.mover.blocks_tape,
            mover_holds=lambda: self.mover.holds_tape,
        )
        self.scsi = ScsiService(device_in_use=lambda: self.tape.is_open)
        self.data = server.make_data_service(self)
        self.mover = server.make_mover_service(self)
        # plumbing
        self._events: deque[object] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self.closing = False
        self.closed = asyncio.Event()
        self.stats_requests = 0
        self.writable = threading.Event()  # cleared while the DMA is slow to read our posts
        self.writable.set()
        self._deferred: list[tuple[Message, Any]] = []

    # ---- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        sock = transport.get_extra_info("sockname") or ("?", 0)
        self.client_address, self.client_port = str(peer[0]), int(peer[1])
        self.source_address, self.source_port = str(sock[0]), int(sock[1])
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        self.log = SessionLog(log, self.id, f"{host}:{peer[1]}")
        transport.set_write_buffer_limits(high=4 << 20)
        self.log.info("connected to %s:%s", self.source_address, self.source_port)
        self.server.register(self)
        self.send(
            self.conn.send_post(
                Message.NOTIFY_CONNECTION_STATUS,
                NotifyConnectionStatusPost(
                    reason=ConnectionStatusReason.CONNECTED,
                    protocol_version=NDMP_VERSION,
                    text_reason="",
                ),
            )
        )
        self._task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        try:
            self.conn.receive_data(data)
            while True:
                event = self.conn.next_event()
                if event is pc.NEED_DATA:
                    break
                self._events.append(event)
                if isinstance(event, pc.ProtocolBroken):
                    break
        except Exception:  # the core promises typed events; this is the last line of defence
            self.log.exception("protocol core failed; closing")
            self._events.append(pc.ProtocolBroken("internal decoder failure"))
        self._wakeup.set()
        if len(self._events) > _MAX_QUEUED and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._events.append(pc.ConnectionClosed())
        self._wakeup.set()
        return False

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def wait_writable(self) -> None:
        """Worker threads wait here before posting more file history to a slow DMA."""
        while not self.writable.wait(0.5):
            if self.closing:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        if not self.closing:
            self._events.append(pc.ConnectionClosed())
            self._wakeup.set()
        self.transport = None

    # ---- sending ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def post(self, code: Message, body: Any) -> None:
        """Send a notification/log/file-history post; safe from the event loop thread only."""
        self.log.debug("post %s", code.name)
        self.send(self.conn.send_post(code, body))

    def _post_encoded(self, code: Message, body: bytes) -> None:
        self.log.debug("post %s (%d bytes)", code.name, len(body))
        self.send(self.conn.send_post_encoded(code, body))

    def post_encoded_threadsafe(self, code: Message, body: bytes) -> None:
        """A post whose body a worker thread has encoded already (file history)."""
        if not self.closing:
            self.server.loop.call_soon_threadsafe(self._post_encoded, code, body)

    def defer_post_threadsafe(self, code: Message, body: Any, delay: float = 0.25) -> None:
        """A post sent just before this session's next reply (or after ``delay``)."""
        self.server.loop.call_soon_threadsafe(self._defer_post, code, body, delay)

    def _defer_post(self, code: Message, body: Any, delay: float) -> None:
        self._deferred.append((code, body))
        self.server.loop.call_later(delay, self._flush_deferred)

    def _flush_deferred(self) -> None:
        posts, self._deferred = self._deferred, []
        for code, body in posts:
            if not self.closing:
                self.post(code, body)

    def post_threadsafe(self, code: Message, body: Any) -> None:
        """Send a post from a worker thread (data and mover workers)."""
        loop = self.server.loop
        if not self.closing:
            loop.call_soon_threadsafe(self.post, code, body)

    # ---- the handler task -----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                while not self._events:
                    self._wakeup.clear()
                    if self._paused and self.transport is not None:
                        self._paused = False
                        self.transport.resume_reading()
                    await self._wakeup.wait()
                event = self._events.popleft()
                if not await self._dispatch(event):
                    break
        except asyncio.CancelledError:
            pass
        except Exception:
            self.log.exception("session task failed")
        finally:
            await self._teardown()

    async def _dispatch(self, event: object) -> bool:
        """Handle one event; False ends the session."""
        if isinstance(event, pc.Request):
            await self._handle_request(event.header, event.code, event.body)
            return not self.closing
        if isinstance(event, pc.BadRequest):
            self.log.warning("bad %s: %s", _code_name(event.header.message_code), event.detail)
            self._reply_error(event.header, event.error)
            return True
        if isinstance(event, pc.UnknownRequest):
            self.log.info("unsupported message 0x%x", event.header.message_code)
            self.send(self.conn.send_reply(event.header, None, Error.NOT_SUPPORTED_ERR))
            return True
        if isinstance(event, pc.ConnectionClosed):
            self.log.info("DMA closed the connection")
            return False
        if isinstance(event, pc.ProtocolBroken):
            self.log.warning("closing: %s", event.detail)
            return False
        return True

    async def _handle_request(self, header: pc.Header, code: Message, body: Any) -> None:
        from ndmpd.server.handlers import HANDLERS  # late: handlers import this module

        self.stats_requests += 1
        self.log.debug("request %s seq=%d", code.name, header.sequence)
        if self._deferred:
            self._flush_deferred()
        entry = HANDLERS.get(code)
        if entry is None:
            self.send(self.conn.send_reply(header, None, Error.NOT_SUPPORTED_ERR))
            return
        if not self.authorized and code not in PRE_AUTH_MESSAGES:
            self.log.warning("%s before authentication refused", code.name)
            self._reply_error(header, Error.NOT_AUTHORIZED_ERR)
            return
        try:
            result = entry(self, body)
            if asyncio.iscoroutine(result):
                result = await result
        except NdmpError as exc:
            if exc.detail:
                self.log.info("%s: %s (%s)", code.name, exc.error.name, exc.detail)
            self._reply_error(header, exc.error)
            return
        except TapeError as exc:
            self.log.info("%s: %s", code.name, exc.error.name)
            self._reply_error(header, exc.error)
            return
        except Exception:
            self.log.exception("%s failed", code.name)
            self._reply_error(header, Error.UNDEFINED_ERR)
            return
        self.send(self.conn.send_reply(header, result))
        if code == Message.CONNECT_CLOSE:
            self.closing = True

    def _reply_error(self, header: pc.Header, error: Error) -> None:
        try:
            code = Message(header.message_code)
        except ValueError:
            self.send(self.conn.send_reply(header, None, error))
            return
        self.send(self.conn.send_reply(header, error_reply(code, error)))

    # ---- ending -------------------------------------------------------------------------

    def kill(self, reason: str = "killed by the administrator") -> None:
        """ONTAP's kill: halt data and mover (the DMA is told), then close the connection."""
        self.log.warning("%s", reason)
        loop = self.server.loop
        loop.create_task(self._kill())

    async def _kill(self) -> None:
        with contextlib.suppress(Exception):
            await self.data.abort_for_kill()
        with contextlib.suppress(Exception):
            await self.mover.abort_for_kill()
        self.post(
            Message.NOTIFY_CONNECTION_STATUS,
            NotifyConnectionStatusPost(
                reason=ConnectionStatusReason.SHUTDOWN,
                protocol_version=NDMP_VERSION,
                text_reason="session killed by the administrator",
            ),
        )
        self._events.append(pc.ConnectionClosed())
        self._wakeup.set()

    async def _teardown(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await self.data.release_all()
        with contextlib.suppress(Exception):
            await self.mover.release_all()
        try:
            await asyncio.to_thread(self.tape.release_all)
        except Exception:
            self.log.exception("releasing the tape drive failed")
        self.scsi.release_all()
        transport = self.transport
        if transport is not None:
            transport.close()
        self.server.unregister(self)
        self.log.info("session closed after %d requests", self.stats_requests)
        self.closed.set()


def _code_name(code: int) -> str:
    try:
        return Message(code).name
    except ValueError:
        return f"message 0x{code:x}"
