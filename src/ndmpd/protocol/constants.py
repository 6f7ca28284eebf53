"""NDMP version 4 numbers: message codes, enumerations and bit masks (spec §4, §6).

Every name here is the protocol's, without the ``NDMP4_`` prefix, so that code reads
against the spec.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

NDMP_VERSION = 4
DEFAULT_PORT = 10000
ALL_ONES_32 = 0xFFFFFFFF
ALL_ONES_64 = 0xFFFFFFFFFFFFFFFF
MD5_CHALLENGE_SIZE = 64
MD5_DIGEST_SIZE = 16


class MessageType(IntEnum):
    REQUEST = 0  # also every post (notification, log, file history)
    REPLY = 1


class Message(IntEnum):
    CONNECT_OPEN = 0x900
    CONNECT_CLIENT_AUTH = 0x901
    CONNECT_CLOSE = 0x902
    CONNECT_SERVER_AUTH = 0x903

    CONFIG_GET_HOST_INFO = 0x100
    CONFIG_GET_CONNECTION_TYPE = 0x102
    CONFIG_GET_AUTH_ATTR = 0x103
    CONFIG_GET_BUTYPE_INFO = 0x104
    CONFIG_GET_FS_INFO = 0x105
    CONFIG_GET_TAPE_INFO = 0x106
    CONFIG_GET_SCSI_INFO = 0x107
    CONFIG_GET_SERVER_INFO = 0x108
    CONFIG_SET_EXT_LIST = 0x109
    CONFIG_GET_EXT_LIST = 0x10A

    SCSI_OPEN = 0x200
    SCSI_CLOSE = 0x201
    SCSI_GET_STATE = 0x202
    SCSI_RESET_DEVICE = 0x204
    SCSI_EXECUTE_CDB = 0x206

    TAPE_OPEN = 0x300
    TAPE_CLOSE = 0x301
    TAPE_GET_STATE = 0x302
    TAPE_MTIO = 0x303
    TAPE_WRITE = 0x304
    TAPE_READ = 0x305
    TAPE_EXECUTE_CDB = 0x307

    DATA_GET_STATE = 0x400
    DATA_START_BACKUP = 0x401
    DATA_START_RECOVER = 0x402
    DATA_ABORT = 0x403
    DATA_GET_ENV = 0x404
    DATA_STOP = 0x407
    DATA_LISTEN = 0x409
    DATA_CONNECT = 0x40A
    DATA_START_RECOVER_FILEHIST = 0x40B

    NOTIFY_DATA_HALTED = 0x501
    NOTIFY_CONNECTION_STATUS = 0x502
    NOTIFY_MOVER_HALTED = 0x503
    NOTIFY_MOVER_PAUSED = 0x504
    NOTIFY_DATA_READ = 0x505

    LOG_FILE = 0x602
    LOG_MESSAGE = 0x603

    FH_ADD_FILE = 0x703
    FH_ADD_DIR = 0x704
    FH_ADD_NODE = 0x705

    MOVER_GET_STATE = 0xA00
    MOVER_LISTEN = 0xA01
    MOVER_CONTINUE = 0xA02
    MOVER_ABORT = 0xA03
    MOVER_STOP = 0xA04
    MOVER_SET_WINDOW = 0xA05
    MOVER_READ = 0xA06
    MOVER_CLOSE = 0xA07
    MOVER_SET_RECORD_SIZE = 0xA08
    MOVER_CONNECT = 0xA09


class Error(IntEnum):
    NO_ERR = 0
    NOT_SUPPORTED_ERR = 1
    DEVICE_BUSY_ERR = 2
    DEVICE_OPENED_ERR = 3
    NOT_AUTHORIZED_ERR = 4
    PERMISSION_ERR = 5
    DEV_NOT_OPEN_ERR = 6
    IO_ERR = 7
    TIMEOUT_ERR = 8
    ILLEGAL_ARGS_ERR = 9
    NO_TAPE_LOADED_ERR = 10
    WRITE_PROTECT_ERR = 11
    EOF_ERR = 12
    EOM_ERR = 13
    FILE_NOT_FOUND_ERR = 14
    BAD_FILE_ERR = 15
    NO_DEVICE_ERR = 16
    NO_BUS_ERR = 17
    XDR_DECODE_ERR = 18
    ILLEGAL_STATE_ERR = 19
    UNDEFINED_ERR = 20
    XDR_ENCODE_ERR = 21
    NO_MEM_ERR = 22
    CONNECT_ERR = 23
    SEQUENCE_NUM_ERR = 24
    READ_IN_PROGRESS_ERR = 25
    PRECONDITION_ERR = 26
    CLASS_NOT_SUPPORTED_ERR = 27
    VERSION_NOT_SUPPORTED_ERR = 28
    EXT_DUPL_CLASSES_ERR = 29
    EXT_DANDN_ILLEGAL_ERR = 30


class ConnectionStatusReason(IntEnum):
    CONNECTED = 0
    SHUTDOWN = 1
    REFUSED = 2


class AuthType(IntEnum):
    NONE = 0
    TEXT = 1
    MD5 = 2


class AddrType(IntEnum):
    LOCAL = 0
    TCP = 1
    RESERVED = 2
    IPC = 3


class TapeOpenMode(IntEnum):
    READ = 0
    RDWR = 1
    RAW = 2


class MtioOp(IntEnum):
    FSF = 0
    BSF = 1
    FSR = 2
    BSR = 3
    REW = 4
    EOF = 5
    OFF = 6
    TUR = 7


class DataOperation(IntEnum):
    NOACTION = 0
    BACKUP = 1
    RECOVER = 2
    RECOVER_FILEHIST = 3


class DataState(IntEnum):
    IDLE = 0
    ACTIVE = 1
    HALTED = 2
    LISTEN = 3
    CONNECTED = 4


class DataHaltReason(IntEnum):
    NA = 0
    SUCCESSFUL = 1
    ABORTED = 2
    INTERNAL_ERROR = 3
    CONNECT_ERROR = 4


class MoverMode(IntEnum):
    READ = 0  # read the data connection, write tape (backup)
    WRITE = 1  # read tape, write the data connection (recover)
    NOACTION = 2


class MoverState(IntEnum):
    IDLE = 0
    LISTEN = 1
    ACTIVE = 2
    PAUSED = 3
    HALTED = 4


class MoverPauseReason(IntEnum):
    NA = 0
    EOM = 1
    EOF = 2
    SEEK = 3
    MEDIA_ERROR = 4
    EOW = 5


class MoverHaltReason(IntEnum):
    NA = 0
    CONNECT_CLOSED = 1
    ABORTED = 2
    INTERNAL_ERROR = 3
    CONNECT_ERROR = 4
    MEDIA_ERROR = 5


class HasAssociatedMessage(IntEnum):
    NO = 0
    YES = 1


class LogType(IntEnum):
    NORMAL = 0
    DEBUG = 1
    ERROR = 2
    WARNING = 3


class RecoveryStatus(IntEnum):
    SUCCESSFUL = 0
    FAILED_PERMISSION = 1
    FAILED_NOT_FOUND = 2
    FAILED_NO_DIRECTORY = 3
    FAILED_OUT_OF_MEMORY = 4
    FAILED_IO_ERROR = 5
    FAILED_UNDEFINED_ERROR = 6
    FAILED_FILE_PATH_EXISTS = 7


class FsType(IntEnum):
    UNIX = 0
    NT = 1
    OTHER = 2


class FileType(IntEnum):
    DIR = 0
    FIFO = 1
    CSPEC = 2
    BSPEC = 3
    REG = 4
    SLINK = 5
    SOCK = 6
    REGISTRY = 7
    OTHER = 8


class ButypeAttr(IntFlag):
    BACKUP_FILELIST = 0x0002
    RECOVER_FILELIST = 0x0004
    BACKUP_DIRECT = 0x0008
    RECOVER_DIRECT = 0x0010
    BACKUP_INCREMENTAL = 0x0020
    RECOVER_INCREMENTAL = 0x0040
    BACKUP_UTF8 = 0x0080
    RECOVER_UTF8 = 0x0100
    BACKUP_FH_FILE = 0x0200
    BACKUP_FH_DIR = 0x0400
    RECOVER_FILEHIST = 0x0800
    RECOVER_FH_FILE = 0x1000
    RECOVER_FH_DIR = 0x2000


class FsInfoUnsupported(IntFlag):
    TOTAL_SIZE = 0x01
    USED_SIZE = 0x02
    AVAIL_SIZE = 0x04
    TOTAL_INODES = 0x08
    USED_INODES = 0x10


class TapeDeviceAttr(IntFlag):
    REWIND = 0x1
    UNLOAD = 0x2
    RAW = 0x4


class TapeStateFlag(IntFlag):
    NOREWIND = 0x08
    WR_PROT = 0x10
    ERROR = 0x20
    UNLOAD = 0x40


class TapeStateUnsupported(IntFlag):
    FILE_NUM = 0x01
    SOFT_ERRORS = 0x02
    BLOCK_SIZE = 0x04
    BLOCKNO = 0x08
    TOTAL_SPACE = 0x10
    SPACE_REMAIN = 0x20


class DataStateUnsupported(IntFlag):
    EST_BYTES_REMAIN = 0x1
    EST_TIME_REMAIN = 0x2


class FileStatUnsupported(IntFlag):
    ATIME = 0x1
    CTIME = 0x2
    GROUP = 0x4


# Messages a session serves before CONNECT_CLIENT_AUTH succeeds (spec §3).
PRE_AUTH_MESSAGES = frozenset(
    {
        Message.CONNECT_OPEN,
        Message.CONNECT_CLIENT_AUTH,
        Message.CONNECT_CLOSE,
        Message.CONFIG_GET_SERVER_INFO,
        Message.CONFIG_GET_AUTH_ATTR,
    }
)
