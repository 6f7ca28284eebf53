"""export_file: byte-identical tape files to a file, a pipe and a Python stream."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from ndmpd.protocol.constants import Error, MtioOp, TapeOpenMode
from ndmpd.tapes import TapeDrive, TapeError, export_file
from ndmpd.tapes.export import COPY_STEP


def write_tape(path: Path, files: list[list[bytes]], marks_after_last: int = 2) -> None:
    d = TapeDrive("t", path, 1 << 34, durable=False, write_buffer=1 << 20)
    d.open(TapeOpenMode.RDWR)
    for i, f in enumerate(files):
        for r in f:
            d.write(r)
        d.mtio(MtioOp.EOF, marks_after_last if i == len(files) - 1 else 1)
    d.close()


@pytest.fixture
def tape(tmp_path: Path) -> tuple[Path, list[list[bytes]]]:
    files = [
        [os.urandom(10240) for _ in range(700)],  # several chunks of 1 MiB buffers
        [os.urandom(n) for n in (1, 7, 300000, 5, 2 << 20)],  # mixed sizes, a direct chunk
        [],
        [b"last"],
    ]
    path = tmp_path / "t.img"
    write_tape(path, files)
    return path, files


def test_export_to_file(tape: tuple[Path, list[list[bytes]]], tmp_path: Path) -> None:
    path, files = tape
    for n, records in enumerate(files):
        out = tmp_path / f"file{n}"
        with out.open("wb") as f:
            f.write(b"prefix")  # data the caller wrote first stays in front
            assert export_file(path, n, f) == sum(map(len, records))
        assert out.read_bytes() == b"prefix" + b"".join(records)
    # file 4 is the empty one between the two final filemarks; file 5 does not exist
    with (tmp_path / "empty").open("wb") as f:
        assert export_file(path, 4, f) == 0
    with pytest.raises(TapeError) as info:
        export_file(path, 5, io.BytesIO())
    assert info.value.error == Error.FILE_NOT_FOUND_ERR
    assert "tape file 5 does not exist" in str(info.value) and "files 0..4" in str(info.value)


def test_export_to_python_stream(tape: tuple[Path, list[list[bytes]]]) -> None:
    path, files = tape
    out = io.BytesIO()
    assert export_file(path, 1, out) == sum(map(len, files[1]))
    assert out.getvalue() == b"".join(files[1])


def test_export_to_pipe(tape: tuple[Path, list[list[bytes]]]) -> None:
    path, files = tape
    r, w = os.pipe()
    got = bytearray()

    def drain() -> None:
        with os.fdopen(r, "rb") as f:
            while chunk := f.read(1 << 16):
                got.extend(chunk)

    t = threading.Thread(target=drain)
    t.start()
    with os.fdopen(w, "wb") as f:
        export_file(path, 0, f)
    t.join(timeout=30)
    assert bytes(got) == b"".join(files[0])


def test_export_unterminated_last_file(tmp_path: Path) -> None:
    path = tmp_path / "t.img"
    d = TapeDrive("t", path, 1 << 30, durable=False)
    d.open(TapeOpenMode.RDWR)
    d.write(b"a" * 10)
    d.mtio(MtioOp.EOF, 1)
    d.write(b"b" * 10)
    d.flush()  # still open: no filemark after file 1 yet (a server still writing)
    out = io.BytesIO()
    assert export_file(path, 1, out) == 10 and out.getvalue() == b"b" * 10
    d.close()


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(TapeError) as info:
        export_file(tmp_path / "missing.img", 0, io.BytesIO())
    assert "no tape image" in str(info.value)
    path = tmp_path / "t.img"
    write_tape(path, [[b"x"]], marks_after_last=1)
    for bad in (-1, True, "0"):
        with pytest.raises(ValueError):
            export_file(path, bad, io.BytesIO())  # type: ignore[arg-type]
    blank = tmp_path / "blank.img"
    d = TapeDrive("t", blank, 1 << 20)
    d.open(TapeOpenMode.RDWR)
    d.close()
    with pytest.raises(TapeError) as info:
        export_file(blank, 0, io.BytesIO())
    assert "holds no files" in str(info.value)


def test_copy_step_is_large() -> None:
    assert COPY_STEP >= 1 << 20
