"""The TOML loader: defaults, the documented example, every validation error, round-trips."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndmpd.catalog.config import (
    Config,
    NdmpConfig,
    NodeConfig,
    RestConfig,
    SvmConfig,
    TapeConfig,
    VolumeConfig,
    format_size,
    load_config,
    parse_listen,
    parse_size,
)
from ndmpd.catalog.errors import ConfigError, DataPathError

TB = 1024**4

EXAMPLE = """
state_dir = "var/ndmpd"
[node]
name = "node1"                      # default: the host name
[ndmp]
listen = "0.0.0.0:10000"
mode = "svm"                        # or "node", as PATCH /api/protocols/ndmp
data_port_range = "18600-18699"     # TCP ports for mover/data listens
[rest]
listen = "0.0.0.0:8443"
tls = true                          # false: plain HTTP, for loopback development only
cert = ""                           # PEM files; empty: self-signed in state_dir
key = ""
[[svm]]
name = "svm1"
  [[svm.volume]]
  name = "vol1"
  path = "var/ndmpd/volumes/vol1"   # a user would write e.g. "/srv/projects"
[[tape]]
name = "nrst0a"                     # default: nrst0a..nrst3a
capacity = "2T"                     # end of medium past this many bytes
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ndmpd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.source is None
    assert config.state_dir == tmp_path / "var" / "ndmpd"
    assert config.node.name == socket.gethostname()
    assert config.ndmp == NdmpConfig("0.0.0.0", 10000, "svm", (18600, 18699))
    assert config.rest == RestConfig("0.0.0.0", 8443, True, None, None)
    assert config.svms == (
        SvmConfig("svm1", (VolumeConfig("vol1", tmp_path / "var/ndmpd/volumes/vol1"),)),
    )
    assert [t.name for t in config.tapes] == ["nrst0a", "nrst1a", "nrst2a", "nrst3a"]
    assert all(t.capacity == 2 * TB and t.block_size == 0 for t in config.tapes)


def test_state_dir_override_moves_the_default_volume(tmp_path: Path) -> None:
    config = load_config(None, tmp_path / "state")
    assert config.state_dir == tmp_path / "state"
    assert config.svms[0].volumes[0].path == tmp_path / "state" / "volumes" / "vol1"


def test_state_dir_override_beats_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/nowhere"\n')
    assert load_config(path, tmp_path / "s").state_dir == tmp_path / "s"
    assert load_config(path).state_dir == Path("/nowhere")


def test_empty_file_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "")
    assert load_config(path) == load_config()
    assert load_config(path).source == path


def test_documented_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, EXAMPLE))
    assert config.node == NodeConfig("node1")
    assert config.state_dir == tmp_path / "var/ndmpd"
    assert config.svms[0].volumes[0].path == tmp_path / "var/ndmpd/volumes/vol1"
    assert config.tapes == (TapeConfig("nrst0a", 2 * TB),)
    assert config.ndmp.data_port_range == (18600, 18699)


def test_full_file(tmp_path: Path) -> None:
    text = f"""
state_dir = "{tmp_path}/state"
[node]
name = "filer-a"
[ndmp]
listen = "[::1]:0"
mode = "node"
data_port_range = "20000-20010"
[rest]
listen = "127.0.0.1:0"
tls = false
cert = "{tmp_path}/c.pem"
key = "{tmp_path}/k.pem"
[[svm]]
name = "svm_a"
  [[svm.volume]]
  name = "projects"
  path = "/srv/projects"
  [[svm.volume]]
  name = "home"
  path = "/srv/home/"
[[svm]]
name = "svm-b"
  [[svm.volume]]
  name = "projects"
  path = "/srv/b"
[[tape]]
name = "drive.0"
capacity = "500G"
block_size = "64K"
speed = "300M"
[[tape]]
name = "nrst1a"
capacity = 10485760
"""
    config = load_config(write(tmp_path, text))
    assert config.state_dir == tmp_path / "state"
    assert config.ndmp == NdmpConfig("::1", 0, "node", (20000, 20010))
    assert config.rest == RestConfig("127.0.0.1", 0, False, tmp_path / "c.pem", tmp_path / "k.pem")
    assert [s.name for s in config.svms] == ["svm_a", "svm-b"]
    assert config.svms[0].volumes[1] == VolumeConfig("home", Path("/srv/home"))
    assert config.tapes == (
        TapeConfig("drive.0", 500 * 1024**3, 64 * 1024, 300 * 1024**2),
        TapeConfig("nrst1a", 10 * 1024**2),
    )
    assert config.svm("svm-b") is config.svms[1]
    assert config.svm("nope") is None
    assert config.tape("nrst1a") == config.tapes[1]


