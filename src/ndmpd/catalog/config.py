"""Load and validate the TOML configuration; map ONTAP-style data paths onto configured volumes.

Every key is optional; what is missing comes from the embedded default of DESIGN.md. Errors name
the file and the dotted key so a user can fix the file without reading code.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ndmpd.catalog.errors import ConfigError, DataPathError

__all__ = [
    "DEFAULT_STATE_DIR",
    "Config",
    "ConfigError",
    "DataPath",
    "DataPathError",
    "NdmpConfig",
    "NodeConfig",
    "RestConfig",
    "SvmConfig",
    "TapeConfig",
    "VolumeConfig",
    "format_size",
    "load_config",
    "parse_size",
]

DEFAULT_STATE_DIR = "var/ndmpd"
DEFAULT_NDMP_LISTEN = ("0.0.0.0", 10000)
DEFAULT_REST_LISTEN = ("0.0.0.0", 8443)
DEFAULT_DATA_PORTS = (18600, 18699)
DEFAULT_TAPE_CAPACITY = 2 * 1024**4
DEFAULT_TAPES = ("nrst0a", "nrst1a", "nrst2a", "nrst3a")
MAX_BLOCK_SIZE = 2**31 - 1

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
# Drive names become image file names (ndmpd.tapes.paths): no leading dot or dash, 64 at most.
DRIVE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SIZE_RE = re.compile(r"\s*([0-9]+)\s*([KMGTP]?)(?:I?B)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_HOST_RE = re.compile(r"[A-Za-z0-9_.-]+|\*")

Mode = Literal["svm", "node"]


@dataclass(frozen=True)
class NodeConfig:
    name: str


@dataclass(frozen=True)
class NdmpConfig:
    listen_host: str
    listen_port: int
    mode: Mode
    data_port_range: tuple[int, int]


@dataclass(frozen=True)
class RestConfig:
    listen_host: str
    listen_port: int
    tls: bool
    cert: Path | None
    key: Path | None


@dataclass(frozen=True)
class VolumeConfig:
    name: str
    path: Path


@dataclass(frozen=True)
class SvmConfig:
    name: str
    volumes: tuple[VolumeConfig, ...]

    def volume(self, name: str) -> VolumeConfig | None:
        for vol in self.volumes:
            if vol.name == name:
                return vol
        return None


@dataclass(frozen=True)
class TapeConfig:
    name: str
    capacity: int
    block_size: int = 0
    speed: int = 0  # bytes per second the drive takes at most (0: as fast as the disk)


@dataclass(frozen=True)
class DataPath:
    """A DMA path resolved to a volume; `relative` has no leading slash (b"" = the volume root)."""

    svm: SvmConfig
    volume: VolumeConfig
    relative: bytes
    absolute: bytes

    @property
    def path(self) -> str:
        """The normalised ONTAP-style path, e.g. `/svm1/vol1/sub/dir`."""
        tail = "/" + os.fsdecode(self.relative) if self.relative else ""
        return f"/{self.svm.name}/{self.volume.name}{tail}"


@dataclass(frozen=True)
class Config:
    source: Path | None = field(compare=False)
    state_dir: Path
    node: NodeConfig
    ndmp: NdmpConfig
    rest: RestConfig
    svms: tuple[SvmConfig, ...]
    tapes: tuple[TapeConfig, ...]

    def svm(self, name: str) -> SvmConfig | None:
        for svm in self.svms:
            if svm.name == name:
                return svm
        return None

    def tape(self, name: str) -> TapeConfig | None:
        for tape in self.tapes:
            if tape.name == name:
                return tape
        return None

    def resolve_data_path(self, path: str | bytes) -> DataPath:
        """Map `/<svm>/<volume>[/path]` lexically onto a volume; `..` is refused, never resolved."""
        text = os.fsdecode(path) if isinstance(path, bytes) else path
        if not isinstance(text, str):
            raise DataPathError(f"path must be a string, got {type(path).__name__}")
        if "\0" in text:
            raise DataPathError("path contains a NUL character")
        if not text.startswith("/"):
            raise DataPathError(f"path {text!r} is not of the form /<svm>/<volume>[/path]")
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise DataPathError(f"path {text!r} contains a '..' component")
        if len(parts) < 2:
            raise DataPathError(f"path {text!r} is not of the form /<svm>/<volume>[/path]")
        svm = self.svm(parts[0])
        if svm is None:
            raise DataPathError(f"path {text!r}: unknown SVM {parts[0]!r}")
        volume = svm.volume(parts[1])
        if volume is None:
            raise DataPathError(f"path {text!r}: unknown volume {parts[1]!r} in SVM {svm.name!r}")
        relative = b"/".join(os.fsencode(p) for p in parts[2:])
        root = os.fsencode(volume.path)
        absolute = root.rstrip(b"/") + b"/" + relative if relative else root
        return DataPath(svm=svm, volume=volume, relative=relative, absolute=absolute)

    def to_toml(self) -> str:
        """The effective configuration as TOML that `load_config` reads back to an equal Config."""
        out: list[str] = [
            "# ndmpd effective configuration",
            f"state_dir = {_toml_str(os.fspath(self.state_dir))}",
            "",
            "[node]",
            f"name = {_toml_str(self.node.name)}",
            "",
            "[ndmp]",
            f"listen = {_toml_str(_format_listen(self.ndmp.listen_host, self.ndmp.listen_port))}",
            f"mode = {_toml_str(self.ndmp.mode)}",
            f"data_port_range = {_toml_str(_format_range(self.ndmp.data_port_range))}",
            "",
            "[rest]",
            f"listen = {_toml_str(_format_listen(self.rest.listen_host, self.rest.listen_port))}",
            f"tls = {'true' if self.rest.tls else 'false'}",
            f"cert = {_toml_str(os.fspath(self.rest.cert) if self.rest.cert else '')}",
            f"key = {_toml_str(os.fspath(self.rest.key) if self.rest.key else '')}",
        ]
        for svm in self.svms:
            out += ["", "[[svm]]", f"name = {_toml_str(svm.name)}"]
            if not svm.volumes:
                out.append("volume = []")
            for vol in svm.volumes:
                out += [
                    "  [[svm.volume]]",
                    f"  name = {_toml_str(vol.name)}",
                    f"  path = {_toml_str(os.fspath(vol.path))}",
                ]
        for tape in self.tapes:
            out += [
                "",
                "[[tape]]",
                f"name = {_toml_str(tape.name)}",
                f"capacity = {_toml_size(tape.capacity)}",
            ]
            if tape.block_size:
                out.append(f"block_size = {_toml_size(tape.block_size)}")
            if tape.speed:
                out.append(f"speed = {_toml_size(tape.speed)}")
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path | None = None, state_dir: str | Path | None = None) -> Config:
    """Read `path` (None: the embedded default); `state_dir` overrides the file's `state_dir`."""
    data: dict[str, Any] = {}
    source: Path | None = None
    label = "<default config>"
    if path is not None:
        label = os.fspath(path)
        if not label:
            raise ConfigError("--config: empty file name")
        source = Path(os.path.abspath(label))
        try:
            raw = Path(label).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{label}: not UTF-8 text: {exc.reason}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{label}: invalid TOML: {exc}") from None
    return _Loader(label).build(data, state_dir, source)


