"""The bytes of the pax format: ustar headers, checksums, numbers, pax records, ACL text.

Pure functions on bytes, shared by the writer and the reader (spec tar-format.md §2-§10).
"""

from __future__ import annotations

import grp
import pwd
import struct
import zlib
from functools import lru_cache

from ndmpd.engines.base import EngineError

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
MAX_OCTAL_7 = 0o7777777
MAX_OCTAL_11 = 0o77777777777
NS = 1_000_000_000

# typeflags
REG, AREG, LNK, SYM, CHR, BLK, DIR, FIFO, CONT = (
    b"0",
    b"\0",
    b"1",
    b"2",
    b"3",
    b"4",
    b"5",
    b"6",
    b"7",
)
XHD, XGL, GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE = b"x", b"g", b"L", b"K", b"S"

MAGIC_USTAR = b"ustar\x0000"
MAGIC_GNU = b"ustar  \x00"

HDR_FORMAT = "100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x"  # the ustar header block
_HDR = struct.Struct(HDR_FORMAT)
assert _HDR.size == BLOCK
_CHK_SPACES = b"        "


class FormatError(EngineError):
    """The stream is not a well-formed tar archive at this point."""


def byte_sum(block: bytes | bytearray | memoryview) -> int:
    """Unsigned sum of a 512-byte block, computed in C.

    Adler-32's low half is 1 + the byte sum modulo 65521; each 256-byte half sums to at most
    65280, so the modulo never applies.
    """
    mv = memoryview(block)
    return (zlib.adler32(mv[:256]) & 0xFFFF) + (zlib.adler32(mv[256:512]) & 0xFFFF) - 2


def header(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    uname: bytes = b"",
    gname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    *,
    xheader: bool = False,
) -> bytearray:
    """A ustar header with its checksum; out-of-range numbers become 0 (records hold them)."""
    dev = b"" if xheader else None
    h = bytearray(
        _HDR.pack(
            name,
            b"%07o\0" % (mode & 0o7777),
            b"%07o\0" % uid if 0 <= uid <= MAX_OCTAL_7 else b"0000000\0",
            b"%07o\0" % gid if 0 <= gid <= MAX_OCTAL_7 else b"0000000\0",
            b"%011o\0" % size if size <= MAX_OCTAL_11 else b"00000000000\0",
            b"%011o\0" % mtime if 0 <= mtime <= MAX_OCTAL_11 else b"00000000000\0",
            _CHK_SPACES,
            typeflag,
            linkname,
            MAGIC_USTAR,
            uname,
            gname,
            dev if dev is not None else b"%07o\0" % (devmajor & MAX_OCTAL_7),
            dev if dev is not None else b"%07o\0" % (devminor & MAX_OCTAL_7),
            b"",
        )
    )
    h[148:156] = b"%06o\0 " % byte_sum(h)
    return h


def checksum_ok(block: bytes | memoryview) -> bool:
    """True when the stored checksum matches the unsigned (or historic signed) byte sum."""
    field = bytes(block[148:156])
    try:
        stored = parse_number(field)
    except FormatError:
        return False
    # the field's own byte sum via adler32 (8 bytes cannot reach its modulus)
    unsigned = byte_sum(block) - (zlib.adler32(field) & 0xFFFF) + 257
    if stored == unsigned:
        return True
    high = sum(1 for b in bytes(block) if b >= 0x80) - sum(1 for b in field if b >= 0x80)
    return stored == unsigned - 256 * high


def parse_number(field: bytes | memoryview) -> int:
    """An octal field (NUL or space terminated, leading spaces) or GNU base-256."""
    f = bytes(field)
    if not f:
        return 0
    if f[0] & 0x80:
        if f[0] == 0xFF:
            return int.from_bytes(f, "big", signed=True)
        return int.from_bytes(bytes([f[0] & 0x7F]) + f[1:], "big")
    s = f.split(b"\0", 1)[0]
    try:
        return int(s, 8)  # int() skips the leading and trailing spaces itself
    except ValueError:
        if not s.strip(b" "):
            return 0
        raise FormatError(f"bad numeric field {f!r}") from None


def cstr(field: bytes | memoryview) -> bytes:
    """A NUL-terminated (or full-width) string field."""
    return bytes(field).split(b"\0", 1)[0]


# -- pax records ------------------------------------------------------------------------------


def record(key: bytes, value: bytes) -> bytes:
    """One ``LEN key=value\\n`` record; LEN counts its own digits."""
    body = len(key) + len(value) + 3
    n = body + len(str(body))
    n2 = body + len(str(n))
    while n2 != n:
        n = n2
        n2 = body + len(str(n))
    return b"%d %s=%s\n" % (n, key, value)


