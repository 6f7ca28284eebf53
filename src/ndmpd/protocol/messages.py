"""Every NDMP v4 message body (spec §4) and shared structure (spec §5), declared once.

Each class is a slotted dataclass whose fields carry their XDR type (see ``xdr``); every field
has a default, so ``XxxReply()`` is a valid all-zero reply. ``REQUESTS``, ``REPLIES`` and
``POSTS`` map message codes to body classes; ``encode_body``/``decode_body`` run the codec.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from ndmpd.protocol import xdr
from ndmpd.protocol.constants import (
    ALL_ONES_32,
    ALL_ONES_64,
    MD5_CHALLENGE_SIZE,
    MD5_DIGEST_SIZE,
    AddrType,
    AuthType,
    ConnectionStatusReason,
    DataHaltReason,
    DataOperation,
    DataState,
    DataStateUnsupported,
    Error,
    FileType,
    FsType,
    HasAssociatedMessage,
    LogType,
    Message,
    MoverHaltReason,
    MoverMode,
    MoverPauseReason,
    MoverState,
    MtioOp,
    RecoveryStatus,
    TapeOpenMode,
    TapeStateUnsupported,
)
from ndmpd.protocol.xdr import (
    array,
    enum,
    fixed_opaque,
    i16,
    opaque,
    string,
    struct_field,
    u8,
    u16,
    u32,
    uquad,
    xdr_struct,
    xdr_union,
)

T = TypeVar("T")

# ----------------------------------------------------------------------------- limits
# The protocol declares every string, opaque and array unbounded (<>); these are ours. A value
# over its limit decodes to XdrArgsError (ILLEGAL_ARGS_ERR), and we never encode one.

KIB = 1024
MIB = 1024 * KIB

MAX_DEVICE_NAME = 1 * KIB  # TAPE_OPEN / SCSI_OPEN device, device_capability.device
MAX_AUTH_ID = 256  # auth_id
MAX_AUTH_PASSWORD = 256  # TEXT auth_password
MAX_NAME = 4 * KIB  # short texts: host/OS/vendor names, butype, model, fs_type, pval name
MAX_PATH = 64 * KIB  # paths, file names, env values, log entries, fs devices
MAX_ENV = 1024  # entries in any ndmp4_pval list
MAX_NLIST = 100_000  # DATA_START_RECOVER nlist entries
MAX_TAPE_DATA = 16 * MIB  # TAPE_WRITE data_out, TAPE_READ data_in (decode side)
# What we put in one outgoing message: it must fit one fragment (< 2**24 bytes, NDMJOB's reader),
# header and reply fields included, so a TAPE_READ count is capped at this.
MAX_SEND_DATA = 16 * MIB - 1 * KIB
MAX_CDB = 260  # SCSI CDB (16-byte CDBs, variable-length CDBs up to 260)
MAX_CDB_DATA = 16 * MIB  # execute_cdb dataout / datain
MAX_SENSE = 1 * KIB  # ext_sense
MAX_IPC_DATA = 64 * KIB  # ipc comm_data
MAX_TCP_ADDRS = 64  # tcp_addr list in an ndmp4_addr
MAX_LIST = 1024  # config lists: butypes, file systems, devices, capabilities, ext classes
MAX_SMALL_LIST = 64  # addr_types, auth_types, ext_version lists
MAX_FH_ENTRIES = 1_000_000  # entries in one FH_ADD_* post (a 32 MiB record bounds it anyway)
MAX_FH_NAMES = 16  # names<> / stats<> per file-history entry

# ------------------------------------------------------------------ shared structures


@xdr_struct
class Pval:
    name: str = string(MAX_NAME)
    value: str = string(MAX_PATH)


@xdr_struct
class TcpAddr:
    ip_addr: int = u32()  # IPv4 as a number: 127.0.0.1 == 0x7F000001
    port: int = u16()
    addr_env: list[Pval] = array(Pval, MAX_ENV)


@xdr_union(
    "addr_type",
    {
        AddrType.LOCAL: (),
        AddrType.TCP: ("tcp_addr",),
        AddrType.RESERVED: (),  # v3's FC; tolerated as empty
        AddrType.IPC: ("ipc_comm_data",),
    },
)
class Addr:
    addr_type: AddrType = enum(AddrType)
    tcp_addr: list[TcpAddr] = array(TcpAddr, MAX_TCP_ADDRS)
    ipc_comm_data: bytes = opaque(MAX_IPC_DATA)  # the ndmp4_ipc_addr struct's only member


@xdr_union(
    "auth_type",
    {
        AuthType.NONE: (),
        AuthType.TEXT: ("auth_id", "auth_password"),
        AuthType.MD5: ("auth_id", "auth_digest"),
    },
)
class AuthData:
    auth_type: AuthType = enum(AuthType)
    auth_id: str = string(MAX_AUTH_ID)
    auth_password: str = string(MAX_AUTH_PASSWORD)
    auth_digest: bytes = fixed_opaque(MD5_DIGEST_SIZE)


@xdr_union(
    "auth_type",
    {AuthType.NONE: (), AuthType.TEXT: (), AuthType.MD5: ("challenge",)},
)
class AuthAttr:
    auth_type: AuthType = enum(AuthType)
    challenge: bytes = fixed_opaque(MD5_CHALLENGE_SIZE)


@xdr_struct
class ButypeInfo:
    butype_name: str = string(MAX_NAME)
    default_env: list[Pval] = array(Pval, MAX_ENV)
    attrs: int = u32()


@xdr_struct
class FsInfo:
    unsupported: int = u32()
    fs_type: str = string(MAX_NAME)
    fs_logical_device: str = string(MAX_PATH)
    fs_physical_device: str = string(MAX_PATH)
    total_size: int = uquad()
    used_size: int = uquad()
    avail_size: int = uquad()
    total_inodes: int = uquad()
    used_inodes: int = uquad()
    fs_env: list[Pval] = array(Pval, MAX_ENV)
    fs_status: str = string(MAX_NAME)


@xdr_struct
class DeviceCapability:
    device: str = string(MAX_DEVICE_NAME)
    attr: int = u32()
    capability: list[Pval] = array(Pval, MAX_ENV)


@xdr_struct
class DeviceInfo:
    model: str = string(MAX_NAME)
    caplist: list[DeviceCapability] = array(DeviceCapability, MAX_LIST)


@xdr_struct
class ClassList:
    ext_class_id: int = u16()
    ext_version: list[int] = array(xdr.U16, MAX_SMALL_LIST)


@xdr_struct
class ClassVersion:
    ext_class_id: int = u16()
    ext_version: int = u16()


@xdr_struct
class Name:
    original_path: str = string(MAX_PATH)
    destination_path: str = string(MAX_PATH)
    name: str = string(MAX_PATH)
    other_name: str = string(MAX_PATH)
    node: int = uquad()
    fh_info: int = uquad()


@xdr_union(
    "fs_type",
    {FsType.UNIX: ("unix_name",), FsType.NT: ("nt_path", "dos_path")},
    default=("other_name",),
)
class FileName:
    fs_type: FsType = enum(FsType)
    unix_name: str = string(MAX_PATH)
    nt_path: str = string(MAX_PATH)
    dos_path: str = string(MAX_PATH)
    other_name: str = string(MAX_PATH)


@xdr_struct
class FileStat:
    unsupported: int = u32()
    fs_type: FsType = enum(FsType)
    ftype: FileType = enum(FileType)
    mtime: int = u32()
    atime: int = u32()
    ctime: int = u32()
    owner: int = u32()
    group: int = u32()
    fattr: int = u32()
    size: int = uquad()
    links: int = u32()


@xdr_struct
class File:
    names: list[FileName] = array(FileName, MAX_FH_NAMES)
    stats: list[FileStat] = array(FileStat, MAX_FH_NAMES)
    node: int = uquad()
    fh_info: int = uquad()


@xdr_struct
class Dir:
    names: list[FileName] = array(FileName, MAX_FH_NAMES)
    node: int = uquad()
    parent: int = uquad()


@xdr_struct
class Node:
    stats: list[FileStat] = array(FileStat, MAX_FH_NAMES)
    node: int = uquad()
    fh_info: int = uquad()


def _err() -> Any:
    """The ``error`` field: open enum, since extensions may define more codes."""
    return enum(Error, strict=False)


# ---------------------------------------------------------------------- generic bodies


@xdr_struct
class ExecuteCdbRequest:
    flags: int = u32()  # 1 DATA_IN, 2 DATA_OUT
    timeout: int = u32()  # ms, 0 = forever
    datain_len: int = u32()
    cdb: bytes = opaque(MAX_CDB)
    dataout: bytes = opaque(MAX_CDB_DATA)


@xdr_struct
class ExecuteCdbReply:
    error: Error = _err()
    status: int = u8()
    dataout_len: int = u32()
    datain: bytes = opaque(MAX_CDB_DATA)
    ext_sense: bytes = opaque(MAX_SENSE)


# ----------------------------------------------------------------------- connect 0x9xx


@xdr_struct
class ConnectOpenRequest:
    protocol_version: int = u16()


@xdr_struct
class ConnectOpenReply:
    error: Error = _err()


@xdr_struct
class ConnectClientAuthRequest:
    auth_data: AuthData = struct_field(AuthData)


@xdr_struct
class ConnectClientAuthReply:
    error: Error = _err()


@xdr_struct
class ConnectCloseRequest:
    pass


@xdr_struct
class ConnectCloseReply:
    """No reply is defined; NDMJOB sends a header-only one, which this empty body encodes."""


@xdr_struct
class ConnectServerAuthRequest:
    client_attr: AuthAttr = struct_field(AuthAttr)


@xdr_struct
class ConnectServerAuthReply:
    error: Error = _err()
    server_result: AuthData = struct_field(AuthData)


# ------------------------------------------------------------------------ config 0x1xx


@xdr_struct
class ConfigGetHostInfoRequest:
    pass


@xdr_struct
class ConfigGetHostInfoReply:
    error: Error = _err()
    hostname: str = string(MAX_NAME)
    os_type: str = string(MAX_NAME)
    os_vers: str = string(MAX_NAME)
    hostid: str = string(MAX_NAME)


@xdr_struct
class ConfigGetConnectionTypeRequest:
    pass


@xdr_struct
class ConfigGetConnectionTypeReply:
    error: Error = _err()
    addr_types: list[AddrType] = array(xdr.EnumType(AddrType), MAX_SMALL_LIST)


@xdr_struct
class ConfigGetAuthAttrRequest:
    auth_type: AuthType = enum(AuthType)


@xdr_struct
class ConfigGetAuthAttrReply:
    error: Error = _err()
    server_attr: AuthAttr = struct_field(AuthAttr)


@xdr_struct
class ConfigGetButypeInfoRequest:
    pass


@xdr_struct
class ConfigGetButypeInfoReply:
    error: Error = _err()
    butype_info: list[ButypeInfo] = array(ButypeInfo, MAX_LIST)


@xdr_struct
class ConfigGetFsInfoRequest:
    pass


@xdr_struct
class ConfigGetFsInfoReply:
    error: Error = _err()
    fs_info: list[FsInfo] = array(FsInfo, MAX_LIST)


@xdr_struct
class ConfigGetTapeInfoRequest:
    pass


@xdr_struct
class ConfigGetTapeInfoReply:
    error: Error = _err()
    tape_info: list[DeviceInfo] = array(DeviceInfo, MAX_LIST)


@xdr_struct
class ConfigGetScsiInfoRequest:
    pass


@xdr_struct
class ConfigGetScsiInfoReply:
    error: Error = _err()
    scsi_info: list[DeviceInfo] = array(DeviceInfo, MAX_LIST)


@xdr_struct
class ConfigGetServerInfoRequest:
    pass


@xdr_struct
class ConfigGetServerInfoReply:
    error: Error = _err()
    vendor_name: str = string(MAX_NAME)
    product_name: str = string(MAX_NAME)
    revision_number: str = string(MAX_NAME)
    auth_type: list[AuthType] = array(xdr.EnumType(AuthType), MAX_SMALL_LIST)


@xdr_struct
class ConfigSetExtListRequest:
    """The draft's layout (NDMJOB's .x differs; see spec §4)."""

    ndmp_selected_ext: list[ClassVersion] = array(ClassVersion, MAX_LIST)


@xdr_struct
class ConfigSetExtListReply:
    error: Error = _err()


@xdr_struct
class ConfigGetExtListRequest:
    pass


@xdr_struct
class ConfigGetExtListReply:
    error: Error = _err()
    class_list: list[ClassList] = array(ClassList, MAX_LIST)


# -------------------------------------------------------------------------- scsi 0x2xx


@xdr_struct
class ScsiOpenRequest:
    device: str = string(MAX_DEVICE_NAME)


@xdr_struct
class ScsiOpenReply:
    error: Error = _err()


@xdr_struct
class ScsiCloseRequest:
    pass


@xdr_struct
class ScsiCloseReply:
    error: Error = _err()


@xdr_struct
class ScsiGetStateRequest:
    pass


@xdr_struct
class ScsiGetStateReply:
    error: Error = _err()
    target_controller: int = i16()
    target_id: int = i16()
    target_lun: int = i16()


@xdr_struct
class ScsiResetDeviceRequest:
    pass


@xdr_struct
class ScsiResetDeviceReply:
    error: Error = _err()


ScsiExecuteCdbRequest = ExecuteCdbRequest
ScsiExecuteCdbReply = ExecuteCdbReply

# -------------------------------------------------------------------------- tape 0x3xx


@xdr_struct
class TapeOpenRequest:
    device: str = string(MAX_DEVICE_NAME)
    mode: TapeOpenMode = enum(TapeOpenMode)


@xdr_struct
class TapeOpenReply:
    error: Error = _err()


@xdr_struct
class TapeCloseRequest:
    pass


@xdr_struct
class TapeCloseReply:
    error: Error = _err()


@xdr_struct
class TapeGetStateRequest:
    pass


@xdr_struct
class TapeGetStateReply:
    unsupported: int = u32()  # before error, unlike other replies
    error: Error = _err()
    flags: int = u32()
    file_num: int = u32()
    soft_errors: int = u32()
    block_size: int = u32()
    blockno: int = u32()
    total_space: int = uquad()
    space_remain: int = uquad()


@xdr_struct
class TapeMtioRequest:
    tape_op: MtioOp = enum(MtioOp)
    count: int = u32()


@xdr_struct
class TapeMtioReply:
    error: Error = _err()
    resid_count: int = u32()


@xdr_struct
class TapeWriteRequest:
    data_out: bytes | memoryview = opaque(MAX_TAPE_DATA, view=True)


@xdr_struct
class TapeWriteReply:
    error: Error = _err()
    count: int = u32()


@xdr_struct
class TapeReadRequest:
    count: int = u32()


@xdr_struct
class TapeReadReply:
    error: Error = _err()
    data_in: bytes | memoryview = opaque(MAX_TAPE_DATA, view=True)


TapeExecuteCdbRequest = ExecuteCdbRequest
TapeExecuteCdbReply = ExecuteCdbReply

# -------------------------------------------------------------------------- data 0x4xx


@xdr_struct
class DataGetStateRequest:
    pass


@xdr_struct
class DataGetStateReply:
    unsupported: int = u32()  # before error, unlike other replies
    error: Error = _err()
    operation: DataOperation = enum(DataOperation)
    state: DataState = enum(DataState)
    halt_reason: DataHaltReason = enum(DataHaltReason)
    bytes_processed: int = uquad()
    est_bytes_remain: int = uquad()
    est_time_remain: int = u32()
    data_connection_addr: Addr = struct_field(Addr)
    read_offset: int = uquad()
    read_length: int = uquad()


@xdr_struct
class DataStartBackupRequest:
    butype_name: str = string(MAX_NAME)
    env: list[Pval] = array(Pval, MAX_ENV)


@xdr_struct
class DataStartBackupReply:
    error: Error = _err()


@xdr_struct
class DataStartRecoverRequest:
    env: list[Pval] = array(Pval, MAX_ENV)  # env first, butype last (spec §4)
    nlist: list[Name] = array(Name, MAX_NLIST)
    butype_name: str = string(MAX_NAME)


@xdr_struct
class DataStartRecoverReply:
    error: Error = _err()


@xdr_struct
class DataAbortRequest:
    pass


@xdr_struct
class DataAbortReply:
    error: Error = _err()


@xdr_struct
class DataGetEnvRequest:
    pass


@xdr_struct
class DataGetEnvReply:
    error: Error = _err()
    env: list[Pval] = array(Pval, MAX_ENV)


@xdr_struct
class DataStopRequest:
    pass


@xdr_struct
class DataStopReply:
    error: Error = _err()


@xdr_struct
class DataListenRequest:
    addr_type: AddrType = enum(AddrType)


@xdr_struct
class DataListenReply:
    error: Error = _err()
    connect_addr: Addr = struct_field(Addr)


@xdr_struct
class DataConnectRequest:
    addr: Addr = struct_field(Addr)


@xdr_struct
class DataConnectReply:
    error: Error = _err()


@xdr_struct
class DataStartRecoverFilehistRequest:
    env: list[Pval] = array(Pval, MAX_ENV)
    nlist: list[Name] = array(Name, MAX_NLIST)
    butype_name: str = string(MAX_NAME)


@xdr_struct
class DataStartRecoverFilehistReply:
    error: Error = _err()


# ------------------------------------------------------------------ notify posts 0x5xx


@xdr_struct
class NotifyDataHaltedPost:
    reason: DataHaltReason = enum(DataHaltReason)


@xdr_struct
class NotifyConnectionStatusPost:
    reason: ConnectionStatusReason = enum(ConnectionStatusReason)
    protocol_version: int = u16()
    text_reason: str = string(MAX_PATH)


@xdr_struct
class NotifyMoverHaltedPost:
    reason: MoverHaltReason = enum(MoverHaltReason)


@xdr_struct
class NotifyMoverPausedPost:
    reason: MoverPauseReason = enum(MoverPauseReason)
    seek_position: int = uquad()


@xdr_struct
class NotifyDataReadPost:
    offset: int = uquad()
    length: int = uquad()


# --------------------------------------------------------------------- log posts 0x6xx


@xdr_struct
class LogFilePost:
    name: str = string(MAX_PATH)
    recovery_status: RecoveryStatus = enum(RecoveryStatus)


@xdr_struct
class LogMessagePost:
    log_type: LogType = enum(LogType)
    message_id: int = u32()
    entry: str = string(MAX_PATH)
    associated_message_valid: HasAssociatedMessage = enum(HasAssociatedMessage)
    associated_message_sequence: int = u32()


# ------------------------------------------------------------ file history posts 0x7xx


@xdr_struct
class FhAddFilePost:
    files: list[File] = array(File, MAX_FH_ENTRIES)


@xdr_struct
class FhAddDirPost:
    dirs: list[Dir] = array(Dir, MAX_FH_ENTRIES)


@xdr_struct
class FhAddNodePost:
    nodes: list[Node] = array(Node, MAX_FH_ENTRIES)


# ------------------------------------------------------------------------- mover 0xAxx


@xdr_struct
class MoverGetStateRequest:
    pass


@xdr_struct
class MoverGetStateReply:
    error: Error = _err()
    mode: MoverMode = enum(MoverMode)
    state: MoverState = enum(MoverState)
    pause_reason: MoverPauseReason = enum(MoverPauseReason)
    halt_reason: MoverHaltReason = enum(MoverHaltReason)
    record_size: int = u32()
    record_num: int = u32()
    bytes_moved: int = uquad()
    seek_position: int = uquad()
    bytes_left_to_read: int = uquad()
    window_offset: int = uquad()
    window_length: int = uquad()
    data_connection_addr: Addr = struct_field(Addr)


@xdr_struct
class MoverListenRequest:
    mode: MoverMode = enum(MoverMode)
    addr_type: AddrType = enum(AddrType)


@xdr_struct
class MoverListenReply:
    error: Error = _err()
    connect_addr: Addr = struct_field(Addr)


@xdr_struct
class MoverContinueRequest:
    pass


@xdr_struct
class MoverContinueReply:
    error: Error = _err()


@xdr_struct
class MoverAbortRequest:
    pass


@xdr_struct
class MoverAbortReply:
    error: Error = _err()


@xdr_struct
class MoverStopRequest:
    pass


@xdr_struct
class MoverStopReply:
    error: Error = _err()


@xdr_struct
class MoverSetWindowRequest:
    offset: int = uquad()
    length: int = uquad()


@xdr_struct
class MoverSetWindowReply:
    error: Error = _err()


@xdr_struct
class MoverReadRequest:
    offset: int = uquad()
    length: int = uquad()


@xdr_struct
class MoverReadReply:
    error: Error = _err()


@xdr_struct
class MoverCloseRequest:
    pass


@xdr_struct
class MoverCloseReply:
    error: Error = _err()


@xdr_struct
class MoverSetRecordSizeRequest:
    len: int = u32()


@xdr_struct
class MoverSetRecordSizeReply:
    error: Error = _err()


@xdr_struct
class MoverConnectRequest:
    mode: MoverMode = enum(MoverMode)
    addr: Addr = struct_field(Addr)


@xdr_struct
class MoverConnectReply:
    error: Error = _err()


# ----------------------------------------------------------------------------- tables


def _camel(code: Message) -> str:
    return "".join(w.capitalize() for w in code.name.split("_"))


_POST_CLASSES = (0x500, 0x600, 0x700)


def _tables() -> tuple[dict[Message, type], dict[Message, type], dict[Message, type]]:
    g = globals()
    requests: dict[Message, type] = {}
    replies: dict[Message, type] = {}
    posts: dict[Message, type] = {}
    for code in Message:
        base = _camel(code)
        if code & 0xF00 in _POST_CLASSES:
            posts[code] = g[base + "Post"]
        else:
            requests[code] = g[base + "Request"]
            replies[code] = g[base + "Reply"]
    return requests, replies, posts


REQUESTS, REPLIES, POSTS = _tables()
"""Body class of each request, each reply, each post (by message code)."""


def encode_body(obj: object) -> bytes:
    """The XDR bytes of a body instance (XdrArgsError if a value breaks its type or limit)."""
    return b"".join(xdr.encode(obj))


def encode_body_parts(obj: object) -> list[bytes | memoryview]:
    """Like ``encode_body`` but as pieces, so bulk data is copied only once by the sender."""
    return xdr.encode(obj)


def decode_body(cls: type[T], data: bytes | bytearray | memoryview) -> T:
    """Decode one body of ``cls`` from exactly ``data`` (trailing bytes are an XdrError)."""
    return xdr.decode(cls, data)


def error_reply(code: Message, error: Error) -> object:
    """The reply body for request ``code`` carrying ``error`` and nothing else.

    GET_STATE replies mark everything unsupported/unknown (all-ones), as a DMA expects of a
    failed query. CONNECT_CLOSE's reply has no ``error`` field; its empty body is returned.
    """
    cls = REPLIES[Message(code)]
    if cls is TapeGetStateReply:
        return TapeGetStateReply(
            unsupported=int(
                TapeStateUnsupported.FILE_NUM
                | TapeStateUnsupported.SOFT_ERRORS
                | TapeStateUnsupported.BLOCK_SIZE
                | TapeStateUnsupported.BLOCKNO
                | TapeStateUnsupported.TOTAL_SPACE
                | TapeStateUnsupported.SPACE_REMAIN
            ),
            error=error,
            flags=0,
            file_num=ALL_ONES_32,
            soft_errors=ALL_ONES_32,
            block_size=ALL_ONES_32,
            blockno=ALL_ONES_32,
            total_space=ALL_ONES_64,
            space_remain=ALL_ONES_64,
        )
    if cls is DataGetStateReply:
        return DataGetStateReply(
            unsupported=int(
                DataStateUnsupported.EST_BYTES_REMAIN | DataStateUnsupported.EST_TIME_REMAIN
            ),
            error=error,
            est_bytes_remain=ALL_ONES_64,
            est_time_remain=ALL_ONES_32,
        )
    body = cls()
    if any(f.name == "error" for f in dataclasses.fields(cls)):
        body.error = error
    return body
