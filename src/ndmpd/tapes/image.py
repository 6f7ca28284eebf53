"""The on-disk tape image: file header, chunk headers, and the in-memory index built from them.

A tape is a sequence of *elements* (records and filemarks). The image stores them as chunks:
a 32-byte header followed, for a run of equal-sized records, by their bytes back to back, so a
tape file is a few large contiguous extents (fast export) and positioning needs only the chunk
headers (a scan on open). A torn tail left by a crash is found by the scan and cut at the last
whole record. The byte layout is documented in ``docs/tape-image.md``.
"""

from __future__ import annotations

import os
import struct
import time
import uuid
import zlib
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from ndmpd.protocol.constants import Error
from ndmpd.tapes.errors import TapeError

FILE_MAGIC = b"NDMPTAPE"
FILE_VERSION = 1
FILE_HEADER = struct.Struct("<8sHHIQ16s20xI")  # 64 bytes, CRC-32 of the first 60 last
CHUNK_MAGIC = b"TCHK"
CHUNK_HEADER = struct.Struct("<4sBBHIIQ4xI")  # 32 bytes, CRC-32 of the first 28 last
KIND_RECORDS = 1
KIND_FILEMARKS = 2
MAX_U32 = 0xFFFFFFFF

assert FILE_HEADER.size == 64 and CHUNK_HEADER.size == 32


def pack_file_header(medium_id: bytes, created_ns: int) -> bytes:
    body = FILE_HEADER.pack(
        FILE_MAGIC, FILE_VERSION, FILE_HEADER.size, CHUNK_HEADER.size, created_ns, medium_id, 0
    )[:60]
    return body + struct.pack("<I", zlib.crc32(body))


def pack_chunk_header(kind: int, record_size: int, count: int, first: int) -> bytes:
    body = CHUNK_HEADER.pack(CHUNK_MAGIC, kind, 0, 0, record_size, count, first, 0)[:28]
    return body + struct.pack("<I", zlib.crc32(body))


@dataclass(frozen=True)
class ImageInfo:
    """What the file header says about a medium."""

    medium_id: str
    created_ns: int


def read_file_header(fd: int, path: Path) -> ImageInfo:
    raw = os.pread(fd, FILE_HEADER.size, 0)
    if len(raw) < FILE_HEADER.size:
        raise TapeError(Error.IO_ERR, f"{path}: truncated tape image header")
    magic, version, hsize, csize, created, medium, crc = FILE_HEADER.unpack(raw)
    if magic != FILE_MAGIC:
        raise TapeError(Error.IO_ERR, f"{path}: not an ndmpd tape image (bad magic)")
    if zlib.crc32(raw[:60]) != crc:
        raise TapeError(Error.IO_ERR, f"{path}: tape image header checksum mismatch")
    if version != FILE_VERSION or hsize != FILE_HEADER.size or csize != CHUNK_HEADER.size:
        raise TapeError(Error.IO_ERR, f"{path}: unsupported tape image version {version}")
    return ImageInfo(str(uuid.UUID(bytes=medium)), created)


