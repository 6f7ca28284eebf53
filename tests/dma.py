"""A minimal Python DMA for tests that need to steer a backup or restore step by step."""

from __future__ import annotations

import time

from ndmpd.protocol import messages as m
from ndmpd.protocol.client import NdmpClient
from ndmpd.protocol.connection import Post
from ndmpd.protocol.constants import (
    ALL_ONES_64,
    AddrType,
    ConnectionStatusReason,
    Message,
    MoverMode,
    MtioOp,
    TapeOpenMode,
)
from tests.serverproc import ServerProcess


def session(srv: ServerProcess, password: str | None = None, timeout: float = 30) -> NdmpClient:
    c = NdmpClient("127.0.0.1", srv.port, timeout=timeout)
    post = c.wait_post(Message.NOTIFY_CONNECTION_STATUS)
    assert post.body.reason == ConnectionStatusReason.CONNECTED
    c.open(check=True)
    c.auth_md5("admin", password or srv.ndmp_password(), check=True)
    return c


def env(**pairs: str) -> list[m.Pval]:
    return [m.Pval(name=k, value=v) for k, v in pairs.items()]


def prepare_tape(
    c: NdmpClient,
    drive: str,
    mode: TapeOpenMode,
    record_size: int = 10240,
    window: int = ALL_ONES_64,
) -> None:
    c.call(Message.MOVER_SET_RECORD_SIZE, m.MoverSetRecordSizeRequest(record_size), check=True)
    c.call(Message.TAPE_OPEN, m.TapeOpenRequest(device=drive, mode=mode), check=True)
    c.call(Message.TAPE_MTIO, m.TapeMtioRequest(MtioOp.REW, 1), check=True)
    c.call(Message.MOVER_SET_WINDOW, m.MoverSetWindowRequest(0, window), check=True)


def start_local_backup(c: NdmpClient, drive: str, butype: str, fs: str, **more: str) -> None:
    """LOCAL backup on one connection, as ndmjob -c -D does."""
    prepare_tape(c, drive, TapeOpenMode.RDWR)
    c.call(Message.MOVER_LISTEN, m.MoverListenRequest(MoverMode.READ, AddrType.LOCAL), check=True)
    c.call(Message.DATA_CONNECT, m.DataConnectRequest(m.Addr(AddrType.LOCAL)), check=True)
    c.call(
        Message.DATA_START_BACKUP,
        m.DataStartBackupRequest(butype_name=butype, env=env(FILESYSTEM=fs, **more)),
        check=True,
    )


def start_local_recover(
    c: NdmpClient, drive: str, butype: str, prefix: str, nlist: list[m.Name] | None = None
) -> None:
    prepare_tape(c, drive, TapeOpenMode.READ)
    c.call(Message.MOVER_LISTEN, m.MoverListenRequest(MoverMode.WRITE, AddrType.LOCAL), check=True)
    c.call(Message.DATA_CONNECT, m.DataConnectRequest(m.Addr(AddrType.LOCAL)), check=True)
    c.call(
        Message.DATA_START_RECOVER,
        m.DataStartRecoverRequest(env=env(PREFIX=prefix), nlist=nlist or [], butype_name=butype),
        check=True,
    )


def wait_post(c: NdmpClient, code: Message, timeout: float = 60) -> Post:
    return c.wait_post(code, timeout=timeout)


def wait_state(c: NdmpClient, code: Message, want: int, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while True:
        body = c.call(code, check=True).body
        if body.state == want:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{code.name}: state {body.state} never became {want}")
        time.sleep(0.02)


def finish(c: NdmpClient, *, filemarks: int = 2) -> None:
    """The DMA's end of a job: filemarks (backup), rewind, close, stop both services."""
    if filemarks:
        c.call(Message.TAPE_MTIO, m.TapeMtioRequest(MtioOp.EOF, filemarks), check=True)
    c.call(Message.TAPE_MTIO, m.TapeMtioRequest(MtioOp.REW, 1), check=True)
    c.call(Message.TAPE_CLOSE, check=True)
    c.call(Message.DATA_STOP, check=True)
    c.call(Message.MOVER_STOP, check=True)
