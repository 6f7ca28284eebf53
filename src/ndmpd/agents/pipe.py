"""The data connection between a data service and a mover, as seen by their worker threads.

Both ends of every data connection look the same to the workers: ``write`` (blocks while the
other side is behind: flow control), ``readinto`` (0 = the other side finished), ``close_write``
(end of stream) and ``close`` (tear down, waking a blocked peer). A TCP connection is a socket;
a LOCAL connection (data and mover in one session) is an in-process pipe with no socket.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque


class ConnectionBroken(Exception):
    """The other side vanished or the connection was torn down."""


class SocketEnd:
    """One end of a TCP data connection, used from one worker thread in blocking mode."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass
        self.sock = sock
        self.local = sock.getsockname()
        self.peer = sock.getpeername()
        self._closed = False

    def write(self, data: bytes | memoryview) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionBroken(f"data connection lost: {exc}") from exc

    def readinto(self, buf: bytearray | memoryview) -> int:
        try:
            return self.sock.recv_into(buf)
        except OSError as exc:
            if self._closed:
                return 0
            raise ConnectionBroken(f"data connection lost: {exc}") from exc

    def close_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def linger(self, timeout: float) -> None:
        """After close_write: wait (briefly) for the peer to close too, i.e. to have taken the
        end of the stream and finished; then the caller closes."""
        deadline = time.monotonic() + timeout
        buf = bytearray(65536)
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                if self.sock.recv_into(buf) == 0:
                    return
        except (OSError, TimeoutError):
            return

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class _Channel:
    """One direction of a LOCAL pipe: a bounded queue of byte chunks between two threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: deque[bytes] = deque()
        self.head = 0  # bytes of chunks[0] already consumed
        self.size = 0
        self.eof = False
        self.broken = False
        self.cond = threading.Condition()

    def write(self, data: bytes | memoryview) -> None:
        if not len(data):
            return
        chunk = bytes(data)
        with self.cond:
            while self.size >= self.limit and not self.broken:
                self.cond.wait()
            if self.broken or self.eof:
                raise ConnectionBroken("data connection closed by the other side")
            self.chunks.append(chunk)
            self.size += len(chunk)
            self.cond.notify_all()

    def readinto(self, buf: bytearray | memoryview) -> int:
        view = memoryview(buf).cast("B")
        want = len(view)
        with self.cond:
            while not self.chunks and not self.eof and not self.broken:
                self.cond.wait()
            if self.broken and not self.chunks:
                raise ConnectionBroken("data connection torn down")
            got = 0
            while self.chunks and got < want:
                chunk = self.chunks[0]
                take = min(len(chunk) - self.head, want - got)
                view[got : got + take] = chunk[self.head : self.head + take]
                got += take
                self.head += take
                if self.head == len(chunk):
                    self.chunks.popleft()
                    self.head = 0
            self.size -= got
            self.cond.notify_all()
            return got

    def take(self) -> bytes | memoryview:
        """The next whole chunk, without copying it again (b"" at the end of the stream)."""
        with self.cond:
            while not self.chunks and not self.eof and not self.broken:
                self.cond.wait()
            if not self.chunks:
                if self.broken:
                    raise ConnectionBroken("data connection torn down")
                return b""
            chunk = self.chunks.popleft()
            head, self.head = self.head, 0
            self.size -= len(chunk) - head
            self.cond.notify_all()
            return memoryview(chunk)[head:] if head else chunk

    def finish(self) -> None:
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def tear_down(self) -> None:
        with self.cond:
            self.broken = True
            self.chunks.clear()
            self.size = 0
            self.cond.notify_all()


class LocalEnd:
    """One end of a LOCAL data connection; ``local_pair`` makes the two ends."""

    local = ("local", 0)
    peer = ("local", 0)

    def __init__(self, send: _Channel, recv: _Channel) -> None:
        self._send = send
        self._recv = recv

    def write(self, data: bytes | memoryview) -> None:
        self._send.write(data)

    def readinto(self, buf: bytearray | memoryview) -> int:
        return self._recv.readinto(buf)

    def take(self) -> bytes | memoryview:
        return self._recv.take()

    def close_write(self) -> None:
        self._send.finish()

    def wait_closed(self, timeout: float, abort: threading.Event) -> None:
        """After close_write: wait until the peer has drained our stream and closed."""
        deadline = time.monotonic() + timeout
        ch = self._recv
        with ch.cond:
            while not (ch.broken or ch.eof) and not abort.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                ch.cond.wait(min(left, 0.2))

    def close(self) -> None:
        # After close_write the stream is complete: leave it for the peer to drain.
        if not self._send.eof:
            self._send.tear_down()
        self._recv.tear_down()


def local_pair(limit: int = 8 << 20) -> tuple[LocalEnd, LocalEnd]:
    """Two connected ends (data side, mover side) with ``limit`` bytes of buffering each way."""
    a_to_b, b_to_a = _Channel(limit), _Channel(limit)
    return LocalEnd(a_to_b, b_to_a), LocalEnd(b_to_a, a_to_b)


DataEnd = SocketEnd | LocalEnd