def test_relative_volume_path_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[[svm]]\nname="s"\n[[svm.volume]]\nname="v"\npath="data/v"\n')
    monkeypatch.chdir(tmp_path / "..")
    config = load_config(path)
    assert config.svms[0].volumes[0].path == tmp_path.parent / "data" / "v"


# Every error names the file and the dotted key.
BAD = [
    ('colour = "red"\n', "colour", "unknown key"),
    ('[ndmp]\nlisten = "x"\n', "ndmp.listen", 'expected HOST:PORT (or [IPv6]:PORT), got "x"'),
    ("[ndmp]\nlisten = 10000\n", "ndmp.listen", "expected a string, got 10000"),
    ('[ndmp]\nlisten = "0.0.0.0:70000"\n', "ndmp.listen", "out of range"),
    ('[ndmp]\nlisten = "0.0.0.0:-1"\n', "ndmp.listen", "expected HOST:PORT"),
    ('[ndmp]\nlisten = "[::zz]:1"\n', "ndmp.listen", "invalid IPv6 address"),
    ('[ndmp]\nlisten = "::1:10000"\n', "ndmp.listen", "expected HOST:PORT"),
    ('[ndmp]\nlisten = "a b:1"\n', "ndmp.listen", "invalid host"),
    ('[ndmp]\nmode = "cluster"\n', "ndmp.mode", 'expected "svm" or "node"'),
    ("[ndmp]\nport = 1\n", "ndmp.port", "unknown key"),
    ('[ndmp]\ndata_port_range = "9-1"\n', "ndmp.data_port_range", "LOW must not exceed HIGH"),
    ('[ndmp]\ndata_port_range = "1-70000"\n', "ndmp.data_port_range", "1-65535"),
    ('[ndmp]\ndata_port_range = "a-b"\n', "ndmp.data_port_range", "LOW-HIGH"),
    ('[ndmp]\ndata_port_range = "9990-10010"\n', "ndmp.data_port_range", "ndmp.listen port"),
    ('[rest]\nlisten = "0.0.0.0:10000"\n', "rest.listen", "also ndmp.listen"),
    ("[rest]\ntls = 1\n", "rest.tls", "expected true or false, got 1"),
    ('[rest]\ncert = "/c.pem"\n', "rest.key", "must be given together"),
    ('[rest]\nkey = "/k.pem"\n', "rest.cert", "must be given together"),
    ("ndmp = 3\n", "ndmp", "expected a table, got 3"),
    ("[node]\nname = 5\n", "node.name", "expected a string"),
    ('[node]\nname = " "\n', "node.name", "invalid node name"),
    ("state_dir = 5\n", "state_dir", "expected a string"),
    ('state_dir = ""\n', "state_dir", "empty string"),
    ("svm = []\n", "svm", "at least one"),
    ('svm = "svm1"\n', "svm", "array of tables"),
    ("[[svm]]\n", "svm[0].name", "missing"),
    ('[[svm]]\nname = "a/b"\n', "svm[0].name", "invalid SVM name"),
    ('[[svm]]\nname = ".."\n', "svm[0].name", "invalid SVM name"),
    ('[[svm]]\nname = "s"\n[[svm]]\nname = "s"\n', "svm[1].name", 'duplicate SVM name "s"'),
    ('[[svm]]\nname = "s"\nvolumes = []\n', "svm[0].volumes", "unknown key"),
    ('[[svm]]\nname = "s"\n[[svm.volume]]\nname = "v"\n', "svm[0].volume[0].path", "missing"),
    (
        '[[svm]]\nname = "s"\n[[svm.volume]]\nname = "v"\npath = ""\n',
        "svm[0].volume[0].path",
        "empty string",
    ),
    (
        '[[svm]]\nname = "s"\n[[svm.volume]]\nname = "v"\npath = 3\n',
        "svm[0].volume[0].path",
        "expected a string",
    ),
    (
        '[[svm]]\nname = "s"\n[[svm.volume]]\nname = "v"\npath = "/a\\u0000b"\n',
        "svm[0].volume[0].path",
        "NUL",
    ),
    (
        '[[svm]]\nname="s"\n[[svm.volume]]\nname="v"\npath="/a"\n[[svm.volume]]\nname="v"\npath="/b"\n',
        "svm[0].volume[1].name",
        'duplicate volume name "v"',
    ),
    ('[[tape]]\ncapacity = "2T"\n', "tape[0].name", "missing"),
    ('[[tape]]\nname = "/dev/nst0"\n', "tape[0].name", "invalid drive name"),
    ('[[tape]]\nname = "a b"\n', "tape[0].name", "invalid drive name"),
    ('[[tape]]\nname = ".hidden"\n', "tape[0].name", "invalid drive name"),
    ('[[tape]]\nname = "-x"\n', "tape[0].name", "invalid drive name"),
    ('[[tape]]\nname = "t"\n[[tape]]\nname = "t"\n', "tape[1].name", 'duplicate drive name "t"'),
    ('[[tape]]\nname = "t"\ncapacity = "2X"\n', "tape[0].capacity", 'got "2X"'),
    ('[[tape]]\nname = "t"\ncapacity = 0\n', "tape[0].capacity", "at least 1"),
    ('[[tape]]\nname = "t"\ncapacity = -5\n', "tape[0].capacity", "non-negative"),
    ('[[tape]]\nname = "t"\ncapacity = 2.5\n', "tape[0].capacity", "expected a size"),
    ('[[tape]]\nname = "t"\ncapacity = true\n', "tape[0].capacity", "expected a size"),
    ('[[tape]]\nname = "t"\nblock_size = "4G"\n', "tape[0].block_size", "at most"),
    ('[[tape]]\nname = "t"\nlabel = "x"\n', "tape[0].label", "unknown key"),
    ('[[tape]]\nname = "t"\nspeed = "fast"\n', "tape[0].speed", 'got "fast"'),
    ('[[tape]]\nname = "t"\nspeed = -1\n', "tape[0].speed", "non-negative"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BAD)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message
    assert "\n" not in message


def test_error_message_format_of_the_brief(tmp_path: Path) -> None:
    path = write(tmp_path, '[ndmp]\nlisten = "x"\n')
    with pytest.raises(ConfigError, match=r'ndmp\.listen: expected HOST:PORT.*got "x"$'):
        load_config(path)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read: No such file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"ndmpd\.toml: invalid TOML: "):
        load_config(write(tmp_path, "[ndmp\n"))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'state_dir = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"cannot read"):
        load_config(tmp_path)  # a directory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:10000", ("0.0.0.0", 10000)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:10000", ("::1", 10000)),
        ("[::]:8443", ("::", 8443)),
        ("[fe80::1%eth0]:1", ("fe80::1%eth0", 1)),
        ("*:99", ("0.0.0.0", 99)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", ":1", "host", "host:", "[::1]", "[::1]10", "h:1x", "h:٣"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


@pytest.mark.parametrize(
    ("value", "size"),
    [("2T", 2 * TB), ("500G", 500 * 1024**3), ("10M", 10 * 1024**2), ("4k", 4096),
     ("1TiB", TB), ("3GB", 3 * 1024**3), ("512", 512), (7, 7), (" 2 T ", 2 * TB)],
)  # fmt: skip
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@given(st.integers(min_value=0, max_value=2**62))
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


@given(st.text(max_size=12))
def test_parse_size_never_raises_unexpected(text: str) -> None:
    try:
        assert parse_size(text) >= 0
    except ValueError:
        pass


# ---------------------------------------------------------------------------------------------
# Round-trips through to_toml


def test_default_round_trip(tmp_path: Path) -> None:
    config = load_config(None, tmp_path / "st")
    again = load_config(write(tmp_path, config.to_toml()))
    assert again == config


_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,11}", fullmatch=True)
_texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
    min_size=1,
    max_size=20,
)
_abs_paths = st.lists(
    _texts.filter(lambda s: "/" not in s and s not in (".", "..")), min_size=1, max_size=3
).map(lambda parts: Path("/" + "/".join(parts)))
_hosts = st.sampled_from(["0.0.0.0", "127.0.0.1", "::1", "::", "localhost", "fe80::1%lo"])