def create_image(path: Path) -> None:
    """Make a blank tape atomically (temporary file + rename), so a crash leaves none or one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, pack_file_header(uuid.uuid4().bytes, time.time_ns()))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces an image another process created meanwhile
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


@dataclass(frozen=True)
class Repair:
    """How to cut a torn tail: truncate the file, then (optionally) rewrite one chunk header."""

    truncate_to: int
    patch_offset: int = -1
    patch_header: bytes = b""


class ImageIndex:
    """Chunk table of one image, in compact arrays (a few bytes per chunk, none per record).

    Element positions count records and filemarks from BOT (0). ``end`` is the first blank
    position; ``end_offset`` the file offset where the next chunk header goes.
    """

    def __init__(self) -> None:
        self.offset = array("q")  # file offset of each chunk header
        self.first = array("q")  # element position of the chunk's first element
        self.size = array("q")  # record size; 0 for a filemark chunk
        self.count = array("q")  # elements in the chunk
        self.bytes_before = array("q")  # record payload bytes before the chunk
        self.fm_chunks = array("q")  # chunk numbers of the filemark chunks, ascending
        self.fm_before = array("q")  # filemarks before each filemark chunk
        self.end = 0
        self.end_offset = FILE_HEADER.size
        self.used = 0
        self.filemarks = 0

    def __len__(self) -> int:
        return len(self.offset)

    def append(self, size: int, count: int) -> None:
        """Record a chunk just written at ``end_offset`` (size 0: filemarks)."""
        c = len(self.offset)
        self.offset.append(self.end_offset)
        self.first.append(self.end)
        self.size.append(size)
        self.count.append(count)
        self.bytes_before.append(self.used)
        if size == 0:
            self.fm_chunks.append(c)
            self.fm_before.append(self.filemarks)
            self.filemarks += count
        self.end += count
        self.end_offset += CHUNK_HEADER.size + size * count
        self.used += size * count

    def chunk_of(self, pos: int) -> int:
        """The chunk holding element ``pos`` (0 <= pos < end)."""
        return bisect_right(self.first, pos) - 1

    def bytes_at(self, pos: int) -> int:
        """Record payload bytes between BOT and ``pos``."""
        if pos >= self.end:
            return self.used
        c = self.chunk_of(pos)
        return self.bytes_before[c] + (pos - self.first[c]) * self.size[c]

    def file_num(self, pos: int) -> int:
        """Filemarks between BOT and ``pos``."""
        if pos >= self.end:
            return self.filemarks
        i = bisect_right(self.fm_chunks, self.chunk_of(pos)) - 1
        if i < 0:
            return 0
        c = self.fm_chunks[i]
        return self.fm_before[i] + min(pos - self.first[c], self.count[c])

    def filemark_pos(self, k: int) -> int:
        """Position of filemark number ``k`` (0-based, k < filemarks)."""
        i = bisect_right(self.fm_before, k) - 1
        c = self.fm_chunks[i]
        return self.first[c] + (k - self.fm_before[i])

    def file_start(self, pos: int) -> int:
        """Position just after the last filemark before ``pos`` (BOT if none)."""
        fn = self.file_num(pos)
        return 0 if fn == 0 else self.filemark_pos(fn - 1) + 1

    def cut(self, pos: int) -> Repair | None:
        """Forget everything from ``pos`` on; return the file change that matches."""
        if pos >= self.end:
            return None
        c = self.chunk_of(pos)
        keep = pos - self.first[c]
        if keep == 0:
            repair = Repair(self.offset[c])
            self._drop_from(c)
        else:
            size = self.size[c]
            kind = KIND_FILEMARKS if size == 0 else KIND_RECORDS
            off = self.offset[c]
            header = pack_chunk_header(kind, size, keep, self.first[c])
            repair = Repair(off + CHUNK_HEADER.size + keep * size, off, header)
            self._drop_from(c)
            self.append(size, keep)
        return repair

    def _drop_from(self, c: int) -> None:
        if c >= len(self.offset):
            return
        self.end = self.first[c]
        self.end_offset = self.offset[c]
        self.used = self.bytes_before[c]
        i = bisect_right(self.fm_chunks, c - 1)
        self.filemarks = self.fm_before[i] if i < len(self.fm_chunks) else self.filemarks
        for arr in (self.offset, self.first, self.size, self.count, self.bytes_before):
            del arr[c:]
        del self.fm_chunks[i:]
        del self.fm_before[i:]


def scan(fd: int, path: Path) -> tuple[ImageIndex, Repair | None]:
    """Read the chunk headers of an image; report a torn tail without touching the file."""
    read_file_header(fd, path)
    file_size = os.fstat(fd).st_size
    index = ImageIndex()
    off = FILE_HEADER.size
    hsize = CHUNK_HEADER.size
    while off < file_size:
        raw = os.pread(fd, hsize, off)
        if len(raw) < hsize:
            return index, Repair(off)
        magic, kind, _flags, _res, size, count, first, crc = CHUNK_HEADER.unpack(raw)
        valid = (
            magic == CHUNK_MAGIC
            and zlib.crc32(raw[:28]) == crc
            and first == index.end
            and count > 0
            and ((kind == KIND_RECORDS and size > 0) or (kind == KIND_FILEMARKS and size == 0))
        )
        if not valid:
            return index, Repair(off)
        room = file_size - off - hsize
        if size * count > room:
            whole = room // size
            if whole == 0:
                return index, Repair(off)
            index.append(size, whole)
            return index, Repair(index.end_offset, off, pack_chunk_header(kind, size, whole, first))
        index.append(size, count)
        off = index.end_offset
    return index, None


def apply_repair(fd: int, repair: Repair) -> None:
    """Cut first, then fix the header: a crash in between leaves a tail the next scan cuts."""
    os.ftruncate(fd, repair.truncate_to)
    if repair.patch_offset >= 0:
        os.pwrite(fd, repair.patch_header, repair.patch_offset)
