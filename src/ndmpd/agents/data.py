"""The data service of one session: spec §7.

Requests are checked against ``machines.DATA_TABLE``. START_BACKUP / START_RECOVER run the
engine in a worker thread: a backup writes the engine's stream into the data connection, a
recovery reads it from there (posting NOTIFY_DATA_READ on TCP, reading internally on LOCAL).
File history and log messages go to the DMA as posts, batched and throttled by the control
connection's write buffer so neither memory nor the data stream suffers. Every field of
DATA_GET_STATE lives here, and the REST layer reads the same fields.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import TYPE_CHECKING

from ndmpd.agents import machines
from ndmpd.agents.env import BackupEnv, EnvProblem, RecoverEnv, parse_backup_env, parse_recover_env
from ndmpd.agents.errors import NdmpError
from ndmpd.agents.history import HistoryBatcher
from ndmpd.agents.machines import Event
from ndmpd.agents.mover import (
    accept_once,
    bind_listener,
    connect_any,
    finish_workers,
    tcp_addr,
)
from ndmpd.agents.pipe import ConnectionBroken, DataEnd, LocalEnd, SocketEnd, local_pair
from ndmpd.engines.base import Aborted, BackupJob, EngineError, RecoverJob
from ndmpd.protocol import messages as m
from ndmpd.protocol.constants import (
    ALL_ONES_64,
    AddrType,
    DataHaltReason,
    DataOperation,
    DataState,
    DataStateUnsupported,
    Error,
    HasAssociatedMessage,
    LogType,
    Message,
    MoverState,
    RecoveryStatus,
)

if TYPE_CHECKING:
    from ndmpd.server.session import Session


SOCKET_WRITE_BATCH = 256 << 10


class CountingSink:
    """The engine's sink on a backup: counts bytes_processed as they enter the connection."""

    def __init__(self, service: DataService, end: DataEnd) -> None:
        self.service = service
        self.end = end
        if isinstance(end, SocketEnd):
            # the reader is another process: modest batches keep both sides busy (a LOCAL
            # pipe wants the engine's large default, fewer thread switches)
            self.write_batch = SOCKET_WRITE_BATCH

    def write(self, data: bytes | memoryview) -> None:
        self.end.write(data)
        self.service.bytes_processed += len(data)


class CountingSource:
    """The engine's source on a recovery: counts bytes_processed as they leave the connection."""

    def __init__(self, service: DataService, end: DataEnd) -> None:
        self.service = service
        self.end = end

    def readinto(self, buf: bytearray | memoryview) -> int:
        n = self.end.readinto(buf)
        self.service.bytes_processed += n
        return n