T = TypeVar("T")


class _Loader:
    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.label}: {key}: {message}")

    # -- generic helpers ------------------------------------------------------------------

    def table(self, value: Any, key: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_show(value)}")
        for k in value:
            if k not in allowed:
                raise self.error(_join(key, k), "unknown key")
        return value

    def get(
        self,
        table: Mapping[str, Any],
        prefix: str,
        name: str,
        kind: type[T],
        default: T,
        what: str,
    ) -> T:
        if name not in table:
            return default
        value = table[name]
        # bool is an int subclass; never accept it where a number is meant.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(_join(prefix, name), f"expected {what}, got {_show(value)}")
        return value

    def string(
        self, table: Mapping[str, Any], prefix: str, name: str, default: str | None
    ) -> str | None:
        return self.get(table, prefix, name, str, default, "a string")  # type: ignore[arg-type]

    def path(self, value: str, key: str, allow_empty: bool = False) -> Path | None:
        if value == "":
            if allow_empty:
                return None
            raise self.error(key, "expected a path, got an empty string")
        if "\0" in value:
            raise self.error(key, "path contains a NUL character")
        return Path(os.path.abspath(value))

    def name(self, value: Any, key: str, what: str) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"expected a {what} name (string), got {_show(value)}")
        if what == "drive":
            if not DRIVE_NAME_RE.fullmatch(value):
                raise self.error(
                    key,
                    f"invalid drive name {_show(value)}: up to 64 letters, digits, '_', '.', '-',"
                    " starting with a letter or digit",
                )
        elif not NAME_RE.fullmatch(value) or value in (".", ".."):
            raise self.error(
                key, f"invalid {what} name {_show(value)}: use letters, digits, '_', '.', '-'"
            )
        return value

    def size(self, value: Any, key: str, minimum: int) -> int:
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if size < minimum:
            raise self.error(key, f"must be at least {minimum}, got {_show(value)}")
        if key.endswith("block_size") and size > MAX_BLOCK_SIZE:
            raise self.error(key, f"must be at most {MAX_BLOCK_SIZE}, got {_show(value)}")
        return size

    def listen(self, value: str, key: str) -> tuple[str, int]:
        try:
            return parse_listen(value)
        except ValueError as exc:
            raise self.error(key, f"{exc}, got {_show(value)}") from None

    def array_of_tables(self, data: Mapping[str, Any], key: str) -> list[Any] | None:
        if key not in data:
            return None
        value = data[key]
        if not isinstance(value, list):
            raise self.error(key, f"expected an array of tables ([[{key}]]), got {_show(value)}")
        return value

    # -- sections -------------------------------------------------------------------------

    def build(
        self, data: Mapping[str, Any], state_override: str | Path | None, source: Path | None
    ) -> Config:
        self.table(data, "", {"state_dir", "node", "ndmp", "rest", "svm", "tape"})
        if state_override is not None:
            text = os.fspath(state_override)
            if not text or "\0" in text:
                raise ConfigError(f"--state-dir: invalid directory {text!r}")
            state_dir = Path(os.path.abspath(text))
        else:
            text = self.string(data, "", "state_dir", DEFAULT_STATE_DIR) or ""
            state_dir = self.path(text, "state_dir")  # type: ignore[assignment]
        assert state_dir is not None
        node = self.node(data.get("node", {}))
        ndmp = self.ndmp(data.get("ndmp", {}))
        rest = self.rest(data.get("rest", {}))
        svms = self.svms(data, state_dir)
        tapes = self.tapes(data)
        lo, hi = ndmp.data_port_range
        for port, key in ((ndmp.listen_port, "ndmp.listen"), (rest.listen_port, "rest.listen")):
            if port and lo <= port <= hi:
                raise self.error("ndmp.data_port_range", f"contains the {key} port {port}")
        if ndmp.listen_port and ndmp.listen_port == rest.listen_port:
            raise self.error("rest.listen", f"port {rest.listen_port} is also ndmp.listen's")
        return Config(
            source=source,
            state_dir=state_dir,
            node=node,
            ndmp=ndmp,
            rest=rest,
            svms=svms,
            tapes=tapes,
        )

    def node(self, value: Any) -> NodeConfig:
        table = self.table(value, "node", {"name"})
        name = self.string(table, "node", "name", None)
        if name is None:
            name = socket.gethostname() or "node1"
        elif not name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise self.error("node.name", f"invalid node name {_show(name)}")
        return NodeConfig(name=name)

    def ndmp(self, value: Any) -> NdmpConfig:
        table = self.table(value, "ndmp", {"listen", "mode", "data_port_range"})
        host, port = DEFAULT_NDMP_LISTEN
        listen = self.string(table, "ndmp", "listen", None)
        if listen is not None:
            host, port = self.listen(listen, "ndmp.listen")
        mode = self.string(table, "ndmp", "mode", "svm")
        if mode not in ("svm", "node"):
            raise self.error("ndmp.mode", f'expected "svm" or "node", got {_show(mode)}')
        ports = DEFAULT_DATA_PORTS
        if "data_port_range" in table:
            raw = table["data_port_range"]
            try:
                ports = parse_port_range(raw)
            except ValueError as exc:
                raise self.error("ndmp.data_port_range", f"{exc}, got {_show(raw)}") from None
        return NdmpConfig(listen_host=host, listen_port=port, mode=mode, data_port_range=ports)  # type: ignore[arg-type]

    def rest(self, value: Any) -> RestConfig:
        table = self.table(value, "rest", {"listen", "tls", "cert", "key"})
        host, port = DEFAULT_REST_LISTEN
        listen = self.string(table, "rest", "listen", None)
        if listen is not None:
            host, port = self.listen(listen, "rest.listen")
        tls = self.get(table, "rest", "tls", bool, True, "true or false")
        cert = self.path(self.string(table, "rest", "cert", "") or "", "rest.cert", True)
        key = self.path(self.string(table, "rest", "key", "") or "", "rest.key", True)
        if (cert is None) != (key is None):
            missing = "rest.key" if key is None else "rest.cert"
            raise self.error(missing, "rest.cert and rest.key must be given together")
        return RestConfig(listen_host=host, listen_port=port, tls=tls, cert=cert, key=key)

    def svms(self, data: Mapping[str, Any], state_dir: Path) -> tuple[SvmConfig, ...]:
        raw = self.array_of_tables(data, "svm")
        if raw is None:
            vol = VolumeConfig(name="vol1", path=state_dir / "volumes" / "vol1")
            return (SvmConfig(name="svm1", volumes=(vol,)),)
        if not raw:
            raise self.error("svm", "at least one [[svm]] is required")
        svms: list[SvmConfig] = []
        seen: set[str] = set()
        for i, item in enumerate(raw):
            key = f"svm[{i}]"
            table = self.table(item, key, {"name", "volume"})
            if "name" not in table:
                raise self.error(f"{key}.name", "missing (every [[svm]] needs a name)")
            name = self.name(table["name"], f"{key}.name", "SVM")
            if name in seen:
                raise self.error(f"{key}.name", f"duplicate SVM name {_show(name)}")
            seen.add(name)
            svms.append(SvmConfig(name=name, volumes=self.volumes(table, key)))
        return tuple(svms)

    def volumes(self, svm_table: Mapping[str, Any], prefix: str) -> tuple[VolumeConfig, ...]:
        raw = self.array_of_tables(svm_table, "volume")
        if raw is None:
            return ()
        volumes: list[VolumeConfig] = []
        seen: set[str] = set()
        for j, item in enumerate(raw):
            key = f"{prefix}.volume[{j}]"
            table = self.table(item, key, {"name", "path"})
            for required in ("name", "path"):
                if required not in table:
                    raise self.error(f"{key}.{required}", "missing (every volume needs it)")
            name = self.name(table["name"], f"{key}.name", "volume")
            if name in seen:
                raise self.error(f"{key}.name", f"duplicate volume name {_show(name)}")
            seen.add(name)
            path_text = self.string(table, key, "path", None) or ""
            path = self.path(path_text, f"{key}.path")
            assert path is not None
            volumes.append(VolumeConfig(name=name, path=path))
        return tuple(volumes)

    def tapes(self, data: Mapping[str, Any]) -> tuple[TapeConfig, ...]:
        raw = self.array_of_tables(data, "tape")
        if raw is None:
            return tuple(TapeConfig(name=n, capacity=DEFAULT_TAPE_CAPACITY) for n in DEFAULT_TAPES)
        tapes: list[TapeConfig] = []
        seen: set[str] = set()
        for i, item in enumerate(raw):
            key = f"tape[{i}]"
            table = self.table(item, key, {"name", "capacity", "block_size", "speed"})
            if "name" not in table:
                raise self.error(f"{key}.name", "missing (every [[tape]] needs a name)")
            name = self.name(table["name"], f"{key}.name", "drive")
            if name in seen:
                raise self.error(f"{key}.name", f"duplicate drive name {_show(name)}")
            seen.add(name)
            capacity = DEFAULT_TAPE_CAPACITY
            if "capacity" in table:
                capacity = self.size(table["capacity"], f"{key}.capacity", 1)
            block = 0
            if "block_size" in table:
                block = self.size(table["block_size"], f"{key}.block_size", 0)
            speed = 0
            if "speed" in table:
                speed = self.size(table["speed"], f"{key}.speed", 0)
            tapes.append(TapeConfig(name=name, capacity=capacity, block_size=block, speed=speed))
        return tuple(tapes)


