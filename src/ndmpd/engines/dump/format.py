"""Byte layouts of the BSD/Linux dump stream: headers, checksums, maps, directories, EA images.

Everything here is pure (bytes in, bytes out) so the writer and the reader share one source of
truth for the wire format, and the parsers can be fuzzed on their own. Spec: dump-format.md.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from ndmpd.engines import native
from ndmpd.engines.base import EngineError

TP_BSIZE = 1024
TP_NINDIR = 512
NFS_MAGIC = 60012
OFS_MAGIC = 60011
FS_UFS2_MAGIC = 0x19540119
CHECKSUM = 84446
ROOTINO = 2
XATTR_MAXSIZE = 4096
DIRBLKSIZ = 512

TS_TAPE, TS_INODE, TS_BITS, TS_ADDR, TS_END, TS_CLRI = 1, 2, 3, 4, 5, 6
DR_NEWHEADER = 0x0001
DR_NEWINODEFMT = 0x0002
DR_COMPRESSED = 0x0080
DR_METAONLY = 0x0100
DR_EXTATTRIBUTES = 0x8000
EXT_XATTR = 3

EA_BLOCK_MAGIC = 0xEA020000
EA_INODE_MAGIC = 0xEA020001

U32 = 0xFFFFFFFF
_NS = 1_000_000_000
_TMAX = (U32 + 1) * _NS  # first time (ns) that 32-bit seconds cannot hold

# The whole header as the writer fills it. di_db[1..11] and di_ib are written as zeros.
HEADER = struct.Struct(
    "<iiiiIIiI"  # type date ddate volume tapea inumber magic checksum
    "HhHHQ"  # mode nlink ouid ogid size
    "IIIIII"  # atime mtime ctime (sec, usec)
    "I44x12x"  # di_db[0] (rdev), rest of di_db, di_ib
    "IiiII8x"  # flags blocks gen uid gid spare
    "i512s"  # count addr
    "16si64s64s64siiii120x"  # label level filesys dev host flags firstrec ntrec extattributes
)
assert HEADER.size == TP_BSIZE

# The reader's view: every field, di_db in full.
_READ = struct.Struct("<iiiiIIiIHhHHQIIIIII12I12xIiiII8xi512s16si64s64s64siiii120x")
assert _READ.size == TP_BSIZE
_WORDS = struct.Struct("<256I")
_ADDR_WORDS = struct.Struct("<128I")
_ONES = b"\x01" * TP_NINDIR
_ONES_TAIL = (0, 0x01, 0x0101, 0x010101)


def header_sum(data: bytes | bytearray | memoryview, offset: int = 0) -> int:
    """Sum of the 256 little-endian words of one header, modulo 2**32."""
    return sum(_WORDS.unpack_from(data, offset)) & U32


def ones_addr_sum(n: int) -> int:
    """Word sum of a ``c_addr`` whose first ``n`` bytes are 1 and the rest 0 (no unpacking)."""
    return ((n >> 2) * 0x01010101 + _ONES_TAIL[n & 3]) & U32


def addr_sum(addr: bytes) -> int:
    """Word sum of an arbitrary ``c_addr`` (at most 512 bytes, zero padded)."""
    return sum(_ADDR_WORDS.unpack(addr.ljust(TP_NINDIR, b"\0"))) & U32


def ones(n: int) -> bytes:
    return _ONES[:n]


@dataclass(frozen=True, slots=True)
class Inode:
    """The inode fields a header carries (times split into seconds and microseconds)."""

    mode: int = 0
    nlink: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    atime: int = 0
    atime_us: int = 0
    mtime: int = 0
    mtime_us: int = 0
    ctime: int = 0
    ctime_us: int = 0
    rdev: int = 0
    flags: int = 0
    blocks: int = 0

    def word_sum(self) -> int:
        """Sum of the inode's 32 words as the header stores them, computed arithmetically."""
        uid, gid = self.uid & U32, self.gid & U32
        return (
            (self.mode & 0xFFFF)
            + ((self.nlink & 0xFFFF) << 16)
            + (uid & 0xFFFF)
            + ((gid & 0xFFFF) << 16)
            + (self.size & U32)
            + (self.size >> 32)
            + self.atime
            + self.atime_us
            + self.mtime
            + self.mtime_us
            + self.ctime
            + self.ctime_us
            + (self.rdev & U32)
            + (self.flags & U32)
            + (self.blocks & U32)
            + uid
            + gid
        )