def _unique(items: list, key) -> list:  # type: ignore[type-arg, no-untyped-def]
    seen, out = set(), []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            out.append(item)
    return out


@st.composite
def configs(draw: st.DrawFn) -> Config:
    lo = draw(st.integers(20000, 30000))
    svms = _unique(
        draw(
            st.lists(
                st.builds(
                    SvmConfig,
                    _names,
                    st.lists(st.builds(VolumeConfig, _names, _abs_paths), max_size=3).map(
                        lambda vs: tuple(_unique(vs, lambda v: v.name))
                    ),
                ),
                min_size=1,
                max_size=3,
            )
        ),
        lambda s: s.name,
    )
    tapes = _unique(
        draw(
            st.lists(
                st.builds(
                    TapeConfig,
                    _names.filter(lambda n: n[0].isalnum()),
                    st.integers(1, 2**50),
                    st.integers(0, 2**31 - 1),
                ),
                max_size=4,
            )
        ),
        lambda t: t.name,
    )
    tls_files = draw(st.booleans())
    return Config(
        source=None,
        state_dir=draw(_abs_paths),
        node=NodeConfig(draw(_texts.filter(lambda s: s.strip() and s.isprintable()))),
        ndmp=NdmpConfig(
            draw(_hosts), draw(st.integers(1, 19999)), draw(st.sampled_from(["svm", "node"])),
            (lo, draw(st.integers(lo, 30000))),
        ),
        rest=RestConfig(
            draw(_hosts), draw(st.integers(30001, 65535)), draw(st.booleans()),
            draw(_abs_paths) if tls_files else None, draw(_abs_paths) if tls_files else None,
        ),
        svms=tuple(svms),
        tapes=tuple(tapes),
    )  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(configs())
