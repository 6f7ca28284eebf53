"""Request handlers: one function per NDMP request, returning the reply body.

A handler takes the session and the decoded request body, and returns the reply body (or a
coroutine of it), or raises ``NdmpError`` / ``TapeError`` for an error reply. Which requests
are allowed before authentication is decided by the session, not here.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Callable
from typing import Any

from ndmpd import __version__
from ndmpd.agents.errors import NdmpError
from ndmpd.protocol import messages as m
from ndmpd.protocol.auth import md5_digest, new_challenge
from ndmpd.protocol.constants import (
    NDMP_VERSION,
    AddrType,
    AuthType,
    Error,
    Message,
    TapeDeviceAttr,
)
from ndmpd.server import authn, fsinfo
from ndmpd.server.session import Session

MAX_TAPE_READ = m.MAX_SEND_DATA  # one record per TAPE_READ; the reply must fit one fragment

Handler = Callable[[Session, Any], Any]
HANDLERS: dict[Message, Handler] = {}


def handles(code: Message) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[code] = fn
        return fn

    return register


# ---- connect ---------------------------------------------------------------------------


@handles(Message.CONNECT_OPEN)
def connect_open(s: Session, body: m.ConnectOpenRequest) -> object:
    version = body.protocol_version
    if version != NDMP_VERSION:
        raise NdmpError(Error.ILLEGAL_ARGS_ERR, f"protocol version {version} not supported")
    s.protocol_version = version
    return m.ConnectOpenReply(error=Error.NO_ERR)


@handles(Message.CONNECT_CLIENT_AUTH)
def connect_client_auth(s: Session, body: m.ConnectClientAuthRequest) -> object:
    data = body.auth_data
    try:
        auth_type = AuthType(data.auth_type)
    except ValueError:
        auth_type = None
    if auth_type not in (AuthType.TEXT, AuthType.MD5):
        s.log.warning(
            "authentication refused from %s: auth type %s not supported",
            s.client_address,
            data.auth_type,
        )
        raise NdmpError(Error.ILLEGAL_ARGS_ERR)
    if s.authorized:
        raise NdmpError(Error.ILLEGAL_STATE_ERR, "already authenticated")
    server = s.server
    if auth_type == AuthType.TEXT:
        result = authn.authenticate(
            server.catalog,
            server.svm_names,
            auth_type,
            data.auth_id,
            password=data.auth_password.encode("utf-8", "surrogateescape"),
        )
    else:
        result = authn.authenticate(
            server.catalog,
            server.svm_names,
            auth_type,
            data.auth_id,
            challenge=s.challenge,
            digest=bytes(data.auth_digest),
        )
    s.challenge = None  # one digest per challenge: no replay on this connection
    if not result.ok:
        s.log.warning(
            "authentication failed from %s (user %r, %s): %s",
            s.client_address,
            data.auth_id,
            auth_type.name,
            result.reason,
        )
        raise NdmpError(Error.NOT_AUTHORIZED_ERR)
    s.authorized = True
    s.user = data.auth_id
    if result.svm:
        s.svm = result.svm
    s.log.info("authenticated as %r (%s) on SVM %s", data.auth_id, auth_type.name, s.svm)
    return m.ConnectClientAuthReply(error=Error.NO_ERR)


@handles(Message.CONNECT_CLOSE)
def connect_close(s: Session, body: object) -> object:
    s.log.info("DMA sent CONNECT_CLOSE")
    # The draft defines no reply; ndmjob answers header-only. A header-only NO_ERR reply is
    # harmless to a DMA that expects nothing and unblocks one that waits.
    return None


@handles(Message.CONNECT_SERVER_AUTH)
def connect_server_auth(s: Session, body: m.ConnectServerAuthRequest) -> object:
    attr = body.client_attr
    if attr.auth_type != AuthType.MD5:
        raise NdmpError(Error.ILLEGAL_ARGS_ERR, "server authentication is offered with MD5 only")
    secret = s.server.catalog.ndmp_secret_for(s.user or "", s.svm)
    if not secret:
        raise NdmpError(Error.NOT_SUPPORTED_ERR, "no NDMP password to prove")
    digest = md5_digest(secret.encode(), bytes(attr.challenge))
    return m.ConnectServerAuthReply(
        error=Error.NO_ERR,
        server_result=m.AuthData(auth_type=AuthType.MD5, auth_id=s.user or "", auth_digest=digest),
    )


# ---- config ----------------------------------------------------------------------------


@handles(Message.CONFIG_GET_HOST_INFO)
def config_get_host_info(s: Session, body: object) -> object:
    return m.ConfigGetHostInfoReply(
        error=Error.NO_ERR,
        hostname=s.server.config.node.name,
        os_type=platform.system(),
        os_vers=platform.release(),
        hostid=s.server.catalog.host_id(),
    )


@handles(Message.CONFIG_GET_SERVER_INFO)
def config_get_server_info(s: Session, body: object) -> object:
    return m.ConfigGetServerInfoReply(
        error=Error.NO_ERR,
        vendor_name="ndmpd",
        product_name="ndmpd NDMP server",
        revision_number=__version__,
        auth_type=authn.offered_types(s.server.catalog, s.server.svm_names),
    )


@handles(Message.CONFIG_GET_CONNECTION_TYPE)
def config_get_connection_type(s: Session, body: object) -> object:
    return m.ConfigGetConnectionTypeReply(
        error=Error.NO_ERR, addr_types=[AddrType.LOCAL, AddrType.TCP]
    )


@handles(Message.CONFIG_GET_AUTH_ATTR)
def config_get_auth_attr(s: Session, body: m.ConfigGetAuthAttrRequest) -> object:
    auth_type = body.auth_type
    if auth_type == AuthType.MD5:
        s.challenge = new_challenge()
        attr = m.AuthAttr(auth_type=AuthType.MD5, challenge=s.challenge)
    elif auth_type == AuthType.TEXT:
        attr = m.AuthAttr(auth_type=AuthType.TEXT)
    else:
        raise NdmpError(Error.ILLEGAL_ARGS_ERR, f"auth type {auth_type} not supported")
    return m.ConfigGetAuthAttrReply(error=Error.NO_ERR, server_attr=attr)


@handles(Message.CONFIG_GET_BUTYPE_INFO)
def config_get_butype_info(s: Session, body: object) -> object:
    infos = [
        m.ButypeInfo(
            butype_name=engine.name,
            default_env=[m.Pval(name=k, value=v) for k, v in engine.default_env.items()],
            attrs=int(engine.attrs),
        )
        for engine in s.server.engines.values()
    ]
    return m.ConfigGetButypeInfoReply(error=Error.NO_ERR, butype_info=infos)


@handles(Message.CONFIG_GET_FS_INFO)
async def config_get_fs_info(s: Session, body: object) -> object:
    server = s.server
    volumes = [
        (svm.name, vol)
        for svm in server.config.svms
        if server.session_may_use_svm(s, svm.name)
        for vol in svm.volumes
    ]
    infos = await asyncio.to_thread(fsinfo.describe_volumes, volumes, list(server.engines))
    return m.ConfigGetFsInfoReply(error=Error.NO_ERR, fs_info=infos)


@handles(Message.CONFIG_GET_TAPE_INFO)
def config_get_tape_info(s: Session, body: object) -> object:
    infos = []
    for tape in s.server.config.tapes:
        caps = [
            m.Pval(name="EXECUTE_CDB", value="n"),
            m.Pval(name="COMPRESSION", value="1"),
            m.Pval(name="CAPACITY", value=str(tape.capacity)),
            m.Pval(name="BLOCK_SIZE", value=str(tape.block_size)),
        ]
        infos.append(
            m.DeviceInfo(
                model="ndmpd virtual tape",
                caplist=[
                    m.DeviceCapability(
                        device=tape.name, attr=int(TapeDeviceAttr.RAW), capability=caps
                    )
                ],
            )
        )
    return m.ConfigGetTapeInfoReply(error=Error.NO_ERR, tape_info=infos)


@handles(Message.CONFIG_GET_SCSI_INFO)
def config_get_scsi_info(s: Session, body: object) -> object:
    return m.ConfigGetScsiInfoReply(error=Error.NO_ERR, scsi_info=[])


@handles(Message.CONFIG_GET_EXT_LIST)
def config_get_ext_list(s: Session, body: object) -> object:
    if s.ext_list_state == "initial":
        s.ext_list_state = "got"
    return m.ConfigGetExtListReply(error=Error.NO_ERR, class_list=[])


@handles(Message.CONFIG_SET_EXT_LIST)
def config_set_ext_list(s: Session, body: m.ConfigSetExtListRequest) -> object:
    if s.ext_list_state == "initial":
        raise NdmpError(Error.PRECONDITION_ERR, "SET_EXT_LIST before GET_EXT_LIST")
    if s.ext_list_state == "set":
        raise NdmpError(Error.EXT_DANDN_ILLEGAL_ERR, "extensions already negotiated")
    selected = list(body.ndmp_selected_ext)
    ids = [c.ext_class_id for c in selected]
    if len(ids) != len(set(ids)):
        raise NdmpError(Error.EXT_DUPL_CLASSES_ERR)
    if selected:
        raise NdmpError(Error.CLASS_NOT_SUPPORTED_ERR, "no extension classes are offered")
    s.ext_list_state = "set"
    return m.ConfigSetExtListReply(error=Error.NO_ERR)


# ---- SCSI --------------------------------------------------------------------------------


@handles(Message.SCSI_OPEN)
def scsi_open(s: Session, body: m.ScsiOpenRequest) -> object:
    s.scsi.open(body.device)
    return m.ScsiOpenReply(error=Error.NO_ERR)


@handles(Message.SCSI_CLOSE)
def scsi_close(s: Session, body: object) -> object:
    s.scsi.require()
    s.scsi.release_all()
    return m.ScsiCloseReply(error=Error.NO_ERR)


@handles(Message.SCSI_GET_STATE)
def scsi_get_state(s: Session, body: object) -> object:
    s.scsi.require()
    return m.ScsiGetStateReply(error=Error.NO_ERR)


@handles(Message.SCSI_RESET_DEVICE)
def scsi_reset_device(s: Session, body: object) -> object:
    s.scsi.require()
    return m.ScsiResetDeviceReply(error=Error.NO_ERR)


@handles(Message.SCSI_EXECUTE_CDB)
def scsi_execute_cdb(s: Session, body: object) -> object:
    s.scsi.require()
    raise NdmpError(Error.NOT_SUPPORTED_ERR)


# ---- tape --------------------------------------------------------------------------------


@handles(Message.TAPE_OPEN)
async def tape_open(s: Session, body: m.TapeOpenRequest) -> object:
    await asyncio.to_thread(s.tape.open, body.device, body.mode)
    s.log.info("opened tape %s (%s)", body.device, body.mode.name)
    return m.TapeOpenReply(error=Error.NO_ERR)


@handles(Message.TAPE_CLOSE)
async def tape_close(s: Session, body: object) -> object:
    device = s.tape.device
    await asyncio.to_thread(s.tape.close)
    s.log.info("closed tape %s", device)
    return m.TapeCloseReply(error=Error.NO_ERR)


@handles(Message.TAPE_GET_STATE)
def tape_get_state(s: Session, body: object) -> object:
    st = s.tape.require(io=False).state()
    return m.TapeGetStateReply(
        unsupported=int(st.unsupported),
        error=Error.NO_ERR,
        flags=int(st.flags),
        file_num=st.file_num,
        soft_errors=st.soft_errors,
        block_size=st.block_size,
        blockno=st.blockno,
        total_space=st.total_space,
        space_remain=st.space_remain,
    )


@handles(Message.TAPE_MTIO)
async def tape_mtio(s: Session, body: m.TapeMtioRequest) -> object:
    s.tape.require()
    resid = await asyncio.to_thread(s.tape.mtio, body.tape_op, body.count)
    return m.TapeMtioReply(error=Error.NO_ERR, resid_count=resid)


@handles(Message.TAPE_WRITE)
async def tape_write(s: Session, body: m.TapeWriteRequest) -> object:
    s.tape.require()
    count = await asyncio.to_thread(s.tape.write, body.data_out)
    return m.TapeWriteReply(error=Error.NO_ERR, count=count)


@handles(Message.TAPE_READ)
async def tape_read(s: Session, body: m.TapeReadRequest) -> object:
    s.tape.require()
    if body.count > MAX_TAPE_READ:
        raise NdmpError(Error.ILLEGAL_ARGS_ERR, f"read of {body.count} bytes is over the limit")
    data = await asyncio.to_thread(s.tape.read, body.count)
    return m.TapeReadReply(error=Error.NO_ERR, data_in=data)


@handles(Message.TAPE_EXECUTE_CDB)
def tape_execute_cdb(s: Session, body: object) -> object:
    s.tape.require(io=False)
    raise NdmpError(Error.NOT_SUPPORTED_ERR, "virtual drives take no CDBs")


__all__ = ["HANDLERS", "handles"]
from ndmpd.server import handlers_dm as _handlers_dm  # noqa: E402,F401  (registers data/mover)
