"""Tape throughput: TapeDrive.write / readinto against dd, median of 3 runs.

Usage: python bench/bench_tape.py [--mib 1024] [--runs 3] [--dir /var/tmp]

Writes then reads ~1 GiB through the drive with 10 KiB and 256 KiB records (the mover's hot
path), and times ``dd`` writing the same bytes to a file and reading them back. Writes are
timed up to the bytes reaching the OS (``flush()``; dd likewise stops at its last write),
without fsync on either side; one extra line times close() with fdatasync. Reads follow the
writes, so both sides read from the page cache. Files live in a temporary folder, removed
afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ndmpd.protocol.constants import MtioOp, TapeOpenMode
from ndmpd.tapes import TapeDrive


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def tape_write(path: Path, record: int, count: int) -> tuple[float, float]:
    data = os.urandom(record)
    drive = TapeDrive("bench", path, 1 << 42, durable=True)
    drive.open(TapeOpenMode.RDWR)
    t0 = time.perf_counter()
    write = drive.write
    for _ in range(count):
        write(data)
    drive.flush()
    t1 = time.perf_counter()
    drive.close()  # implicit filemark + fdatasync
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0


def tape_read(path: Path, record: int, count: int) -> float:
    drive = TapeDrive("bench", path, 1 << 42)
    drive.open(TapeOpenMode.READ)
    drive.mtio(MtioOp.REW, 1)
    buf = bytearray(record)
    t0 = time.perf_counter()
    readinto = drive.readinto
    for _ in range(count):
        readinto(buf)
    t1 = time.perf_counter()
    drive.close()
    return t1 - t0


def dd(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(["dd", *args, "status=none"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="MiB per run (default 1024)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="folder for the temporary files")
    args = parser.parse_args()
    total = args.mib << 20
    work = Path(tempfile.mkdtemp(prefix="bench-tape-", dir=args.dir))
    try:
        print(f"{args.mib} MiB per run, median of {args.runs}, files in {work}")
        print(f"{'record':>8} {'op':<22} {'ndmpd MB/s':>11} {'dd MB/s':>9} {'ratio':>6}")
        for record in (10 * 1024, 256 * 1024):
            count = total // record
            nbytes = count * record
            bs = f"bs={record // 1024}k"
            w, wsync, r, dw, dr = [], [], [], [], []
            for run in range(args.runs):
                img = work / f"t{run}.img"
                raw = work / f"d{run}.bin"
                t, ts = tape_write(img, record, count)
                w.append(t)
                wsync.append(ts)
                r.append(tape_read(img, record, count))
                dw.append(dd(["if=/dev/zero", f"of={raw}", bs, f"count={count}"]))
                dr.append(dd([f"if={raw}", "of=/dev/null", bs]))
                img.unlink()
                raw.unlink()
            rows = [
                ("write", statistics.median(w), statistics.median(dw)),
                ("write+close(fsync)", statistics.median(wsync), None),
                ("read (readinto)", statistics.median(r), statistics.median(dr)),
            ]
            for op, ours, theirs in rows:
                a = mbps(nbytes, ours)
                if theirs is None:
                    print(f"{record // 1024:>7}K {op:<22} {a:>11.0f} {'-':>9} {'-':>6}")
                else:
                    b = mbps(nbytes, theirs)
                    print(f"{record // 1024:>7}K {op:<22} {a:>11.0f} {b:>9.0f} {a / b:>6.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