def test_to_toml_round_trip(tmp_path_factory: pytest.TempPathFactory, config: Config) -> None:
    path = tmp_path_factory.mktemp("rt") / "c.toml"
    path.write_text(config.to_toml(), encoding="utf-8")
    loaded = load_config(path)
    if not config.tapes:  # an absent [[tape]] list means the default drives
        config = Config(**{**config.__dict__, "tapes": loaded.tapes})
        assert [t.name for t in loaded.tapes] == ["nrst0a", "nrst1a", "nrst2a", "nrst3a"]
    assert loaded == config


# ---------------------------------------------------------------------------------------------
# Data paths


@pytest.fixture
def two_svms(tmp_path: Path) -> Config:
    text = """
[[svm]]
name = "svm1"
  [[svm.volume]]
  name = "vol1"
  path = "/srv/v1"
  [[svm.volume]]
  name = "root"
  path = "/"
[[svm]]
name = "svm2"
  [[svm.volume]]
  name = "vol1"
  path = "/srv/other/"
"""
    return load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("path", "svm", "volume", "relative", "absolute"),
    [
        ("/svm1/vol1", "svm1", "vol1", b"", b"/srv/v1"),
        ("/svm1/vol1/", "svm1", "vol1", b"", b"/srv/v1"),
        ("/svm1/vol1/sub/dir", "svm1", "vol1", b"sub/dir", b"/srv/v1/sub/dir"),
        ("//svm1///vol1//sub//dir//", "svm1", "vol1", b"sub/dir", b"/srv/v1/sub/dir"),
        ("/svm1/vol1/./a/.", "svm1", "vol1", b"a", b"/srv/v1/a"),
        ("/svm2/vol1/x", "svm2", "vol1", b"x", b"/srv/other/x"),
        ("/svm1/root/etc", "svm1", "root", b"etc", b"/etc"),
        ("/svm1/root", "svm1", "root", b"", b"/"),
        ("/svm1/vol1/caf\udce9", "svm1", "vol1", b"caf\xe9", b"/srv/v1/caf\xe9"),
        (b"/svm1/vol1/caf\xe9/...", "svm1", "vol1", b"caf\xe9/...", b"/srv/v1/caf\xe9/..."),
    ],
)
def test_resolve_data_path(
    two_svms: Config,
    path: str | bytes,
    svm: str,
    volume: str,
    relative: bytes,
    absolute: bytes,
) -> None:
    dp = two_svms.resolve_data_path(path)
    assert (dp.svm.name, dp.volume.name, dp.relative, dp.absolute) == (
        svm,
        volume,
        relative,
        absolute,
    )
    assert dp.path.startswith(f"/{svm}/{volume}")


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("", "not of the form"),
        ("svm1/vol1", "not of the form"),
        ("/", "not of the form"),
        ("/svm1", "not of the form"),
        ("/svm1/", "not of the form"),
        ("/svm9/vol1", "unknown SVM 'svm9'"),
        ("/svm1/vol9/x", "unknown volume 'vol9' in SVM 'svm1'"),
        ("/svm1/vol1/../../etc", "'..'"),
        ("/svm1/vol1/a/..", "'..'"),
        ("/svm1/../svm2/vol1", "'..'"),
        ("/svm1/vol1/a\0b", "NUL"),
    ],
)
def test_resolve_data_path_rejects(two_svms: Config, path: str, fragment: str) -> None:
    with pytest.raises(DataPathError, match=None) as info:
        two_svms.resolve_data_path(path)
    assert fragment in str(info.value)


