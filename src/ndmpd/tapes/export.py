"""Stream one tape file out of an image, as the raw bytes a DMA wrote (no ndmpd needed).

Works on a closed image, on one a crash left with a torn tail (ignored, not repaired: export
never writes to the image), and on one a running server is appending to (what is flushed so
far). The bytes go out with ``copy_file_range`` to a file, ``sendfile`` to a pipe or socket,
and large ``readinto`` + ``write`` otherwise.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import BinaryIO

from ndmpd.protocol.constants import Error
from ndmpd.tapes.errors import TapeError
from ndmpd.tapes.image import CHUNK_HEADER, ImageIndex, scan

COPY_STEP = 1 << 30  # bytes per copy_file_range / sendfile call
BUFFER = 4 << 20


def file_extents(index: ImageIndex, file_number: int) -> list[tuple[int, int]] | None:
    """(offset, length) of each contiguous run of tape file ``file_number``; None if absent."""
    if file_number < index.filemarks:
        stop = index.filemark_pos(file_number)
    elif file_number == index.filemarks:
        stop = index.end
    else:
        return None
    start = 0 if file_number == 0 else index.filemark_pos(file_number - 1) + 1
    if file_number == index.filemarks and start >= stop:
        return None  # nothing after the last filemark: no such file
    extents: list[tuple[int, int]] = []
    if start >= stop:
        return extents
    c = index.chunk_of(start)
    while c < len(index) and index.first[c] < stop:
        first, size, count = index.first[c], index.size[c], index.count[c]
        if size:
            a = max(start, first)
            b = min(stop, first + count)
            off = index.offset[c] + CHUNK_HEADER.size + (a - first) * size
            if extents and extents[-1][0] + extents[-1][1] == off:
                extents[-1] = (extents[-1][0], extents[-1][1] + (b - a) * size)
            else:
                extents.append((off, (b - a) * size))
        c += 1
    return extents


def export_file(image: Path, file_number: int, out: BinaryIO) -> int:
    """Write the records of tape file ``file_number`` (0 = first) to ``out``; return bytes."""
    if isinstance(file_number, bool) or not isinstance(file_number, int) or file_number < 0:
        raise ValueError(f"tape file number must be a non-negative integer, not {file_number!r}")
    try:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TapeError(Error.NO_DEVICE_ERR, f"no tape image at {image}") from None
    except OSError as exc:
        raise TapeError(Error.IO_ERR, f"cannot open {image}: {exc.strerror}") from None
    try:
        index, _torn = scan(fd, Path(image))
        extents = file_extents(index, file_number)
        if extents is None:
            files = index.filemarks + (1 if index.end > index.file_start(index.end) else 0)
            held = "no files" if files == 0 else f"files 0..{files - 1}"
            raise TapeError(
                Error.FILE_NOT_FOUND_ERR,
                f"tape file {file_number} does not exist in {image} (the tape holds {held})",
            )
        return _copy(fd, extents, out)
    finally:
        os.close(fd)


def _copy(fd: int, extents: list[tuple[int, int]], out: BinaryIO) -> int:
    try:
        out.flush()
        out_fd = out.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        out_fd = -1
    total = 0
    method = "copy_file_range" if out_fd >= 0 else "buffer"
    for off, length in extents:
        done = 0
        while done < length:
            step = min(COPY_STEP, length - done)
            try:
                if method == "copy_file_range":
                    n = os.copy_file_range(fd, out_fd, step, off + done)
                elif method == "sendfile":
                    n = os.sendfile(out_fd, fd, off + done, step)
                else:
                    n = _copy_buffered(fd, out, off + done, length - done)
            except OSError as exc:
                if method == "copy_file_range" and exc.errno in _FALLBACK:
                    method = "sendfile"
                    continue
                if method == "sendfile" and exc.errno in _FALLBACK:
                    method = "buffer"
                    continue
                raise TapeError(Error.IO_ERR, f"export failed: {exc.strerror}") from None
            if n <= 0:
                if method != "buffer":
                    method = "buffer"  # e.g. copy_file_range returning 0 on special files
                    continue
                raise TapeError(Error.IO_ERR, "tape image shorter than its index")
            done += n
        total += length
    return total


_FALLBACK = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.ESPIPE}


def _copy_buffered(fd: int, out: BinaryIO, off: int, length: int) -> int:
    buf = bytearray(min(BUFFER, length))
    view = memoryview(buf)
    done = 0
    while done < length:
        n = os.preadv(fd, [view[: min(len(buf), length - done)]], off + done)
        if n <= 0:
            break
        out.write(view[:n])
        done += n
    return done
