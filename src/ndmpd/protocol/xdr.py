"""XDR (RFC 4506) as NDMP uses it, plus the small schema DSL the message bodies are built from.

Every type is an ``XdrType`` with ``encode(value, parts)`` (appends bytes-like pieces to a list,
so bulk data is joined once, never copied twice) and ``decode(buf, off) -> (value, new_off)``
over a ``memoryview``. Lengths are checked against the buffer before anything is allocated, so a
hostile length costs nothing.

A body is declared once, as a dataclass whose fields carry their XDR type::

    @xdr_struct
    class TapeOpenRequest:
        device: str = string(MAX_DEVICE_NAME)
        mode: TapeOpenMode = enum(TapeOpenMode)

and ``xdr_struct`` compiles the layout: runs of fixed-size fields become one ``struct.Struct``.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

__all__ = [
    "BOOL",
    "I16",
    "I32",
    "U8",
    "U16",
    "U32",
    "UQUAD",
    "ArrayType",
    "EnumType",
    "FixedOpaqueType",
    "OpaqueType",
    "Primitive",
    "StringType",
    "StructCodec",
    "UnionCodec",
    "XdrArgsError",
    "XdrError",
    "XdrType",
    "array",
    "boolean",
    "codec_of",
    "decode",
    "encode",
    "enum",
    "fixed_opaque",
    "i16",
    "i32",
    "opaque",
    "string",
    "struct_field",
    "u8",
    "u16",
    "u32",
    "uquad",
    "xdr_struct",
    "xdr_union",
]


class XdrError(Exception):
    """Malformed XDR: truncated, trailing bytes, bad discriminant (the session: XDR_DECODE_ERR)."""


class XdrArgsError(XdrError):
    """Well-formed XDR carrying a value the protocol forbids (the session: ILLEGAL_ARGS_ERR)."""


_U32 = struct.Struct(">I")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")

T = TypeVar("T")


class XdrType:
    """One XDR type. ``min_size`` bounds how many elements a remaining buffer can hold."""

    min_size: int = 4

    def encode(self, value: Any, parts: list[bytes | memoryview]) -> None:
        raise NotImplementedError

    def decode(self, buf: memoryview, off: int) -> tuple[Any, int]:
        raise NotImplementedError


def _read_len(buf: memoryview, off: int, limit: int, what: str) -> tuple[int, int, int]:
    """Read a length word; return (length, data start, padded end), all checked."""
    if off + 4 > len(buf):
        raise XdrError(f"{what}: truncated length")
    (n,) = _U32.unpack_from(buf, off)
    start = off + 4
    end = start + ((n + 3) & ~3)
    if end > len(buf):
        raise XdrError(f"{what}: length {n} runs past the end of the message")
    if n > limit:
        raise XdrArgsError(f"{what}: length {n} exceeds the maximum {limit}")
    return n, start, end


# --------------------------------------------------------------------------- primitives


class Primitive(XdrType):
    """A fixed 4- or 8-byte item; groupable into one struct format with its neighbours."""

    FULL: ClassVar[dict[str, tuple[int, int]]] = {
        "I": (0, 0xFFFFFFFF),
        "i": (-(2**31), 2**31 - 1),
        "Q": (0, 2**64 - 1),
    }

    def __init__(
        self,
        name: str,
        fmt: str,
        lo: int,
        hi: int,
        dec: Callable[[int], Any] | None = None,
    ) -> None:
        self.name = name
        self.fmt = fmt
        self.lo = lo
        self.hi = hi
        self.dec = dec
        self._st = struct.Struct(">" + fmt)
        self.min_size = self._st.size
        # A range the struct format itself does not enforce needs an explicit check.
        self.check_encode = (lo, hi) != self.FULL[fmt]

    def __repr__(self) -> str:
        return self.name

    def decode_value(self, raw: int) -> Any:
        if raw < self.lo or raw > self.hi:
            raise XdrArgsError(f"{self.name} value {raw} out of range")
        return raw if self.dec is None else self.dec(raw)

    def check_value(self, value: Any) -> None:
        if not isinstance(value, int) or value < self.lo or value > self.hi:
            raise XdrArgsError(f"{self.name}: {value!r} is not in [{self.lo}, {self.hi}]")

    def encode(self, value: Any, parts: list[bytes | memoryview]) -> None:
        if self.check_encode:
            self.check_value(value)
        try:
            parts.append(self._st.pack(value))
        except struct.error as e:
            raise XdrArgsError(f"{self.name}: cannot encode {value!r}: {e}") from None

    def decode(self, buf: memoryview, off: int) -> tuple[Any, int]:
        end = off + self.min_size
        if end > len(buf):
            raise XdrError(f"{self.name}: truncated")
        (raw,) = self._st.unpack_from(buf, off)
        if self.dec is not None or raw < self.lo or raw > self.hi:
            raw = self.decode_value(raw)
        return raw, end

    @property
    def needs_conversion(self) -> bool:
        return self.dec is not None or (self.lo, self.hi) != self.FULL[self.fmt]


U32 = Primitive("u_long", "I", 0, 0xFFFFFFFF)
I32 = Primitive("long", "i", -(2**31), 2**31 - 1)
U16 = Primitive("u_short", "I", 0, 0xFFFF)
I16 = Primitive("short", "i", -(2**15), 2**15 - 1)
U8 = Primitive("u_char", "I", 0, 0xFF)
BOOL = Primitive("bool", "I", 0, 1, bool)
UQUAD = Primitive("u_quad", "Q", 0, 2**64 - 1)  # big-endian 64-bit == high word, low word


class EnumType(Primitive):
    """An XDR enum. Strict: values outside the enum are ILLEGAL_ARGS. Open (``strict=False``,
    for error codes, which extensions may add to): unknown values decode to plain ints."""

    def __init__(self, cls: type[IntEnum], strict: bool = True) -> None:
        self.cls = cls
        self.strict = strict
        members: dict[int, Any] = {int(m): m for m in cls}
        self.members = members

        def dec(raw: int) -> Any:
            m = members.get(raw)
            if m is not None:
                return m
            if strict:
                raise XdrArgsError(f"{cls.__name__}: {raw} is not a valid value")
            return raw

        super().__init__(cls.__name__, "I", 0, 0xFFFFFFFF, dec)
        self.check_encode = strict

    def check_value(self, value: Any) -> None:
        if not isinstance(value, int) or (self.strict and value not in self.members):
            raise XdrArgsError(f"{self.name}: {value!r} is not a valid value")

    def __repr__(self) -> str:
        return f"enum {self.name}"


# ------------------------------------------------------------------ strings and opaques


class StringType(XdrType):
    """``string<max>``: bytes on the wire, ``str`` in Python via UTF-8 + surrogateescape so
    that any byte string (non-UTF-8 file names) round-trips exactly. Encode accepts bytes too."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def __repr__(self) -> str:
        return f"string<{self.max_len}>"

    def encode(self, value: Any, parts: list[bytes | memoryview]) -> None:
        if isinstance(value, str):
            try:
                data = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as e:
                raise XdrArgsError(f"string: cannot encode {value!r}: {e}") from None
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        else:
            raise XdrArgsError(f"string: expected str or bytes, got {type(value).__name__}")
        n = len(data)
        if n > self.max_len:
            raise XdrArgsError(f"string: length {n} exceeds the maximum {self.max_len}")
        parts.append(_U32.pack(n))
        if n:
            parts.append(data)
            parts.append(_PAD[n & 3])

    def decode(self, buf: memoryview, off: int) -> tuple[str, int]:
        n, start, end = _read_len(buf, off, self.max_len, "string")
        return str(buf[start : start + n], "utf-8", "surrogateescape"), end


