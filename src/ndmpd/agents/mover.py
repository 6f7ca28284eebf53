"""The mover (tape server) of one session: spec §8.

Requests arrive on the event loop and are checked against ``machines.MOVER_TABLE``. Once a
data connection exists, one worker thread moves bytes: in READ mode (backup) from the
connection into whole records on tape, in WRITE mode (recover) from tape records to the
connection, for the byte ranges MOVER_READ asks for. The worker pauses (end of medium, end
of window, filemark, seek) by changing state under the lock, posting NOTIFY_MOVER_PAUSED and
waiting until the DMA continues, closes or aborts. Every field of MOVER_GET_STATE is kept
here, and the REST layer reads the same fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import TYPE_CHECKING

from ndmpd.agents import machines
from ndmpd.agents.errors import NdmpError
from ndmpd.agents.machines import Event
from ndmpd.agents.pipe import ConnectionBroken, DataEnd, LocalEnd, SocketEnd
from ndmpd.protocol import messages as m
from ndmpd.protocol.constants import (
    ALL_ONES_64,
    AddrType,
    DataState,
    Error,
    Message,
    MoverHaltReason,
    MoverMode,
    MoverPauseReason,
    MoverState,
    MtioOp,
    TapeOpenMode,
)
from ndmpd.tapes import TapeError
from ndmpd.tapes.drive import DIRECT_WRITE

if TYPE_CHECKING:
    from ndmpd.agents.data import DataService
    from ndmpd.server.session import Session

MAX_RECORD_SIZE = 4 << 20
_CHUNK = 1 << 20  # bytes per connection write in recovery mode (rounded to whole records)
_SOCK_FILL = 4 << 20  # the backup mode's receive block (see DIRECT_WRITE)


class MoverService:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.record_size = 0  # persists across IDLE (spec §8)
        self._reset()

    def _reset(self) -> None:
        self.state = MoverState.IDLE
        self.mode = MoverMode.NOACTION
        self.pause_reason = MoverPauseReason.NA
        self.halt_reason = MoverHaltReason.NA
        self.record_num = 0
        self.bytes_moved = 0
        self.seek_position = 0
        self.bytes_left_to_read = 0
        self.window_offset = 0
        self.window_length = 0
        self.window_set = False
        self.window_fresh = False  # a SET_WINDOW since the last pause
        self.addr = m.Addr(addr_type=AddrType.LOCAL)
        self.addr_type: AddrType = AddrType.LOCAL
        self.end: DataEnd | None = None
        self.listen_sock: socket.socket | None = None
        self.accept_task: asyncio.Task[None] | None = None
        self.worker: threading.Thread | None = None
        self.read_pending = False  # a MOVER_READ not yet fully served
        self.read_cursor = 0  # stream offset of the next byte that read still wants
        self.stream_pos = 0  # stream offset of the next record the tape head will give

    # ---- state ---------------------------------------------------------------------------

    @property
    def blocks_tape(self) -> bool:
        """While ACTIVE only TAPE_GET_STATE may touch the drive (spec §8)."""
        return self.state == MoverState.ACTIVE

    @property
    def holds_tape(self) -> bool:
        """TAPE_CLOSE is refused while the mover listens or moves."""
        return self.state in (MoverState.LISTEN, MoverState.ACTIVE)

    def _check(self, code: Message) -> None:
        if code in machines.MOVER_ALWAYS:
            return
        if not machines.allowed(machines.MOVER_TABLE, self.state, code):
            raise NdmpError(
                Error.ILLEGAL_STATE_ERR, f"{code.name} in mover state {self.state.name}"
            )

    def _apply(self, what: Message | Event) -> MoverState:
        """Move along the table (caller holds the lock); returns the new state."""
        new = machines.next_state(machines.MOVER_TABLE, self.state, what)
        self.state = new  # type: ignore[assignment]
        self.changed.notify_all()
        return self.state

    def _halt(
        self, reason: MoverHaltReason, what: Event | Message, keep: list[DataEnd] | None = None
    ) -> bool:
        """Halt from any thread; posts NOTIFY_MOVER_HALTED once. False if already halted.
        With ``keep``, a TCP connection is only half-closed and handed back to the caller."""
        with self.lock:
            if self.state in (MoverState.HALTED, MoverState.IDLE):
                return False
            self._apply(what)
            self.halt_reason = reason
            self.pause_reason = MoverPauseReason.NA
            end, self.end = self.end, None
            listen, self.listen_sock = self.listen_sock, None
        # At the end of a job the data service at the other end, when it runs in this
        # process, waits for our close and halts right after us. ndmjob polls both states
        # after the first halt post it reads and, when it has already consumed both posts,
        # sleeps a whole 2-second poll before it notices it is done. So our post waits for
        # this session's next request (the DMA's poll after the data halt), or 0.25 s.
        self.session.log.info("mover halted: %s", reason.name)
        post = m.NotifyMoverHaltedPost(reason=reason)
        if reason == MoverHaltReason.CONNECT_CLOSED and self._data_peer(end) is not None:
            self.session.defer_post_threadsafe(Message.NOTIFY_MOVER_HALTED, post)
        else:
            self.session.post_threadsafe(Message.NOTIFY_MOVER_HALTED, post)
        if end is not None:
            if reason == MoverHaltReason.CONNECT_CLOSED:
                end.close_write()  # an orderly end: the data side reads what is left, then EOF
            if keep is not None and isinstance(end, SocketEnd):
                keep.append(end)
            else:
                end.close()
        if listen is not None:
            self.session.server.ports.release(listen.getsockname()[1])
            listen.close()
        return True

    def _data_peer(self, end: DataEnd | None) -> DataService | None:
        """The data service about to halt at the other end of our connection, if it runs
        here: our own on a LOCAL connection, or a backup's over TCP (at the end of a TCP
        recovery MOVER_CLOSE already answers after the data side has finished)."""
        if isinstance(end, LocalEnd):
            return self.session.data if self.session.data.state == DataState.ACTIVE else None
        if isinstance(end, SocketEnd) and self.mode == MoverMode.READ:
            for other in list(self.session.server.sessions.values()):
                theirs = other.data.end
                if (
                    isinstance(theirs, SocketEnd)
                    and theirs.peer == end.local
                    and theirs.local == end.peer
                ):
                    return other.data
        return None

    def _pause(self, reason: MoverPauseReason, seek_position: int) -> bool:
        """Called by the worker: pause, tell the DMA, wait. True = go on, False = stop."""
        with self.lock:
            if self.state != MoverState.ACTIVE:
                return False
            self._apply(Event.PAUSE)
            self.pause_reason = reason
            self.seek_position = seek_position
            self.window_fresh = False
        self.session.log.info("mover paused: %s at %d", reason.name, seek_position)
        self.session.post_threadsafe(
            Message.NOTIFY_MOVER_PAUSED,
            m.NotifyMoverPausedPost(reason=reason, seek_position=seek_position),
        )
        with self.lock:
            while self.state == MoverState.PAUSED:
                self.changed.wait()
            return self.state == MoverState.ACTIVE

    # ---- requests ----------------------------------------------------------------------

    def set_record_size(self, size: int) -> None:
        self._check(Message.MOVER_SET_RECORD_SIZE)
        if size <= 0 or size > MAX_RECORD_SIZE:
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, f"record size {size} out of range")
        drive = self.session.tape.drive
        if drive is not None and drive.block_size and size % drive.block_size:
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, "record size not a multiple of the block size")
        with self.lock:
            self.record_size = size
            self.window_offset = 0
            self.window_length = 0
            self.window_set = False

    def set_window(self, offset: int, length: int) -> None:
        self._check(Message.MOVER_SET_WINDOW)
        if not self.record_size:
            raise NdmpError(Error.PRECONDITION_ERR, "SET_WINDOW before SET_RECORD_SIZE")
        if length == 0:
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, "window length 0")
        if length != ALL_ONES_64 and offset + length > ALL_ONES_64:
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, "window offset + length overflows")
        with self.lock:
            self.window_offset = offset
            self.window_length = length
            self.window_set = True
            self.window_fresh = True
            self.record_num = offset // self.record_size
            self.stream_pos = self.record_num * self.record_size

    @property
    def window_end(self) -> int:
        if self.window_length == ALL_ONES_64:
            return ALL_ONES_64
        return self.window_offset + self.window_length

    def _preconditions(self, mode: MoverMode) -> None:
        if mode not in (MoverMode.READ, MoverMode.WRITE):
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, f"mover mode {mode.name}")
        tape = self.session.tape
        if tape.drive is None:
            raise NdmpError(Error.DEV_NOT_OPEN_ERR, "no tape drive open")
        if not self.record_size or not self.window_set:
            raise NdmpError(Error.PRECONDITION_ERR, "record size and window must be set first")
        if mode == MoverMode.READ and tape.mode == TapeOpenMode.READ:
            raise NdmpError(Error.PERMISSION_ERR, "tape opened read-only")

    async def listen(self, mode: MoverMode, addr_type: AddrType) -> m.Addr:
        self._check(Message.MOVER_LISTEN)
        self._preconditions(mode)
        if addr_type == AddrType.LOCAL:
            with self.lock:
                self._apply(Message.MOVER_LISTEN)
                self.mode, self.addr_type = mode, addr_type
                self.addr = m.Addr(addr_type=AddrType.LOCAL)
            return m.Addr(addr_type=AddrType.LOCAL)
        if addr_type != AddrType.TCP:
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, f"address type {addr_type.name}")
        sock, host, port = bind_listener(self.session)
        with self.lock:
            self._apply(Message.MOVER_LISTEN)
            self.mode, self.addr_type = mode, addr_type
            self.listen_sock = sock
            self.addr = m.Addr(addr_type=AddrType.LOCAL)
        self.accept_task = self.session.server.loop.create_task(self._accept(sock))
        self.session.log.info("mover listening on %s:%d (%s)", host, port, mode.name)
        return tcp_addr(host, port)

    async def _accept(self, sock: socket.socket) -> None:
        conn = await accept_once(self.session, sock)
        if conn is None:
            return
        with self.lock:
            if self.state != MoverState.LISTEN or self.listen_sock is not sock:
                conn.close()
                return
            self.listen_sock = None
        self.attach(SocketEnd(conn))

    def attach(self, end: DataEnd) -> None:
        """A data connection exists (accepted, connected, or LOCAL): go ACTIVE and start."""
        with self.lock:
            self._apply(
                Event.PEER_CONNECTED if self.state == MoverState.LISTEN else Message.MOVER_CONNECT
            )
            self.end = end
            if isinstance(end, SocketEnd):
                self.addr = tcp_addr(end.peer[0], end.peer[1])
            else:
                self.addr = m.Addr(addr_type=AddrType.LOCAL)
        self.session.log.info(
            "mover active (%s), data connection %s",
            self.mode.name,
            "LOCAL" if not isinstance(end, SocketEnd) else end.peer,
        )
        target = self._backup_worker if self.mode == MoverMode.READ else self._recover_worker
        self.worker = threading.Thread(target=target, name=f"mover-{self.session.id}", daemon=True)
        self.worker.start()

    async def connect(self, mode: MoverMode, addr: m.Addr) -> None:
        self._check(Message.MOVER_CONNECT)
        self._preconditions(mode)
        self.mode, self.addr_type = mode, addr.addr_type
        if addr.addr_type == AddrType.LOCAL:
            data = self.session.data
            if not data.listening_local:
                raise NdmpError(Error.ILLEGAL_STATE_ERR, "the data service is not listening LOCAL")
            mover_end = data.accept_local()
            self.attach(mover_end)
            return
        if addr.addr_type != AddrType.TCP or not addr.tcp_addr:
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, "address type not supported")
        sock = await connect_any(addr, self.session.server.loop)
        self.attach(SocketEnd(sock))

    def read(self, offset: int, length: int) -> None:
        self._check(Message.MOVER_READ)
        if self.mode != MoverMode.WRITE:
            raise NdmpError(Error.ILLEGAL_STATE_ERR, "MOVER_READ needs a mover in WRITE mode")
        if length == 0:
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, "read length 0")
        if length != ALL_ONES_64 and offset + length > ALL_ONES_64:
            raise NdmpError(Error.ILLEGAL_ARGS_ERR, "read offset + length overflows")
        with self.lock:
            if self.read_pending:
                raise NdmpError(Error.READ_IN_PROGRESS_ERR)
            self._start_read(offset, length)

    def local_read(self, offset: int, length: int) -> None:
        """The data service's internal read on a LOCAL connection (no MOVER_READ on the wire)."""
        with self.lock:
            if not self.read_pending and self.mode == MoverMode.WRITE:
                self._start_read(offset, length)

    def _start_read(self, offset: int, length: int) -> None:
        """Hand a byte range to the recover worker (caller holds the lock)."""
        self.seek_position = self.read_cursor = offset
        self.bytes_left_to_read = length
        self.read_pending = True
        self.changed.notify_all()

    def continue_(self) -> None:
        self._check(Message.MOVER_CONTINUE)
        with self.lock:
            if self.pause_reason in (MoverPauseReason.EOW, MoverPauseReason.SEEK) and not (
                self.window_fresh
            ):
                raise NdmpError(Error.PRECONDITION_ERR, "set a new window before continuing")
            self._apply(Message.MOVER_CONTINUE)
            self.pause_reason = MoverPauseReason.NA

    async def close(self) -> None:
        self._check(Message.MOVER_CLOSE)
        kept: list[DataEnd] = []
        self._halt(MoverHaltReason.CONNECT_CLOSED, Message.MOVER_CLOSE, keep=kept)
        for end in kept:
            # Answer once the data service at the other end has seen the end of the stream
            # and finished (or after a second): a DMA polling both services right after
            # this reply then finds both halted, instead of waiting for its next poll.
            await asyncio.to_thread(end.linger, 1.0)  # type: ignore[union-attr]
            end.close()

    def abort(self) -> None:
        self._check(Message.MOVER_ABORT)
        if self.state == MoverState.HALTED:
            return
        self._halt(MoverHaltReason.ABORTED, Message.MOVER_ABORT)

    async def stop(self) -> None:
        self._check(Message.MOVER_STOP)
        await self._join()
        with self.lock:
            self._apply(Message.MOVER_STOP)
            size = self.record_size
            self._reset()
            self.record_size = size

    async def _join(self) -> None:
        await finish_workers(self.worker, self.accept_task)

    async def abort_for_kill(self) -> None:
        self._halt(MoverHaltReason.ABORTED, Event.KILLED)

    async def release_all(self) -> None:
        """The connection is gone: abort whatever runs, wait for the worker to let go."""
        self._halt(MoverHaltReason.ABORTED, Event.KILLED)
        await self._join()

    def get_state(self) -> m.MoverGetStateReply:
        with self.lock:
            return m.MoverGetStateReply(
                error=Error.NO_ERR,
                mode=self.mode,
                state=self.state,
                pause_reason=self.pause_reason,
                halt_reason=self.halt_reason,
                record_size=self.record_size,
                record_num=self.record_num & 0xFFFFFFFF,
                bytes_moved=self.bytes_moved,
                seek_position=self.seek_position,
                bytes_left_to_read=self.bytes_left_to_read,
                window_offset=self.window_offset,
                window_length=self.window_length,
                data_connection_addr=self.addr,
            )

    # ---- workers (threads) -----------------------------------------------------------------

    def _backup_worker(self) -> None:
        """READ mode: connection bytes -> whole records on tape; the last record zero-padded.

        Records are written in bulk straight from the bytes received (a LOCAL pipe hands over
        its chunks without another copy); only a record split across two receives is copied.
        """
        rs = self.record_size
        carry = bytearray()
        sock_buf = memoryview(bytearray(max(rs, (_SOCK_FILL // rs) * rs)))
        try:
            while True:
                end = self.end
                if end is None:
                    return
                if isinstance(end, LocalEnd):
                    chunk = memoryview(end.take())
                else:
                    # fill a large block (or to the end of the stream): the drive then writes
                    # it straight from here, with no copy into its own buffer
                    n = end.readinto(sock_buf)
                    while n and n < DIRECT_WRITE + rs:
                        k = end.readinto(sock_buf[n:])
                        if not k:
                            break
                        n += k
                    chunk = sock_buf[:n]
                if not chunk.nbytes:
                    break
                if carry:
                    need = rs - len(carry)
                    carry += chunk[:need]
                    chunk = chunk[need:]
                    if len(carry) < rs:
                        continue
                    if not self._write_record(memoryview(carry), rs):
                        return
                    carry = bytearray()
                whole = chunk.nbytes - chunk.nbytes % rs
                if whole and not self._write_records(chunk[:whole], rs):
                    return
                if whole < chunk.nbytes:
                    carry = bytearray(chunk[whole:])
            if carry:
                used = len(carry)
                carry += bytes(rs - used)
                if not self._write_record(memoryview(carry), used):
                    return
            self._halt(MoverHaltReason.CONNECT_CLOSED, Event.CONNECTION_CLOSED)
        except ConnectionBroken as exc:
            self.session.log.warning("mover: %s", exc)
            self._halt(MoverHaltReason.CONNECT_CLOSED, Event.CONNECTION_CLOSED)
        except Exception:
            self.session.log.exception("mover worker failed")
            self._halt(MoverHaltReason.INTERNAL_ERROR, Event.INTERNAL_ERROR)
        finally:
            with contextlib.suppress(Exception):
                drive = self.session.tape.drive
                if drive is not None:
                    drive.flush()

    def _write_records(self, data: memoryview, rs: int) -> bool:
        """Write whole records in bulk; the window end and the end of medium fall back to
        ``_write_record``, which pauses. False = stop."""
        while data.nbytes:
            if self.state != MoverState.ACTIVE:
                return False
            drive = self.session.tape.drive
            if drive is None:
                self._halt(MoverHaltReason.INTERNAL_ERROR, Event.INTERNAL_ERROR)
                return False
            count = data.nbytes // rs
            if self.window_end != ALL_ONES_64:
                fits = (self.window_end - self.record_num * rs) // rs
                count = min(count, max(fits, 0))
            done = 0
            if count:
                try:
                    done = drive.write_records(data[: count * rs], rs)
                except TapeError as exc:
                    self.session.log.error("tape write failed: %s", exc.error.name)
                    self._halt(MoverHaltReason.MEDIA_ERROR, Event.INTERNAL_ERROR)
                    return False
                with self.lock:
                    self.record_num += done
                    self.bytes_moved += done * rs
            data = data[done * rs :]
            if data.nbytes:
                # the next record needs an answer only a single write gives (EOW, EOM, error)
                if not self._write_record(data[:rs], rs):
                    return False
                data = data[rs:]
        return True

    def _write_record(self, record: memoryview, stream_bytes: int) -> bool:
        """Write one record, pausing for end of window / end of medium. False = stop."""
        drive = self.session.tape.drive
        while True:
            if self.state != MoverState.ACTIVE:
                return False
            pos = self.record_num * self.record_size
            if self.window_end != ALL_ONES_64 and pos + len(record) > self.window_end:
                if not self._pause(MoverPauseReason.EOW, self.window_end):
                    return False
                continue
            if drive is None:
                self._halt(MoverHaltReason.INTERNAL_ERROR, Event.INTERNAL_ERROR)
                return False
            try:
                drive.write(record)
            except TapeError as exc:
                if exc.error in (Error.EOM_ERR, Error.IO_ERR):
                    if not self._pause(MoverPauseReason.EOM, pos):
                        return False
                    drive = self.session.tape.drive
                    continue
                self.session.log.error("tape write failed: %s", exc.error.name)
                self._halt(MoverHaltReason.MEDIA_ERROR, Event.INTERNAL_ERROR)
                return False
            with self.lock:
                self.record_num += 1
                self.bytes_moved += stream_bytes
            return True

    def _recover_worker(self) -> None:
        """WRITE mode: serve each MOVER_READ range from tape records to the connection."""
        rs = self.record_size
        view = memoryview(bytearray(max(rs, (_CHUNK // rs) * rs)))
        try:
            while True:
                with self.lock:
                    while self.state in (MoverState.ACTIVE, MoverState.PAUSED) and not (
                        self.state == MoverState.ACTIVE and self.read_pending
                    ):
                        self.changed.wait()
                    if self.state != MoverState.ACTIVE:
                        return
                if not self._serve_read(view, rs):
                    return
        except ConnectionBroken as exc:
            self.session.log.info("mover: %s", exc)
            self._halt(MoverHaltReason.CONNECT_CLOSED, Event.CONNECTION_CLOSED)
        except Exception:
            self.session.log.exception("mover worker failed")
            self._halt(MoverHaltReason.INTERNAL_ERROR, Event.INTERNAL_ERROR)

    def _serve_read(self, view: memoryview, rs: int) -> bool:
        """Send the current read range; False when the mover stopped (halted/aborted)."""
        while True:
            with self.lock:
                if self.state != MoverState.ACTIVE:
                    return self.state == MoverState.PAUSED
                if self.bytes_left_to_read == 0:
                    self.read_pending = False
                    return True
                cursor, cur, wend = self.read_cursor, self.stream_pos, self.window_end
                drive = self.session.tape.drive
            if drive is None:
                self._halt(MoverHaltReason.INTERNAL_ERROR, Event.INTERNAL_ERROR)
                return False
            if cursor < self.window_offset or cursor >= wend:
                if not self._pause(MoverPauseReason.SEEK, cursor):
                    return False
                continue
            if not cur <= cursor < cur + rs:
                cur = self._position(drive, cursor - cursor % rs, cur, rs)
                if cur is None:
                    return False
                continue
            try:
                # whole runs of records at once when the read starts on a record boundary
                n = drive.readinto_records(view, rs) if cursor == cur else drive.readinto(view[:rs])
            except TapeError as exc:
                reason = {Error.EOF_ERR: MoverPauseReason.EOF, Error.EOM_ERR: MoverPauseReason.EOM}
                if exc.error in reason:
                    if not self._pause(reason[exc.error], cur):
                        return False
                    continue
                self.session.log.error("tape read failed: %s", exc.error.name)
                self._halt(MoverHaltReason.MEDIA_ERROR, Event.INTERNAL_ERROR)
                return False
            skip = cursor - cur
            upto = n
            if wend != ALL_ONES_64:
                upto = min(upto, wend - cur)
            with self.lock:
                left = self.bytes_left_to_read
            if left != ALL_ONES_64:
                upto = min(upto, skip + left)
            sent = max(0, upto - skip)
            if sent:
                end = self.end
                if end is None:
                    return False
                end.write(view[skip:upto])
            with self.lock:
                self.stream_pos = cur + n
                self.record_num += n // rs if n > rs else 1
                self.bytes_moved += sent
                self.read_cursor += sent
                self.bytes_left_to_read -= sent

    def _position(self, drive: object, target: int, cur: int, rs: int) -> int | None:
        """Space the tape by whole records so the head is at stream offset ``target``."""
        delta = (target - cur) // rs
        try:
            op, count = (MtioOp.FSR, delta) if delta > 0 else (MtioOp.BSR, -delta)
            resid = drive.mtio(op, count)  # type: ignore[attr-defined]
        except TapeError as exc:
            self.session.log.error("tape positioning failed: %s", exc.error.name)
            self._halt(MoverHaltReason.MEDIA_ERROR, Event.INTERNAL_ERROR)
            return None
        moved = abs(delta) - resid
        with self.lock:
            self.stream_pos = cur + (moved if delta > 0 else -moved) * rs
            self.record_num = self.stream_pos // rs
            pos = self.stream_pos
        if resid and not self._pause(MoverPauseReason.EOF, pos):
            return None  # a filemark (or BOT) stopped the spacing and the DMA gave up
        return pos


def bind_listener(session: Session) -> tuple[socket.socket, str, int]:
    """A listening socket for a data connection (LISTEN of the mover or the data service), on
    the address the DMA reached us on and a port of ``data_port_range``."""
    host = listen_host(session.source_address)
    try:
        sock = session.server.ports.bind(host)
    except OSError as exc:
        raise NdmpError(Error.CONNECT_ERR, str(exc)) from exc
    return sock, host, sock.getsockname()[1]


async def finish_workers(
    worker: threading.Thread | None, accept_task: asyncio.Task[None] | None
) -> None:
    """Wait for a service's worker thread to let go and drop a listen nobody answered."""
    if worker is not None and worker.is_alive():
        await asyncio.to_thread(worker.join, 30)
    if accept_task is not None and not accept_task.done():
        accept_task.cancel()


async def accept_once(session: Session, sock: socket.socket) -> socket.socket | None:
    """The one connection a LISTEN waits for; the listener is then closed and its port freed.
    None when the listen was given up (abort, teardown)."""
    try:
        conn, _peer = await session.server.loop.sock_accept(sock)
    except (OSError, asyncio.CancelledError):
        return None
    session.server.ports.release(sock.getsockname()[1])
    sock.close()
    return conn


def listen_host(source_address: str) -> str:
    """Where a data listen binds: the address the DMA reached us on (NDMP TCP is IPv4)."""
    if source_address.startswith("::ffff:"):
        return source_address[7:]
    if ":" in source_address:
        return "127.0.0.1" if source_address == "::1" else "0.0.0.0"
    return source_address


def tcp_addr(host: str, port: int) -> m.Addr:
    if host.startswith("::ffff:"):
        host = host[7:]
    try:
        ip = int.from_bytes(socket.inet_aton(host), "big")
    except OSError:
        ip = 0x7F000001
    return m.Addr(addr_type=AddrType.TCP, tcp_addr=[m.TcpAddr(ip_addr=ip, port=port, addr_env=[])])


async def connect_any(
    addr: m.Addr, loop: asyncio.AbstractEventLoop, timeout: float = 15.0
) -> socket.socket:
    """Connect to the first reachable address of a TCP ``Addr`` (LISTEN replies list several)."""
    errors = []
    for entry in addr.tcp_addr:
        host = socket.inet_ntoa(entry.ip_addr.to_bytes(4, "big"))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, entry.port)), timeout)
            return sock
        except (OSError, TimeoutError) as exc:
            sock.close()
            errors.append(f"{host}:{entry.port}: {exc}")
    raise NdmpError(Error.CONNECT_ERR, "; ".join(errors) or "no address to connect to")
