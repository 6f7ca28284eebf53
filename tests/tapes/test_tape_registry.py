"""DriveRegistry: configured names only, one owner per drive."""

from __future__ import annotations

from pathlib import Path

import pytest

from ndmpd.protocol.constants import Error, MtioOp, TapeOpenMode
from ndmpd.tapes import DriveRegistry, TapeError, image_path, parse_capacity


def registry(tmp_path: Path) -> DriveRegistry:
    return DriveRegistry([("nrst0a", 1 << 30, 0), ("nrst1a", 1 << 20, 512)], tmp_path)


def test_names_and_paths(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    assert reg.names() == ["nrst0a", "nrst1a"]
    d = reg.get("nrst1a")
    assert d.name == "nrst1a" and d.block_size == 512 and d.capacity == 1 << 20
    assert d.path == tmp_path / "tapes" / "nrst1a.img" == image_path(tmp_path, "nrst1a")


@pytest.mark.parametrize("name", ["nrst9a", "", "../nrst0a", "/dev/nst0", "tapes/nrst0a.img"])
def test_unknown_or_path_names_are_no_device(tmp_path: Path, name: str) -> None:
    reg = registry(tmp_path)
    for call in (lambda: reg.get(name), lambda: reg.acquire(name, "s"), lambda: reg.owner_of(name)):
        with pytest.raises(TapeError) as info:
            call()
        assert info.value.error == Error.NO_DEVICE_ERR


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_bad_configured_names_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        DriveRegistry([(name, 1 << 20, 0)], tmp_path)
    with pytest.raises(ValueError):
        image_path(tmp_path, name)


def test_duplicate_names_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DriveRegistry([("a", 1 << 20, 0), ("a", 1 << 20, 0)], tmp_path)


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    s1, s2 = object(), object()
    d = reg.acquire("nrst0a", s1)
    assert reg.owner_of("nrst0a") is s1
    assert reg.acquire("nrst0a", s1) is d  # the same owner again is fine
    with pytest.raises(TapeError) as info:
        reg.acquire("nrst0a", s2)
    assert info.value.error == Error.DEVICE_BUSY_ERR
    assert reg.acquire("nrst1a", s2) is reg.get("nrst1a")  # other drives are free
    assert reg.release("nrst0a", s2) is False
    assert reg.owner_of("nrst0a") is s1
    assert reg.release("nrst0a", s1) is True
    assert reg.owner_of("nrst0a") is None
    assert reg.acquire("nrst0a", s2) is d


def test_release_closes_with_implicit_filemark(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    owner = object()
    d = reg.acquire("nrst0a", owner)
    d.open(TapeOpenMode.RDWR)
    d.write(b"data")
    reg.release("nrst0a", owner)  # the session vanished without TAPE_CLOSE
    assert not d.is_open
    d.open(TapeOpenMode.READ)
    d.mtio(MtioOp.REW, 1)
    assert d.read(10) == b"data"
    with pytest.raises(TapeError) as info:
        d.read(10)
    assert info.value.error == Error.EOF_ERR
    d.close()


def test_close_all(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    for name in reg.names():
        reg.get(name).open(TapeOpenMode.RDWR)
    reg.close_all()
    assert not any(reg.get(n).is_open for n in reg.names())


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2T", 2 << 40),
        ("500G", 500 << 30),
        ("1048576", 1 << 20),
        ("10MiB", 10 << 20),
        ("4k", 4096),
        (4096, 4096),
    ],
)
def test_parse_capacity(text: str | int, value: int) -> None:
    assert parse_capacity(text) == value


@pytest.mark.parametrize("text", ["", "2X", "-1", "0", "1.5T", "T", True])
def test_parse_capacity_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_capacity(text)
