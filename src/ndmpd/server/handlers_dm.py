"""Request handlers for the data service and the mover (spec §7, §8)."""

from __future__ import annotations

from ndmpd.protocol import messages as m
from ndmpd.protocol.constants import Error, Message
from ndmpd.server.handlers import handles
from ndmpd.server.session import Session

# ---- data ---------------------------------------------------------------------------------


@handles(Message.DATA_GET_STATE)
def data_get_state(s: Session, body: object) -> object:
    return s.data.get_state()


@handles(Message.DATA_LISTEN)
async def data_listen(s: Session, body: m.DataListenRequest) -> object:
    addr = await s.data.listen(body.addr_type)
    return m.DataListenReply(error=Error.NO_ERR, connect_addr=addr)


@handles(Message.DATA_CONNECT)
async def data_connect(s: Session, body: m.DataConnectRequest) -> object:
    await s.data.connect(body.addr)
    return m.DataConnectReply(error=Error.NO_ERR)


@handles(Message.DATA_START_BACKUP)
def data_start_backup(s: Session, body: m.DataStartBackupRequest) -> object:
    s.data.start_backup(body.butype_name, list(body.env))
    return m.DataStartBackupReply(error=Error.NO_ERR)


@handles(Message.DATA_START_RECOVER)
def data_start_recover(s: Session, body: m.DataStartRecoverRequest) -> object:
    s.data.start_recover(
        Message.DATA_START_RECOVER, body.butype_name, list(body.env), list(body.nlist)
    )
    return m.DataStartRecoverReply(error=Error.NO_ERR)


@handles(Message.DATA_START_RECOVER_FILEHIST)
def data_start_recover_filehist(s: Session, body: m.DataStartRecoverFilehistRequest) -> object:
    s.data.start_recover(
        Message.DATA_START_RECOVER_FILEHIST, body.butype_name, list(body.env), list(body.nlist)
    )
    return m.DataStartRecoverFilehistReply(error=Error.NO_ERR)


@handles(Message.DATA_ABORT)
def data_abort(s: Session, body: object) -> object:
    s.data.abort()
    return m.DataAbortReply(error=Error.NO_ERR)


@handles(Message.DATA_STOP)
async def data_stop(s: Session, body: object) -> object:
    await s.data.stop()
    return m.DataStopReply(error=Error.NO_ERR)


@handles(Message.DATA_GET_ENV)
def data_get_env(s: Session, body: object) -> object:
    return m.DataGetEnvReply(error=Error.NO_ERR, env=s.data.get_env())


# ---- mover --------------------------------------------------------------------------------


@handles(Message.MOVER_GET_STATE)
def mover_get_state(s: Session, body: object) -> object:
    return s.mover.get_state()


@handles(Message.MOVER_SET_RECORD_SIZE)
def mover_set_record_size(s: Session, body: m.MoverSetRecordSizeRequest) -> object:
    s.mover.set_record_size(body.len)
    return m.MoverSetRecordSizeReply(error=Error.NO_ERR)


@handles(Message.MOVER_SET_WINDOW)
def mover_set_window(s: Session, body: m.MoverSetWindowRequest) -> object:
    s.mover.set_window(body.offset, body.length)
    return m.MoverSetWindowReply(error=Error.NO_ERR)


@handles(Message.MOVER_LISTEN)
async def mover_listen(s: Session, body: m.MoverListenRequest) -> object:
    addr = await s.mover.listen(body.mode, body.addr_type)
    return m.MoverListenReply(error=Error.NO_ERR, connect_addr=addr)


@handles(Message.MOVER_CONNECT)
async def mover_connect(s: Session, body: m.MoverConnectRequest) -> object:
    await s.mover.connect(body.mode, body.addr)
    return m.MoverConnectReply(error=Error.NO_ERR)


@handles(Message.MOVER_READ)
def mover_read(s: Session, body: m.MoverReadRequest) -> object:
    s.mover.read(body.offset, body.length)
    return m.MoverReadReply(error=Error.NO_ERR)


@handles(Message.MOVER_CONTINUE)
def mover_continue(s: Session, body: object) -> object:
    s.mover.continue_()
    return m.MoverContinueReply(error=Error.NO_ERR)


@handles(Message.MOVER_CLOSE)
async def mover_close(s: Session, body: object) -> object:
    await s.mover.close()
    return m.MoverCloseReply(error=Error.NO_ERR)


@handles(Message.MOVER_ABORT)
def mover_abort(s: Session, body: object) -> object:
    s.mover.abort()
    return m.MoverAbortReply(error=Error.NO_ERR)


@handles(Message.MOVER_STOP)
async def mover_stop(s: Session, body: object) -> object:
    await s.mover.stop()
    return m.MoverStopReply(error=Error.NO_ERR)