@given(st.text(alphabet="/.ab\udce9", max_size=30))
def test_resolved_paths_stay_inside_the_volume(path: str) -> None:
    config = load_config(None, "/tmp/ndmpd-never-created")
    try:
        dp = config.resolve_data_path("/svm1/vol1/" + path)
    except DataPathError:
        assert ".." in path.split("/")
        return
    root = os.fsencode(config.svms[0].volumes[0].path)
    assert dp.absolute == root or dp.absolute.startswith(root + b"/")
    assert b".." not in dp.absolute.split(b"/")
    assert b"//" not in dp.absolute


# ---------------------------------------------------------------------------------------------
# Arbitrary (well-formed TOML) documents: a Config or a ConfigError, never anything else.

_KEYS = ["state_dir", "node", "name", "ndmp", "listen", "mode", "data_port_range", "rest",
         "tls", "cert", "key", "svm", "volume", "path", "tape", "capacity", "block_size",
         "speed", "junk"]  # fmt: skip
_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["svm1", "node", "2T", "0.0.0.0:0", "[::1]:1", "1-2", "", "/x", "..", "a b"]),
    _texts,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4),
    ),
    max_leaves=12,
)


def _inline(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{k} = {_inline(v)}" for k, v in value.items()) + "}"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _values, max_size=5))
def test_any_document_gives_config_or_config_error(
    tmp_path_factory: pytest.TempPathFactory, doc: dict[str, object]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "c.toml"
    path.write_text("".join(f"{k} = {_inline(v)}\n" for k, v in doc.items()), encoding="utf-8")
    try:
        config = load_config(path, "/tmp/ndmpd-never-created")
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    assert config.svms and all(isinstance(t.capacity, int) for t in config.tapes)


@given(_hosts, st.integers(0, 65535))
def test_listen_round_trip(host: str, port: int) -> None:
    text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert parse_listen(text) == (host, port)


@given(st.text(max_size=20))
def test_parse_listen_only_raises_value_error(text: str) -> None:
    try:
        host, port = parse_listen(text)
    except ValueError:
        return
    assert 0 <= port <= 65535 and host