class OpaqueType(XdrType):
    """``opaque<max>``. ``view=True`` decodes to a zero-copy memoryview (bulk tape data)."""

    def __init__(self, max_len: int, view: bool = False) -> None:
        self.max_len = max_len
        self.view = view

    def __repr__(self) -> str:
        return f"opaque<{self.max_len}>"

    def encode(self, value: Any, parts: list[bytes | memoryview]) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise XdrArgsError(f"opaque: expected bytes, got {type(value).__name__}")
        n = value.nbytes if isinstance(value, memoryview) else len(value)
        if n > self.max_len:
            raise XdrArgsError(f"opaque: length {n} exceeds the maximum {self.max_len}")
        parts.append(_U32.pack(n))
        if n:
            parts.append(bytes(value) if isinstance(value, bytearray) else value)
            parts.append(_PAD[n & 3])

    def decode(self, buf: memoryview, off: int) -> tuple[bytes | memoryview, int]:
        n, start, end = _read_len(buf, off, self.max_len, "opaque")
        piece = buf[start : start + n]
        return (piece if self.view else piece.tobytes()), end


class FixedOpaqueType(XdrType):
    """``opaque x[N]``: exactly N bytes plus pad, no length word."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.padded = (size + 3) & ~3
        self.min_size = self.padded

    def __repr__(self) -> str:
        return f"opaque[{self.size}]"

    def encode(self, value: Any, parts: list[bytes | memoryview]) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise XdrArgsError(f"opaque[{self.size}]: expected bytes, got {type(value).__name__}")
        if len(value) != self.size:
            raise XdrArgsError(f"opaque[{self.size}]: got {len(value)} bytes")
        parts.append(bytes(value))
        parts.append(_PAD[self.size & 3])

    def decode(self, buf: memoryview, off: int) -> tuple[bytes, int]:
        end = off + self.padded
        if end > len(buf):
            raise XdrError(f"opaque[{self.size}]: truncated")
        return buf[off : off + self.size].tobytes(), end


# ------------------------------------------------------------------------------ arrays


class ArrayType(XdrType):
    """``T x<max>``: a count then the elements."""

    def __init__(self, elem: XdrType, max_len: int) -> None:
        self.elem = elem
        self.max_len = max_len
        self._prim = elem if isinstance(elem, Primitive) else None

    def __repr__(self) -> str:
        return f"{self.elem!r}<{self.max_len}>"

    def encode(self, value: Any, parts: list[bytes | memoryview]) -> None:
        try:
            n = len(value)
        except TypeError:
            raise XdrArgsError(f"array: expected a sequence, got {type(value).__name__}") from None
        if n > self.max_len:
            raise XdrArgsError(f"array: {n} elements exceed the maximum {self.max_len}")
        parts.append(_U32.pack(n))
        prim = self._prim
        if prim is not None and n:
            if prim.check_encode:
                for v in value:
                    prim.check_value(v)
            try:
                parts.append(struct.pack(f">{n}{prim.fmt}", *value))
            except struct.error as e:
                raise XdrArgsError(f"array of {prim.name}: {e}") from None
            return
        enc = self.elem.encode
        for v in value:
            enc(v, parts)

    def decode(self, buf: memoryview, off: int) -> tuple[list[Any], int]:
        if off + 4 > len(buf):
            raise XdrError("array: truncated count")
        (n,) = _U32.unpack_from(buf, off)
        off += 4
        if n * self.elem.min_size > len(buf) - off:
            raise XdrError(f"array: {n} elements cannot fit in the rest of the message")
        if n > self.max_len:
            raise XdrArgsError(f"array: {n} elements exceed the maximum {self.max_len}")
        prim = self._prim
        if prim is not None:
            raw = struct.unpack_from(f">{n}{prim.fmt}", buf, off)
            off += n * prim.min_size
            if prim.needs_conversion:
                return [prim.decode_value(v) for v in raw], off
            return list(raw), off
        out = []
        dec = self.elem.decode
        for _ in range(n):
            v, off = dec(buf, off)
            out.append(v)
        return out, off


# ------------------------------------------------------------------------- structures

_FIELD_KEY = "xdr"


def _xdr_type_of(t: Any) -> XdrType:
    if isinstance(t, XdrType):
        return t
    codec = getattr(t, "_xdr_codec", None)
    if codec is None:
        raise TypeError(f"{t!r} is neither an XdrType nor an XDR dataclass")
    return codec


def _field(xtype: XdrType, default: Any = dataclasses.MISSING, factory: Any = None) -> Any:
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_FIELD_KEY: xtype})
    return dataclasses.field(default=default, metadata={_FIELD_KEY: xtype})


def u32(default: int = 0) -> Any:
    return _field(U32, default)


def i32(default: int = 0) -> Any:
    return _field(I32, default)


def u16(default: int = 0) -> Any:
    return _field(U16, default)


def i16(default: int = 0) -> Any:
    return _field(I16, default)


def u8(default: int = 0) -> Any:
    return _field(U8, default)


def boolean(default: bool = False) -> Any:
    return _field(BOOL, default)


def uquad(default: int = 0) -> Any:
    return _field(UQUAD, default)


def enum(cls: type[IntEnum], default: Any = None, *, strict: bool = True) -> Any:
    return _field(EnumType(cls, strict), cls(0) if default is None else default)


def string(max_len: int) -> Any:
    return _field(StringType(max_len), "")


def opaque(max_len: int, *, view: bool = False) -> Any:
    return _field(OpaqueType(max_len, view), b"")


def fixed_opaque(size: int) -> Any:
    return _field(FixedOpaqueType(size), b"\0" * size)


def array(elem: Any, max_len: int) -> Any:
    return _field(ArrayType(_xdr_type_of(elem), max_len), factory=list)


def struct_field(cls: type) -> Any:
    return _field(_xdr_type_of(cls), factory=cls)


def _schema(cls: type) -> list[tuple[str, XdrType]]:
    out = []
    for f in dataclasses.fields(cls):
        xt = f.metadata.get(_FIELD_KEY)
        if xt is None:
            raise TypeError(f"{cls.__name__}.{f.name} has no XDR type")
        out.append((f.name, xt))
    return out


def _gen_fields(
    fields: Sequence[tuple[str, XdrType]], ns: dict[str, Any], owner: str
) -> tuple[list[str], list[str], list[str]]:
    """Source lines decoding and encoding ``fields`` in order, runs of primitives as one
    ``struct`` call. Returns (decode lines, encode lines, names of the decoded locals)."""
    dec: list[str] = []
    enc: list[str] = []
    names: list[str] = []
    run: list[tuple[int, str, Primitive]] = []

    def flush() -> None:
        if not run:
            return
        k = len(ns)
        st = struct.Struct(">" + "".join(p.fmt for _, _, p in run))
        ns[f"S{k}"] = st
        loc = [f"a{j}" for j, _, _ in run]
        dec.append(f"    if off + {st.size} > len(buf): raise XdrError('{owner}: truncated')")
        dec.append(f"    ({', '.join(loc)},) = S{k}.unpack_from(buf, off)")
        dec.append(f"    off += {st.size}")
        for j, name, p in run:
            enc.append(f"    a{j} = v.{name}")
            if isinstance(p, EnumType):
                ns[f"M{j}"] = p.members
                ns[f"C{j}"] = p.decode_value
                dec.append(f"    a{j} = M{j}[a{j}] if a{j} in M{j} else C{j}(a{j})")
                if p.check_encode:
                    ns[f"K{j}"] = p.check_value
                    enc.append(f"    if a{j} not in M{j}: K{j}(a{j})")
            else:
                if p.lo != Primitive.FULL[p.fmt][0] or p.hi != Primitive.FULL[p.fmt][1]:
                    ns[f"C{j}"] = p.decode_value
                    dec.append(f"    if a{j} < {p.lo} or a{j} > {p.hi}: C{j}(a{j})")
                if p.dec is not None:
                    ns[f"D{j}"] = p.dec
                    dec.append(f"    a{j} = D{j}(a{j})")
                if p.check_encode:
                    ns[f"K{j}"] = p.check_value
                    enc.append(f"    K{j}(a{j})")
        enc.append(f"    try: parts.append(S{k}.pack({', '.join(loc)}))")
        enc.append(f"    except struct_error as e: raise XdrArgsError(f'{owner}: {{e}}') from None")
        run.clear()

    for j, (name, t) in enumerate(fields):
        names.append(f"a{j}")
        if isinstance(t, Primitive):
            run.append((j, name, t))
            continue
        flush()
        ns[f"T{j}"] = t.decode
        ns[f"E{j}"] = t.encode
        dec.append(f"    a{j}, off = T{j}(buf, off)")
        enc.append(f"    E{j}(v.{name}, parts)")
    flush()
    return dec, enc, names


def _compile(src: str, ns: dict[str, Any], name: str) -> Any:
    ns.update(XdrError=XdrError, XdrArgsError=XdrArgsError, struct_error=struct.error)
    exec(compile(src, f"<xdr {name}>", "exec"), ns)
    return ns


class StructCodec(XdrType):
    """Encode/decode a dataclass field by field; the code is generated once per class so
    that a struct costs one ``struct`` call per run of fixed-size fields and no loops."""

    def __init__(self, cls: type, schema: Sequence[tuple[str, XdrType]]) -> None:
        self.cls = cls
        self.schema = list(schema)
        self.min_size = sum(t.min_size for _, t in self.schema)
        owner = cls.__name__
        ns: dict[str, Any] = {"cls": cls}
        dec, enc, names = _gen_fields(self.schema, ns, owner)
        src = "\n".join(
            [
                "def decode(buf, off):",
                *dec,
                f"    return cls({', '.join(names)}), off",
                "def encode(v, parts):",
                "    if type(v) is not cls:",
                f"        raise XdrArgsError(f'expected {owner}, got {{type(v).__name__}}')",
                *enc,
                "    return None",
            ]
        )
        ns = _compile(src, ns, owner)
        self.decode = ns["decode"]  # type: ignore[method-assign]
        self._encode = ns["encode"]
        self.runs = sum(1 for line in dec if "unpack_from" in line)

    def __repr__(self) -> str:
        return f"struct {self.cls.__name__}"

    def encode(self, value: Any, parts: list[bytes | memoryview]) -> None:
        try:
            self._encode(value, parts)
        except (AttributeError, TypeError) as e:
            raise XdrArgsError(f"{self.cls.__name__}: {e}") from None


class UnionCodec(XdrType):
    """A discriminated union flattened into one dataclass: the discriminant field plus the
    fields of every arm (each with a default); only the selected arm's fields travel."""

    def __init__(
        self,
        cls: type,
        schema: Sequence[tuple[str, XdrType]],
        discriminant: str,
        arms: Mapping[int, Iterable[str]],
        default_arm: Iterable[str] | None,
    ) -> None:
        self.cls = cls
        types = dict(schema)
        self.disc_name = discriminant
        disc = types[discriminant]
        if not isinstance(disc, Primitive):
            raise TypeError("a union discriminant must be a primitive")
        self.disc = disc
        self.arms: dict[int, tuple[tuple[str, XdrType], ...]] = {
            int(k): tuple((n, types[n]) for n in v) for k, v in arms.items()
        }
        self.default_arm = (
            None if default_arm is None else tuple((n, types[n]) for n in default_arm)
        )
        self.schema = list(schema)
        self.min_size = 4
        self._dec: dict[int, Any] = {}
        self._enc: dict[int, Any] = {}
        for key, arm in [*self.arms.items(), (-1, self.default_arm)]:
            if arm is None:
                continue
            owner = f"{cls.__name__}[{key}]"
            ns: dict[str, Any] = {"cls": cls}
            dec, enc, names = _gen_fields(arm, ns, owner)
            kw = ", ".join(f"{n}={a}" for (n, _), a in zip(arm, names, strict=True))
            src = "\n".join(
                [
                    "def decode(d, buf, off):",
                    *dec,
                    f"    return cls({discriminant}=d{', ' if kw else ''}{kw}), off",
                    "def encode(v, parts):",
                    *enc,
                    "    return None",
                ]
            )
            ns = _compile(src, ns, owner)
            self._dec[key] = ns["decode"]
            self._enc[key] = ns["encode"]
        self._default_dec = self._dec.get(-1)
        self._default_enc = self._enc.get(-1)

    def __repr__(self) -> str:
        return f"union {self.cls.__name__}"

    def arm_for(self, d: int) -> tuple[tuple[str, XdrType], ...]:
        arm = self.arms.get(int(d), self.default_arm)
        if arm is None:
            raise XdrArgsError(f"{self.cls.__name__}: no arm for discriminant {int(d)}")
        return arm

    def encode(self, value: Any, parts: list[bytes | memoryview]) -> None:
        if type(value) is not self.cls:
            raise XdrArgsError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        d = getattr(value, self.disc_name)
        self.disc.encode(d, parts)
        fn = self._enc.get(d, self._default_enc)
        if fn is None:
            raise XdrArgsError(f"{self.cls.__name__}: no arm for discriminant {d}")
        try:
            fn(value, parts)
        except (AttributeError, TypeError) as e:
            raise XdrArgsError(f"{self.cls.__name__}: {e}") from None

    def decode(self, buf: memoryview, off: int) -> tuple[Any, int]:
        d, off = self.disc.decode(buf, off)
        fn = self._dec.get(d, self._default_dec)
        if fn is None:
            raise XdrArgsError(f"{self.cls.__name__}: no arm for discriminant {int(d)}")
        return fn(d, buf, off)