# ---------------------------------------------------------------------------------------------
# Small parsers, public because the CLI and tests use them too


def parse_size(value: Any) -> int:
    """`"2T"`, `"500G"`, `"10M"`, `"4K"`, `"512"` or an int; binary multiples (T = 2**40)."""
    if isinstance(value, bool):
        raise ValueError(f'expected a size such as "2T" or 1048576, got {_show(value)}')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a non-negative size, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2).upper()]
    raise ValueError(f'expected a size such as "2T", "500G", "10M" or 1048576, got {_show(value)}')


def format_size(size: int) -> str:
    """The shortest exact unit form: 2**41 -> "2T"; not a multiple of 1K -> the plain number."""
    for unit in ("P", "T", "G", "M", "K"):
        mult = _UNITS[unit]
        if size and size % mult == 0:
            return f"{size // mult}{unit}"
    return str(size)


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT`; port 0 means an ephemeral port (tests)."""
    bad = ValueError("expected HOST:PORT (or [IPv6]:PORT)")
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise bad
        host, port_text = value[1:end], value[end + 2 :]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r}") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host or ":" in host:
            raise bad
        if not _HOST_RE.fullmatch(host):
            raise ValueError(f"invalid host {host!r}")
        if host == "*":
            host = "0.0.0.0"
    if not port_text.isascii() or not port_text.isdigit():
        raise bad
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} out of range 0-65535")
    return host, port


def parse_port_range(value: Any) -> tuple[int, int]:
    """`"18600-18699"` or a single port; `"0-0"` (or 0) lets the kernel choose (tests)."""
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", value)
        if not m:
            raise ValueError('expected "LOW-HIGH"')
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
    else:
        raise ValueError('expected "LOW-HIGH"')
    if (lo, hi) == (0, 0):
        return (0, 0)
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
        raise ValueError("ports must be in 1-65535")
    if lo > hi:
        raise ValueError("LOW must not exceed HIGH")
    return (lo, hi)


def _format_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _format_range(ports: tuple[int, int]) -> str:
    return f"{ports[0]}-{ports[1]}"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _toml_size(size: int) -> str:
    text = format_size(size)
    return text if text.isdigit() else _toml_str(text)


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ConfigError(f"cannot write {text!r} as TOML: it is not valid Unicode")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)