def parse_records(data: bytes) -> list[tuple[bytes, bytes]]:
    """The ordered (key, value) list of an ``x``/``g`` member; repeats kept (sparse 0.0)."""
    out: list[tuple[bytes, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] == 0 and data.count(0, pos) == end - pos:
            break  # NUL padding after the last record (seen from some writers)
        sp = data.find(b" ", pos, min(end, pos + 22))
        if sp < 0:
            raise FormatError("pax record without a length")
        try:
            n = int(data[pos:sp])
        except ValueError:
            raise FormatError("pax record with a bad length") from None
        stop = pos + n
        if n <= sp - pos + 1 or stop > end or data[stop - 1] != 0x0A:
            raise FormatError("pax record length out of range")
        eq = data.find(b"=", sp + 1, stop)
        if eq < 0:
            raise FormatError("pax record without '='")
        out.append((data[sp + 1 : eq], data[eq + 1 : stop - 1]))
        pos = stop
    return out


_FRAC_SCALE = [10 ** (9 - i) for i in range(10)]  # nanoseconds per unit of an i-digit fraction


def format_time(ns: int) -> bytes:
    """Seconds with up to nine fraction digits, trailing zeros and a bare dot dropped."""
    sign = b""
    if ns < 0:
        sign, ns = b"-", -ns
    s, f = divmod(ns, NS)
    if not f:
        return b"%s%d" % (sign, s)
    return (b"%s%d.%09d" % (sign, s, f)).rstrip(b"0")


def parse_time(value: bytes) -> int:
    """A pax time value in nanoseconds."""
    whole, dot, frac = value.partition(b".")
    if whole.isdigit() and (frac.isdigit() if dot else True) and len(frac) <= 9:
        return int(whole) * NS + (int(frac) * _FRAC_SCALE[len(frac)] if frac else 0)
    v = value.strip()
    neg = v.startswith(b"-")
    if neg:
        v = v[1:]
    whole, _, frac = v.partition(b".")
    try:
        if not whole.isdigit() and whole:
            raise ValueError
        ns = int(whole or b"0") * NS
        if frac:
            if not frac.isdigit():
                raise ValueError
            ns += int(frac[:9].ljust(9, b"0"))
    except ValueError:
        raise FormatError(f"bad pax time {value!r}") from None
    return -ns if neg else ns


def parse_decimal(value: bytes, what: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise FormatError(f"bad {what} {value!r}") from None
    if n < 0:
        raise FormatError(f"negative {what} {value!r}")
    return n


# -- ACLs: Linux xattr binary (version 2) <-> the text of SCHILY.acl.* -------------------------

_ACL_TAGS = {
    0x01: b"user",
    0x02: b"user",
    0x04: b"group",
    0x08: b"group",
    0x10: b"mask",
    0x20: b"other",
}
_ACL_ENTRY = struct.Struct("<HHI")
_UNDEF_ID = 0xFFFFFFFF


def acl_to_text(blob: bytes) -> bytes | None:
    """The text form of a version-2 ACL xattr, numeric ids; None if it is not one."""
    if len(blob) < 4 or (len(blob) - 4) % 8 or int.from_bytes(blob[:4], "little") != 2:
        return None
    lines = []
    for tag, perm, qid in _ACL_ENTRY.iter_unpack(blob[4:]):
        name = _ACL_TAGS.get(tag)
        if name is None:
            return None
        q = b"%d" % qid if tag in (0x02, 0x08) else b""
        p = (
            (b"r" if perm & 4 else b"-")
            + (b"w" if perm & 2 else b"-")
            + (b"x" if perm & 1 else b"-")
        )
        lines.append(b"%s:%s:%s\n" % (name, q, p))
    return b"".join(lines)


def acl_from_text(text: bytes) -> bytes:
    """A version-2 ACL xattr from ``acl_to_text`` output (names or numeric ids)."""
    entries: list[tuple[int, int, int]] = []
    for raw in text.replace(b",", b"\n").split(b"\n"):
        line = raw.split(b"#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(b":")
        if len(parts) < 3:
            raise FormatError(f"bad ACL entry {line!r}")
        tag, q, perms = parts[0], parts[1], parts[2]
        perm = sum(bit for ch, bit in zip(b"rwx", (4, 2, 1), strict=True) if ch in perms)
        if tag in (b"user", b"u"):
            t, qid = (0x02, _resolve_id(q, user=True)) if q else (0x01, _UNDEF_ID)
        elif tag in (b"group", b"g"):
            t, qid = (0x08, _resolve_id(q, user=False)) if q else (0x04, _UNDEF_ID)
        elif tag in (b"mask", b"m"):
            t, qid = 0x10, _UNDEF_ID
        elif tag in (b"other", b"o"):
            t, qid = 0x20, _UNDEF_ID
        else:
            raise FormatError(f"bad ACL tag {tag!r}")
        entries.append((t, perm, qid))
    entries.sort(key=lambda e: (e[0], e[2]))
    return (2).to_bytes(4, "little") + b"".join(_ACL_ENTRY.pack(*e) for e in entries)


def _resolve_id(q: bytes, *, user: bool) -> int:
    if q.isdigit():
        return int(q)
    try:
        return pwd.getpwnam(q.decode()).pw_uid if user else grp.getgrnam(q.decode()).gr_gid
    except (KeyError, UnicodeDecodeError):
        raise FormatError(f"unknown ACL {'user' if user else 'group'} {q!r}") from None


@lru_cache(maxsize=4096)
def uname_of(uid: int) -> bytes:
    """The user name for ``uid`` if it resolves and fits, else empty (as GNU tar)."""
    try:
        n = pwd.getpwuid(uid).pw_name.encode()
    except (KeyError, OverflowError, UnicodeEncodeError):
        return b""
    return n if len(n) < 32 and n.isascii() else b""


@lru_cache(maxsize=4096)
def gname_of(gid: int) -> bytes:
    try:
        n = grp.getgrgid(gid).gr_name.encode()
    except (KeyError, OverflowError, UnicodeEncodeError):
        return b""
    return n if len(n) < 32 and n.isascii() else b""