def xdr_struct(cls: type[T]) -> type[T]:
    """Make ``cls`` a slotted dataclass and attach its compiled XDR codec."""
    dc: Any = dataclasses.dataclass(slots=True)(cls)
    dc._xdr_codec = StructCodec(dc, _schema(dc))
    return dc


def xdr_union(
    discriminant: str,
    arms: Mapping[int, Iterable[str]],
    default: Iterable[str] | None = None,
) -> Callable[[type[T]], type[T]]:
    """Like ``xdr_struct`` for a union: ``arms`` maps discriminant values to field names."""

    def wrap(cls: type[T]) -> type[T]:
        dc: Any = dataclasses.dataclass(slots=True)(cls)
        dc._xdr_codec = UnionCodec(dc, _schema(dc), discriminant, arms, default)
        return dc

    return wrap


def codec_of(cls: type) -> XdrType:
    """The codec of an XDR dataclass (TypeError for anything else)."""
    return _xdr_type_of(cls)


def encode(obj: Any) -> list[bytes | memoryview]:
    """Encode an XDR dataclass instance to a list of pieces (join them, or send them as is)."""
    codec = getattr(type(obj), "_xdr_codec", None)
    if codec is None:
        raise TypeError(f"{type(obj).__name__} is not an XDR dataclass")
    parts: list[bytes | memoryview] = []
    codec.encode(obj, parts)
    return parts


def decode(cls: type[T], data: bytes | bytearray | memoryview) -> T:
    """Decode exactly one ``cls`` from ``data``; trailing bytes are an XdrError."""
    codec = _xdr_type_of(cls)
    buf = data if isinstance(data, memoryview) else memoryview(data)
    if buf.ndim != 1 or buf.itemsize != 1:
        buf = buf.cast("B")
    try:
        value, off = codec.decode(buf, 0)
    except XdrError:
        raise
    except (struct.error, ValueError, TypeError, OverflowError) as e:  # defence in depth
        raise XdrError(f"{cls.__name__}: {e}") from None
    if off != len(buf):
        raise XdrError(f"{cls.__name__}: {len(buf) - off} trailing bytes after the body")
    return value