def split_time(ns: int) -> tuple[int, int]:
    """Nanoseconds since the epoch to the format's unsigned (seconds, microseconds), clamped."""
    if ns < 0:
        return 0, 0
    sec, rest = divmod(ns, 1_000_000_000)
    if sec > U32:
        return U32, 999_999
    return sec, rest // 1000


def inode_from_stat(st, nlink: int | None = None, size: int | None = None, flags: int = 0) -> Inode:
    """The header inode for an ``os.stat_result``; ``size``/``nlink`` override per type."""
    at, atu = split_time(st.st_atime_ns)
    mt, mtu = split_time(st.st_mtime_ns)
    ct, ctu = split_time(st.st_ctime_ns)
    mode = st.st_mode
    fmt = mode & 0o170000
    rdev = st.st_rdev & U32 if fmt in (0o020000, 0o060000) else 0
    return Inode(
        mode=mode & 0xFFFF,
        nlink=min(nlink if nlink is not None else st.st_nlink, 0x7FFF),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if size is None else size,
        atime=at,
        atime_us=atu,
        mtime=mt,
        mtime_us=mtu,
        ctime=ct,
        ctime_us=ctu,
        rdev=rdev,
        flags=flags,
        blocks=min(st.st_blocks, 0x7FFFFFFF),
    )


ZERO_INODE = Inode()


@dataclass(frozen=True, slots=True)
class Volume:
    """The per-dump constants repeated in every header."""

    date: int
    label: bytes = b"none"
    filesys: bytes = b""
    dev: bytes = b""
    host: bytes = b""
    ntrec: int = 10
    level: int = 0

    def base_sum(self) -> int:
        """Word sum of every constant field (the variable ones zero), for fast checksums."""
        probe = bytearray(TP_BSIZE)
        HEADER.pack_into(
            probe, 0, 0, self.date, 0, 1, 0, 0, NFS_MAGIC, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, b"", self.label, self.level, self.filesys, self.dev, self.host, 0, 0, self.ntrec, 0,
        )  # fmt: skip
        return header_sum(probe)