class DataService:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.lock = threading.RLock()
        self._message_ids = 0
        self._reset()

    def _reset(self) -> None:
        self.state = DataState.IDLE
        self.operation = DataOperation.NOACTION
        self.halt_reason = DataHaltReason.NA
        self.bytes_processed = 0
        self.est_bytes_remain = 0
        self.est_time_remain = 0
        self.addr = m.Addr(addr_type=AddrType.LOCAL)
        self.read_offset = 0
        self.read_length = 0
        self.env: list[tuple[str, str]] = []
        self.env_added: dict[str, str] = {}
        self.butype: str | None = None
        self.data_path: str | None = None  # ONTAP path of the backup/restore, for REST
        self.end: DataEnd | None = None
        self.listen_sock: socket.socket | None = None
        self.listening_local = False
        self.accept_task: asyncio.Task[None] | None = None
        self.worker: threading.Thread | None = None
        self.abort_event = threading.Event()
        self.started_at = 0.0

    # ---- helpers -------------------------------------------------------------------------

    def _check(self, code: Message) -> None:
        if code in machines.DATA_ALWAYS:
            return
        if not machines.allowed(machines.DATA_TABLE, self.state, code):
            raise NdmpError(Error.ILLEGAL_STATE_ERR, f"{code.name} in data state {self.state.name}")

    def _apply(self, what: Message | Event) -> None:
        self.state = machines.next_state(machines.DATA_TABLE, self.state, what)  # type: ignore

    def log_message(self, log_type: LogType, text: str) -> None:
        """LOG_MESSAGE to the DMA (any thread), mirrored in our own log."""
        with self.lock:
            self._message_ids += 1
            mid = self._message_ids
        level = {LogType.ERROR: 40, LogType.WARNING: 30, LogType.DEBUG: 10}.get(log_type, 20)
        self.session.log.log(level, "data: %s", text)
        self.session.post_threadsafe(
            Message.LOG_MESSAGE,
            m.LogMessagePost(
                log_type=log_type,
                message_id=mid,
                entry=text,
                associated_message_valid=HasAssociatedMessage.NO,
                associated_message_sequence=0,
            ),
        )

    def _halt(self, reason: DataHaltReason, what: Message | Event) -> bool:
        with self.lock:
            if self.state in (DataState.HALTED, DataState.IDLE):
                return False
            self._apply(what)
            self.halt_reason = reason
            if reason != DataHaltReason.SUCCESSFUL:
                self.abort_event.set()  # the engine thread stops at its next check
            end, self.end = self.end, None
            listen, self.listen_sock = self.listen_sock, None
            self.listening_local = False
        if end is not None:
            if reason == DataHaltReason.SUCCESSFUL:
                end.close_write()
            end.close()
        if listen is not None:
            self.session.server.ports.release(listen.getsockname()[1])
            listen.close()
        self.session.log.info("data halted: %s", reason.name)
        self.session.post_threadsafe(
            Message.NOTIFY_DATA_HALTED, m.NotifyDataHaltedPost(reason=reason)
        )
        return True

    # ---- connection set-up ------------------------------------------------------------------

    async def listen(self, addr_type: AddrType) -> m.Addr:
        self._check(Message.DATA_LISTEN)
        if addr_type == AddrType.LOCAL:
            with self.lock:
                self._apply(Message.DATA_LISTEN)
                self.listening_local = True
            return m.Addr(addr_type=AddrType.LOCAL)
        if addr_type != AddrType.TCP:
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, f"address type {addr_type.name}")
        sock, host, port = bind_listener(self.session)
        with self.lock:
            self._apply(Message.DATA_LISTEN)
            self.listen_sock = sock
        self.accept_task = self.session.server.loop.create_task(self._accept(sock))
        self.session.log.info("data listening on %s:%d", host, port)
        return tcp_addr(host, port)

    async def _accept(self, sock: socket.socket) -> None:
        conn = await accept_once(self.session, sock)
        if conn is None:
            return
        with self.lock:
            if self.state != DataState.LISTEN or self.listen_sock is not sock:
                conn.close()
                return
            self.listen_sock = None
            end = SocketEnd(conn)
            self.end = end
            self.addr = tcp_addr(end.peer[0], end.peer[1])
            self._apply(Event.PEER_CONNECTED)
        self.session.log.info("data connection from %s:%d", *end.peer[:2])

    def accept_local(self) -> LocalEnd:
        """MOVER_CONNECT(LOCAL) to our LISTEN(LOCAL): make the pipe, keep the data end."""
        data_end, mover_end = local_pair()
        with self.lock:
            self.listening_local = False
            self.end = data_end
            self.addr = m.Addr(addr_type=AddrType.LOCAL)
            self._apply(Event.PEER_CONNECTED)
        return mover_end

    async def connect(self, addr: m.Addr) -> None:
        self._check(Message.DATA_CONNECT)
        if addr.addr_type == AddrType.LOCAL:
            mover = self.session.mover
            if mover.state != MoverState.LISTEN or mover.addr_type != AddrType.LOCAL:
                raise NdmpError(
                    Error.ILLEGAL_STATE_ERR, "DATA_CONNECT(LOCAL) needs a mover listening LOCAL"
                )
            data_end, mover_end = local_pair()
            with self.lock:
                self.end = data_end
                self.addr = m.Addr(addr_type=AddrType.LOCAL)
                self._apply(Message.DATA_CONNECT)
            mover.attach(mover_end)
            return
        if addr.addr_type != AddrType.TCP or not addr.tcp_addr:
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, "address type not supported")
        sock = await connect_any(addr, self.session.server.loop)
        end = SocketEnd(sock)
        with self.lock:
            self.end = end
            self.addr = tcp_addr(end.peer[0], end.peer[1])
            self._apply(Message.DATA_CONNECT)
        self.session.log.info("data connected to %s:%d", *end.peer[:2])

    # ---- operations --------------------------------------------------------------------------

    def _refuse(self, text: str) -> NdmpError:
        self.log_message(LogType.ERROR, text)
        return NdmpError(Error.ILLEGAL_ARGS_ERR, text)

    def _engine(self, butype: str) -> object:
        engine = self.session.server.engines.get(butype)
        if engine is None:
            names = ", ".join(sorted(self.session.server.engines))
            raise self._refuse(f"unknown backup type {butype!r} (this server offers {names})")
        return engine

    def start_backup(self, butype: str, env: list[m.Pval]) -> None:
        self._check(Message.DATA_START_BACKUP)
        engine = self._engine(butype)
        pairs = [(p.name, p.value) for p in env]
        try:
            parsed = parse_backup_env(pairs, butype, self.session)
        except EnvProblem as exc:
            raise self._refuse(str(exc)) from exc
        with self.lock:
            self._apply(Message.DATA_START_BACKUP)
            self.operation = DataOperation.BACKUP
            self.butype = butype
            self.env = pairs
            self.env_added = {"PATHNAME_SEPARATOR": "/", "NDMP_VERSION": "4"}
            self.data_path = parsed.data_path
            self.started_at = time.time()
        self.session.log.info(
            "backup of %s started (%s, history %s)",
            parsed.data_path,
            butype,
            "on" if parsed.history else "off",
        )
        self._spawn(self._run_backup, engine, parsed)

    def start_recover(
        self, code: Message, butype: str, env: list[m.Pval], nlist: list[m.Name]
    ) -> None:
        self._check(code)
        engine = self._engine(butype)
        pairs = [(p.name, p.value) for p in env]
        filehist = code == Message.DATA_START_RECOVER_FILEHIST
        try:
            parsed = parse_recover_env(pairs, nlist, butype, self.session, filehist=filehist)
        except EnvProblem as exc:
            raise self._refuse(str(exc)) from exc
        with self.lock:
            self._apply(code)
            self.operation = DataOperation.RECOVER_FILEHIST if filehist else DataOperation.RECOVER
            self.butype = butype
            self.env = pairs
            self.env_added = {}
            self.data_path = parsed.data_path
            self.started_at = time.time()
            local = isinstance(self.end, LocalEnd)
            self.read_offset, self.read_length = 0, ALL_ONES_64
        self.session.log.info(
            "%s started (%s) into %s",
            "table of contents" if filehist else "recovery",
            butype,
            parsed.data_path or "-",
        )
        if local:
            self.session.mover.local_read(0, ALL_ONES_64)
        else:
            self.session.post(
                Message.NOTIFY_DATA_READ, m.NotifyDataReadPost(offset=0, length=ALL_ONES_64)
            )
        self._spawn(self._run_recover, engine, parsed)

    def _spawn(self, target: object, *args: object) -> None:
        self.abort_event.clear()
        self.worker = threading.Thread(
            target=target,
            args=args,
            name=f"data-{self.session.id}",
            daemon=True,  # type: ignore
        )
        self.worker.start()

    def _run_backup(self, engine: object, env: BackupEnv) -> None:
        end = self.end
        if end is None:
            return
        history = HistoryBatcher(self.session) if env.history else None
        job = BackupJob(
            root=env.root,
            env=dict(self.env),
            sink=CountingSink(self, end),
            history=history,
            log=self.log_message,
            abort=self.abort_event,
            record_size=self.session.mover.record_size or 10240,
            excludes=env.excludes,
            files=env.files,
            label=env.data_path,
        )
        reason = DataHaltReason.SUCCESSFUL
        try:
            engine.backup(job)  # type: ignore[attr-defined]
            if history is not None:
                history.flush()
            # End of stream; then wait until the mover has written the last record and closed
            # its side, so the DMA finds both services halted at once (see mover._halt).
            end.close_write()
            if isinstance(end, LocalEnd):
                end.wait_closed(timeout=60, abort=self.abort_event)
            else:
                end.linger(timeout=30)
            with self.lock:
                self.env_added.update(job.env_added)
            elapsed = max(time.time() - self.started_at, 1e-6)
            self.log_message(
                LogType.NORMAL,
                f"backup of {env.data_path} done: {self.bytes_processed} bytes in "
                f"{elapsed:.1f} s ({self.bytes_processed / elapsed / 1e6:.1f} MB/s)",
            )
        except Aborted:
            reason = DataHaltReason.ABORTED
        except ConnectionBroken as exc:
            if not self.abort_event.is_set():
                self.log_message(LogType.ERROR, f"backup stopped: {exc}")
            reason = DataHaltReason.CONNECT_ERROR
        except EngineError as exc:
            self.log_message(LogType.ERROR, f"backup failed: {exc}")
            reason = DataHaltReason.INTERNAL_ERROR
        except Exception as exc:
            self.session.log.exception("backup engine crashed")
            self.log_message(LogType.ERROR, f"backup failed: internal error: {exc}")
            reason = DataHaltReason.INTERNAL_ERROR
        if self.abort_event.is_set() and reason != DataHaltReason.SUCCESSFUL:
            reason = DataHaltReason.ABORTED if self.state == DataState.ACTIVE else reason
        self._halt(reason, Event.FINISHED)

    def _run_recover(self, engine: object, env: RecoverEnv) -> None:
        end = self.end
        if end is None:
            return
        source = CountingSource(self, end)
        history = HistoryBatcher(self.session) if env.filehist else None
        results: dict[str, RecoveryStatus] = {}

        def file_result(name: str, status: RecoveryStatus) -> None:
            results[name] = status
            self.session.post_threadsafe(
                Message.LOG_FILE, m.LogFilePost(name=name, recovery_status=status)
            )

        job = RecoverJob(
            source=source,
            env=dict(self.env),
            confine=env.confine,
            destination=env.destination,
            selections=env.selections,
            log=self.log_message,
            file_result=file_result,
            abort=self.abort_event,
            history=history,
            overwrite=env.overwrite,
        )
        reason = DataHaltReason.SUCCESSFUL
        try:
            result = engine.recover(job)  # type: ignore[attr-defined]
            if history is not None:
                history.flush()
            self._drain(source)
            what = "listed" if env.filehist else "restored"
            self.log_message(
                LogType.NORMAL,
                f"{getattr(result, 'entries', 0)} entries {what}, "
                f"{getattr(result, 'failed', 0)} failed, {self.bytes_processed} bytes read",
            )
            # per-file failures are reported in LOG_FILE; the operation itself succeeded
            for sel in env.selections:
                if sel.name not in results:
                    file_result(sel.name, RecoveryStatus.FAILED_NOT_FOUND)
        except Aborted:
            reason = DataHaltReason.ABORTED
        except ConnectionBroken as exc:
            if not self.abort_event.is_set():
                self.log_message(LogType.ERROR, f"recovery stopped: {exc}")
            reason = DataHaltReason.CONNECT_ERROR
        except EngineError as exc:
            self.log_message(LogType.ERROR, f"recovery failed: {exc}")
            for sel in env.selections:
                if sel.name not in results:
                    file_result(sel.name, RecoveryStatus.FAILED_IO_ERROR)
            reason = DataHaltReason.INTERNAL_ERROR
        except Exception as exc:
            self.session.log.exception("recovery engine crashed")
            self.log_message(LogType.ERROR, f"recovery failed: internal error: {exc}")
            reason = DataHaltReason.INTERNAL_ERROR
        self._halt(reason, Event.FINISHED)

    def _drain(self, source: CountingSource) -> None:
        """Read the rest of the stream (record padding) so the mover ends at its window/mark."""
        buf = bytearray(1 << 20)
        while not self.abort_event.is_set():
            try:
                if source.readinto(buf) == 0:
                    return
            except ConnectionBroken:
                return

    def abort(self) -> None:
        self._check(Message.DATA_ABORT)
        if self.state == DataState.HALTED:
            return
        self.abort_event.set()
        self._halt(DataHaltReason.ABORTED, Message.DATA_ABORT)

    async def stop(self) -> None:
        self._check(Message.DATA_STOP)
        await self._join()
        with self.lock:
            self._apply(Message.DATA_STOP)
            self._reset()

    async def _join(self) -> None:
        await finish_workers(self.worker, self.accept_task)

    def get_env(self) -> list[m.Pval]:
        self._check(Message.DATA_GET_ENV)
        with self.lock:
            names = {k for k, _ in self.env}
            pairs = list(self.env) + [(k, v) for k, v in self.env_added.items() if k not in names]
        return [m.Pval(name=k, value=v) for k, v in pairs]

    async def abort_for_kill(self) -> None:
        self.abort_event.set()
        self._halt(DataHaltReason.ABORTED, Event.KILLED)

    async def release_all(self) -> None:
        self.abort_event.set()
        self._halt(DataHaltReason.ABORTED, Event.KILLED)
        await self._join()

    def get_state(self) -> m.DataGetStateReply:
        with self.lock:
            unsupported = (
                DataStateUnsupported.EST_BYTES_REMAIN | DataStateUnsupported.EST_TIME_REMAIN
            )
            return m.DataGetStateReply(
                unsupported=int(unsupported),
                error=Error.NO_ERR,
                operation=self.operation,
                state=self.state,
                halt_reason=self.halt_reason,
                bytes_processed=self.bytes_processed,
                est_bytes_remain=0,
                est_time_remain=0,
                data_connection_addr=self.addr,
                read_offset=self.read_offset,
                read_length=self.read_length,
            )
