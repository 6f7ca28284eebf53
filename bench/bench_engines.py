"""Backup and restore throughput of the dump and tar engines against GNU tar, median of N runs.

Usage: python bench/bench_engines.py [--runs 3] [--dir /tmp] [--engines dump,tar]
       [--small 50000] [--large 4] [--hist] [--rss-files 0]

Two trees are generated in a temporary folder (removed afterwards): ``large`` (``--large``
files of 256 MiB) and ``small`` (``--small`` files of 4 KiB in directories of 1,000). Both
are read once before timing, so every run reads from the page cache.

* backup: the engine writes its stream into a pipe drained by ``cat >/dev/null``, timed until
  ``cat`` exits; GNU tar runs as ``tar -cf - . | cat >/dev/null`` in the tree.
* restore: the engine reads its own stream from a (page-cached) file into an empty directory;
  GNU tar runs ``tar -xf`` on its own archive of the same tree. Runs alternate between the two,
  and the destination is removed (untimed) after each run.

Ratios are throughput ours / GNU tar (= GNU's time / ours): above 1 means faster than GNU tar.
Backups are timed twice: with the sink as the data service passes it today (small members
handed on in 4 MiB batches) and with a sink declaring ``write_batch`` (``--write-batch``,
32 KiB), which a sink whose reader is another process should declare (see
``engines.tar.writer.write_batch``).
``--hist`` gives the engine a history sink that drops entries (the data service's cost of
batching is not included). ``--rss-files N`` additionally backs up a tree of N empty files with
history on, in a child process per engine, and prints its peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ndmpd.engines.base import BackupJob, RecoverJob
from ndmpd.engines.registry import available

SMALL_SIZE = 4096
LARGE_SIZE = 256 << 20
PER_DIR = 1000


class PipeSink:
    """Writes the stream into a pipe fd, as the mover would into a socket."""

    def __init__(self, fd: int, batch: int = 0) -> None:
        self.fd = fd
        self.n = 0
        if batch:
            self.write_batch = batch  # small-member batch size the engines honour

    def write(self, data: bytes | memoryview) -> None:
        mv = memoryview(data)
        while mv:
            k = os.write(self.fd, mv)
            mv = mv[k:]
            self.n += k


class FileSource:
    def __init__(self, path: Path) -> None:
        self.f = open(path, "rb", buffering=0)  # noqa: SIM115

    def readinto(self, buf: bytearray | memoryview) -> int:
        return self.f.readinto(buf) or 0


class NullHistory:
    def __init__(self) -> None:
        self.n = 0

    def add_file(self, path: bytes, st: os.stat_result, node: int, fh_info: int) -> None:
        self.n += 1

    def add_dir(self, name: bytes, node: int, parent: int) -> None:
        self.n += 1

    def add_node(self, st: os.stat_result, node: int, fh_info: int) -> None:
        self.n += 1


def _log(t: object, msg: str) -> None:
    if "WARN" in str(t) or "ERR" in str(t):
        print(f"  engine log: {msg}", file=sys.stderr)


def _backup_job(root: Path, sink: object, hist: bool) -> BackupJob:
    return BackupJob(
        root=os.fsencode(root),
        env={},
        sink=sink,  # type: ignore[arg-type]
        history=NullHistory() if hist else None,
        log=_log,  # type: ignore[arg-type]
        abort=threading.Event(),
    )


def make_tree(base: Path, name: str, count: int, size: int, per_dir: int) -> Path:
    root = base / name
    root.mkdir()
    data = os.urandom(min(size, 1 << 20))
    for i in range(count):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir()
        with open(d / f"f{i:07d}", "wb") as f:
            left = size
            while left:
                n = min(left, len(data))
                f.write(data[:n])
                left -= n
    return root


def warm(root: Path) -> None:
    subprocess.run("tar -cf - . | cat >/dev/null", shell=True, cwd=root, check=True)


def time_engine_backup(engine: object, root: Path, hist: bool, batch: int = 0) -> float:
    cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert cat.stdin is not None
    sink = PipeSink(cat.stdin.fileno(), batch)
    t0 = time.perf_counter()
    engine.backup(_backup_job(root, sink, hist))  # type: ignore[attr-defined]
    cat.stdin.close()
    cat.wait()
    return time.perf_counter() - t0


def time_gnu_backup(root: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run("tar -cf - . | cat >/dev/null", shell=True, cwd=root, check=True)
    return time.perf_counter() - t0


def save_stream(engine: object, root: Path, out: Path) -> None:
    with open(out, "wb") as f:

        class Sink:
            def write(self, data: bytes | memoryview) -> None:
                f.write(data)

        engine.backup(_backup_job(root, Sink(), False))  # type: ignore[attr-defined]


def time_engine_restore(engine: object, stream: Path, dest: Path) -> float:
    dest.mkdir()
    src = FileSource(stream)
    job = RecoverJob(
        source=src,
        env={},
        confine=os.fsencode(dest),
        destination=os.fsencode(dest),
        selections=(),
        log=_log,  # type: ignore[arg-type]
        file_result=lambda n, s: None,
        abort=threading.Event(),
    )
    t0 = time.perf_counter()
    res = engine.recover(job)  # type: ignore[attr-defined]
    t = time.perf_counter() - t0
    src.f.close()
    if res.failed:
        print(f"  restore: {res.failed} failed entries", file=sys.stderr)
    return t


def time_gnu_restore(archive: Path, dest: Path) -> float:
    dest.mkdir()
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(dest)], check=True)
    return time.perf_counter() - t0


def interleaved(
    runs: int,
    a: Callable[[], float],
    b: Callable[[], float],
    cleanup: Callable[[], None],
) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(runs):
        ta.append(a())
        cleanup()
        tb.append(b())
        cleanup()
    return statistics.median(ta), statistics.median(tb)


def rss_child(engine_name: str, root: str) -> None:
    engine = available()[engine_name]
    fd = os.open(os.devnull, os.O_WRONLY)
    sink = PipeSink(fd)
    job = _backup_job(Path(root), sink, True)
    engine.backup(job)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{peak / 1024:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--engines", default="dump,tar")
    ap.add_argument("--small", type=int, default=50_000)
    ap.add_argument("--large", type=int, default=4)
    ap.add_argument("--hist", action="store_true", help="engine backups with file history")
    ap.add_argument(
        "--write-batch",
        type=int,
        default=32 << 10,
        help="also time backups with a sink declaring this write_batch (0: skip)",
    )
    ap.add_argument("--no-restore", action="store_true")
    ap.add_argument("--rss-files", type=int, default=0)
    ap.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    engines = available()
    names = [n for n in args.engines.split(",") if n]
    base = Path(tempfile.mkdtemp(prefix="engperf-bench-", dir=args.dir))
    rows: list[tuple[str, str, float, float]] = []
    try:
        trees = []
        if args.large:
            trees.append(("large", make_tree(base, "large", args.large, LARGE_SIZE, PER_DIR)))
        if args.small:
            trees.append(("small", make_tree(base, "small", args.small, SMALL_SIZE, PER_DIR)))
        for label, root in trees:
            warm(root)
            # runs alternate between GNU tar and every engine variant, so drift hits all alike
            batches = [0] + ([args.write_batch] if args.write_batch else [])
            variants = [(n, b) for n in names for b in batches]
            gnu_ts: list[float] = []
            eng_ts: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
            for _ in range(args.runs):
                gnu_ts.append(time_gnu_backup(root))
                for n, b in variants:
                    eng_ts[(n, b)].append(time_engine_backup(engines[n], root, args.hist, b))
            gnu_b = statistics.median(gnu_ts)
            for (n, b), ts in eng_ts.items():
                t = statistics.median(ts)
                what = f"backup  {label}" + (f" wb={b >> 10}K" if b else "")
                rows.append((what, n, t, gnu_b))
                print(f"{what:20} {n:4}: {t:7.3f} s  GNU tar {gnu_b:7.3f} s  "
                      f"ratio {gnu_b / t:5.2f}", flush=True)  # fmt: skip
            if args.no_restore:
                continue
            archive = base / f"{label}.gnu.tar"
            subprocess.run(["tar", "-cf", str(archive), "-C", str(root), "."], check=True)
            dest = base / "dest"

            def rm(dest: Path = dest) -> None:
                shutil.rmtree(dest, ignore_errors=True)
                os.sync()

            for n in names:
                stream = base / f"{label}.{n}"
                save_stream(engines[n], root, stream)
                t, g = interleaved(
                    args.runs,
                    lambda n=n, s=stream, d=dest: time_engine_restore(engines[n], s, d),
                    lambda a=archive, d=dest: time_gnu_restore(a, d),
                    rm,
                )
                stream.unlink()
                rows.append((f"restore {label}", n, t, g))
                print(f"{'restore ' + label:20} {n:4}: {t:7.3f} s  GNU tar {g:7.3f} s  "
                      f"ratio {g / t:5.2f}", flush=True)  # fmt: skip
            archive.unlink()
        if args.rss_files:
            root = base / "rss"
            root.mkdir()
            for i in range(args.rss_files):
                if i % PER_DIR == 0:
                    d = root / f"d{i // PER_DIR:05d}"
                    d.mkdir()
                os.close(os.open(d / f"f{i:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
            for n in names:
                r = subprocess.run(
                    [sys.executable, __file__, "--rss-child", n, str(root)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                print(f"peak RSS backup of {args.rss_files} files with history, {n}: "
                      f"{r.stdout.strip()} MiB", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nsummary (median of {args.runs}; ratio = GNU time / ours, higher is better)")
    for what, n, t, g in rows:
        print(f"  {what:20} {n:4}  ours {t:7.3f} s  GNU {g:7.3f} s  ratio {g / t:5.2f}")


if __name__ == "__main__":
    main()