class HeaderPacker:
    """Writes valid headers straight into a buffer; the checksum costs no unpacking."""

    __slots__ = ("_base", "_pack", "_vol")

    def __init__(self, vol: Volume) -> None:
        self._vol = vol
        self._base = vol.base_sum()
        self._pack = HEADER.pack_into

    def pack_into(
        self,
        buf: bytearray | memoryview,
        offset: int,
        *,
        ctype: int,
        tapea: int,
        inumber: int,
        ino: Inode,
        count: int = 0,
        addr: bytes = b"",
        asum: int | None = None,
        flags: int = DR_NEWINODEFMT,
        ext: int = 0,
    ) -> None:
        if asum is None:
            asum = addr_sum(addr) if addr else 0
        s = self._base + ctype + tapea + inumber + ino.word_sum() + count + asum + flags + ext
        checksum = (CHECKSUM - s) & U32
        v = self._vol
        self._pack(
            buf, offset, ctype, v.date, 0, 1, tapea, inumber, NFS_MAGIC, checksum,
            ino.mode, ino.nlink, ino.uid & 0xFFFF, ino.gid & 0xFFFF, ino.size,
            ino.atime, ino.atime_us, ino.mtime, ino.mtime_us, ino.ctime, ino.ctime_us,
            ino.rdev, ino.flags & U32, ino.blocks, 0, ino.uid & U32, ino.gid & U32,
            count, addr, v.label, v.level, v.filesys, v.dev, v.host, flags, 0, v.ntrec, ext,
        )  # fmt: skip

    def pack_stat(
        self,
        buf: bytearray | memoryview,
        offset: int,
        ctype: int,
        tapea: int,
        inumber: int,
        st: os.stat_result,
        size: int,
        nlink: int,
        flags_di: int,
        count: int,
        addr: bytes,
        asum: int,
        cflags: int = DR_NEWINODEFMT,
        ext: int = 0,
    ) -> None:
        """The fast path: a header for an inode straight from its ``stat`` (no Inode object)."""
        a, m, c = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        if 0 <= a < _TMAX and 0 <= m < _TMAX and 0 <= c < _TMAX:
            asec, au = divmod(a, _NS)
            msec, mu = divmod(m, _NS)
            csec, cu = divmod(c, _NS)
            au //= 1000
            mu //= 1000
            cu //= 1000
        else:
            asec, au = split_time(a)
            msec, mu = split_time(m)
            csec, cu = split_time(c)
        mode = st.st_mode & 0xFFFF
        rdev = st.st_rdev & U32 if (mode & 0o170000) in (0o020000, 0o060000) else 0
        uid, gid = st.st_uid & U32, st.st_gid & U32
        blocks = min(st.st_blocks, 0x7FFFFFFF)
        if nlink > 0x7FFF:
            nlink = 0x7FFF
        s = (
            self._base + ctype + tapea + inumber + mode + (nlink << 16) + (uid & 0xFFFF)
            + ((gid & 0xFFFF) << 16) + (size & U32) + (size >> 32) + asec + au + msec + mu
            + csec + cu + rdev + flags_di + blocks + uid + gid + count + asum + cflags + ext
        )  # fmt: skip
        v = self._vol
        self._pack(
            buf, offset, ctype, v.date, 0, 1, tapea, inumber, NFS_MAGIC, (CHECKSUM - s) & U32,
            mode, nlink, uid & 0xFFFF, gid & 0xFFFF, size, asec, au, msec, mu, csec, cu,
            rdev, flags_di, blocks, 0, uid, gid,
            count, addr, v.label, v.level, v.filesys, v.dev, v.host, cflags, 0, v.ntrec, ext,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header (reader side)."""

    ctype: int
    date: int
    volume: int
    tapea: int
    inumber: int
    mode: int
    nlink: int
    size: int
    atime: int
    atime_us: int
    mtime: int
    mtime_us: int
    db: tuple[int, ...]
    flags_di: int
    uid: int
    gid: int
    count: int
    addr: bytes
    label: bytes
    level: int
    filesys: bytes
    dev: bytes
    host: bytes
    flags: int
    ntrec: int
    ext: int

    @property
    def rdev(self) -> int:
        return self.db[0] or self.db[1]


class FormatError(EngineError):
    """The stream is not a dump stream we can read."""


def classify(rec: bytes | bytearray | memoryview) -> str:
    """'ok' for a valid little-endian NFS header, else why not ('magic', 'checksum', ...)."""
    magic = struct.unpack_from("<i", rec, 24)[0]
    if magic != NFS_MAGIC:
        if magic == FS_UFS2_MAGIC:
            return "ufs2"
        if magic == OFS_MAGIC:
            return "old"
        if struct.unpack_from(">i", rec, 24)[0] in (NFS_MAGIC, FS_UFS2_MAGIC):
            return "swapped"
        return "magic"
    if header_sum(rec) != CHECKSUM:
        return "checksum"
    return "ok"


def parse_header(rec: bytes | bytearray | memoryview) -> Header:
    """Fields of a header already known to be valid (see ``classify``)."""
    f = _READ.unpack_from(rec, 0)
    # f: 0 type 1 date 2 ddate 3 volume 4 tapea 5 inumber 6 magic 7 checksum
    # 8 mode 9 nlink 10 ouid 11 ogid 12 size 13..18 times 19..30 db 31 flags 32 blocks 33 gen
    # 34 uid 35 gid 36 count 37 addr 38 label 39 level 40 filesys 41 dev 42 host 43 flags
    # 44 firstrec 45 ntrec 46 ext
    count = f[36]
    addr = f[37][: max(0, min(count, TP_NINDIR))]
    return Header(
        ctype=f[0], date=f[1], volume=f[3], tapea=f[4], inumber=f[5], mode=f[8], nlink=f[9],
        size=f[12], atime=f[13], atime_us=f[14], mtime=f[15], mtime_us=f[16],
        db=f[19:31], flags_di=f[31], uid=f[34], gid=f[35], count=count, addr=addr,
        label=f[38].rstrip(b"\0"), level=f[39], filesys=f[40].rstrip(b"\0"),
        dev=f[41].rstrip(b"\0"), host=f[42].rstrip(b"\0"), flags=f[43], ntrec=f[45], ext=f[46],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Inode maps


def map_bytes(maxino: int) -> bytearray:
    """The TS_CLRI/TS_BITS map for a dense dump: every inode 2 .. maxino-1 set."""
    nbytes = (maxino + 7) // 8
    size = (nbytes + TP_BSIZE - 1) // TP_BSIZE * TP_BSIZE
    m = bytearray(size)
    last = maxino - 2  # bit index of the highest inode (inode i is bit i-1)
    full = (last + 1) // 8
    m[:full] = b"\xff" * full
    for bit in range(full * 8, last + 1):
        m[bit >> 3] |= 1 << (bit & 7)
    m[0] &= 0xFE  # inode 1 (whiteout) is never used
    return m


# ---------------------------------------------------------------------------------------------
# Directories (struct direct, 512-byte blocks)

_DIRENT = struct.Struct("<IHBB")
DT_DIR = 4


def dirsiz(namlen: int) -> int:
    return 8 + ((namlen + 1 + 3) & ~3)


class DirEncoder:
    """Builds one directory's ``struct direct`` data; entries never cross 512 bytes."""

    __slots__ = ("_last", "buf")

    def __init__(self, ino: int, parent: int) -> None:
        self.buf = bytearray()
        self._last = -1
        self.add(b".", ino, DT_DIR)
        self.add(b"..", parent, DT_DIR)

    def add(self, name: bytes, ino: int, dtype: int) -> None:
        n = len(name)
        size = 8 + ((n + 4) & ~3)
        buf = self.buf
        pos = len(buf)
        room = DIRBLKSIZ - (pos % DIRBLKSIZ)
        if size > room and room != DIRBLKSIZ:
            self._stretch(room)
            pos = len(buf)
        buf += _DIRENT.pack(ino, size, dtype, n)
        buf += name
        buf += bytes(size - 8 - n)
        self._last = pos

    def _stretch(self, extra: int) -> None:
        """Extend the last entry's reclen by ``extra`` bytes of padding."""
        last = self._last
        reclen = struct.unpack_from("<H", self.buf, last + 4)[0]
        struct.pack_into("<H", self.buf, last + 4, reclen + extra)
        self.buf += bytes(extra)

    def finish(self) -> bytes:
        room = DIRBLKSIZ - (len(self.buf) % DIRBLKSIZ)
        if room != DIRBLKSIZ:
            self._stretch(room)
        return bytes(self.buf)


def iter_dir(data: bytes | bytearray | memoryview, blksize: int = TP_BSIZE):
    """Yield ``(ino, dtype, name)`` of a directory image the way restore walks it.

    A bad entry skips the rest of its 1024-byte block, as restore does ("Mangled
    directory"); ``d_ino`` 0 slots are skipped. ``.`` and ``..`` are yielded too.
    """
    sp = native.speedups
    if sp is not None:
        yield from sp.dir_entries(data, blksize)
        return
    data = bytes(data)
    end = len(data)
    blk = 0
    while blk < end:
        pos = blk
        lim = min(blk + blksize, end)
        while pos + 8 <= lim:
            ino, reclen, dtype, namlen = _DIRENT.unpack_from(data, pos)
            if reclen == 0 or reclen & 3 or pos + reclen > lim or reclen < dirsiz(namlen):
                break
            if ino and namlen:
                yield ino, dtype, data[pos + 8 : pos + 8 + namlen]
            pos += reclen
        blk += blksize


# ---------------------------------------------------------------------------------------------
# Extended attributes and ACLs

_NS_INDEX = (
    (b"user.", 1),
    (b"trusted.", 4),
    (b"lustre.", 5),
    (b"security.", 6),
)
_INDEX_NS = {1: b"user.", 4: b"trusted.", 5: b"lustre.", 6: b"security."}
ACL_ACCESS = b"system.posix_acl_access"
ACL_DEFAULT = b"system.posix_acl_default"
_ACL_NAMES = {ACL_ACCESS: 2, ACL_DEFAULT: 3}
_INDEX_ACL = {2: ACL_ACCESS, 3: ACL_DEFAULT}
_ACL_USER, _ACL_GROUP = 0x02, 0x08
_EA_ENTRY = struct.Struct("<BBHIII")
_EA_HDR = struct.Struct("<IIII16x")


class EAError(ValueError):
    """An attribute that cannot be carried in (or read from) a dump EA record."""


def acl_to_disk(value: bytes) -> bytes:
    """POSIX ACL xattr (version 2) to the ext3 on-disk form dump carries (version 1)."""
    if len(value) < 4 or (len(value) - 4) % 8 or struct.unpack_from("<I", value)[0] != 2:
        raise EAError("not a version-2 POSIX ACL")
    out = bytearray(struct.pack("<I", 1))
    for pos in range(4, len(value), 8):
        tag, perm, ident = struct.unpack_from("<HHI", value, pos)
        if tag in (_ACL_USER, _ACL_GROUP):
            out += struct.pack("<HHI", tag, perm, ident)
        else:
            out += struct.pack("<HH", tag, perm)
    return bytes(out)


def acl_from_disk(value: bytes) -> bytes:
    """ext3 on-disk ACL (version 1) back to the version-2 xattr value Linux expects."""
    if len(value) < 4 or struct.unpack_from("<I", value)[0] != 1:
        raise EAError("not an ext3 POSIX ACL")
    out = bytearray(struct.pack("<I", 2))
    pos = 4
    while pos < len(value):
        if pos + 4 > len(value):
            raise EAError("truncated ACL entry")
        tag, perm = struct.unpack_from("<HH", value, pos)
        if tag in (_ACL_USER, _ACL_GROUP):
            if pos + 8 > len(value):
                raise EAError("truncated ACL entry")
            ident = struct.unpack_from("<I", value, pos + 4)[0]
            pos += 8
        else:
            ident = U32
            pos += 4
        out += struct.pack("<HHI", tag, perm, ident)
    return bytes(out)


def _ea_key(name: bytes) -> tuple[int, bytes]:
    idx = _ACL_NAMES.get(name)
    if idx is not None:
        return idx, b""
    for prefix, idx in _NS_INDEX:
        if name.startswith(prefix):
            suffix = name[len(prefix) :]
            if not suffix or len(suffix) > 255:
                raise EAError("name length not representable")
            return idx, suffix
    raise EAError("namespace not representable in a dump stream")


def encode_ea(attrs: list[tuple[bytes, bytes]]) -> tuple[bytes, list[tuple[bytes, str]]]:
    """Block-format EA image (≤ 4096 bytes, trimmed) and the attributes left out, with why.

    Values follow the entry list's terminator; restore accepts any in-image offset.
    """
    kept: list[tuple[int, bytes, bytes]] = []
    dropped: list[tuple[bytes, str]] = []
    used = 32 + 4
    for name, value in attrs:
        try:
            idx, suffix = _ea_key(name)
            if idx in (2, 3):
                value = acl_to_disk(value)
        except EAError as exc:
            dropped.append((name, str(exc)))
            continue
        need = ((16 + len(suffix) + 3) & ~3) + ((len(value) + 3) & ~3)
        if used + need > XATTR_MAXSIZE:
            dropped.append((name, "does not fit the 4096-byte EA record"))
            continue
        used += need
        kept.append((idx, suffix, value))
    if not kept:
        return b"", dropped
    entries = bytearray()
    values = bytearray()
    vbase = 32 + sum((16 + len(s) + 3) & ~3 for _, s, _ in kept) + 4
    for idx, suffix, value in kept:
        off = vbase + len(values)
        entries += _EA_ENTRY.pack(len(suffix), idx, off, 0, len(value), 0)
        entries += suffix + bytes(-len(suffix) & 3)
        values += value + bytes(-len(value) & 3)
    image = _EA_HDR.pack(EA_BLOCK_MAGIC, 1, 1, 0) + entries + bytes(4) + values
    return image, dropped


def decode_ea(image: bytes) -> list[tuple[bytes, bytes]]:
    """Attributes of one EA image (block or in-inode format), ACLs converted to version 2."""
    if len(image) < 4:
        raise EAError("EA image too short")
    magic = struct.unpack_from("<I", image)[0]
    if magic == EA_BLOCK_MAGIC:
        pos, base = 32, 0
    elif magic == EA_INODE_MAGIC:
        pos, base = 4, 4
    else:
        raise EAError(f"bad EA magic {magic:#x}")
    out: list[tuple[bytes, bytes]] = []
    n = len(image)
    while pos + 4 <= n and struct.unpack_from("<I", image, pos)[0] != 0:
        if pos + 16 > n:
            raise EAError("truncated EA entry")
        nlen, idx, voff, vblock, vsize, _ = _EA_ENTRY.unpack_from(image, pos)
        name_end = pos + 16 + nlen
        if name_end > n:
            raise EAError("truncated EA name")
        suffix = image[pos + 16 : name_end]
        start = voff + base
        if vblock or start + vsize > n:
            raise EAError("EA value outside the image")
        value = image[start : start + vsize]
        pos += (16 + nlen + 3) & ~3
        if idx in _INDEX_ACL:
            out.append((_INDEX_ACL[idx], acl_from_disk(value)))
        elif idx in _INDEX_NS:
            out.append((_INDEX_NS[idx] + suffix, value))
        else:
            raise EAError(f"unknown EA index {idx}")
    return out
