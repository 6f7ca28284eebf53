"""End-to-end backup/restore throughput through NDMP against GNU tar and ndmjob's own server.

Usage: python bench/bench_backup.py [--quick] [--dir /dev/shm] [--runs 3]
                                    [--only throughput|hist] [--files 1000000]

Data sets: (a) 4 x 256 MiB random files, (b) 50,000 x 4 KiB files (50 dirs of 1,000); with
--quick, 4 x 32 MiB and 5,000 x 4 KiB. The DMA is Debian's ndmjob; every ndmpd backup and
restore is run with -B tar and -B dump, LOCAL (-D) and TCP (-D -T), HIST=n (no -I); the peer is
``ndmjob -o test-daemon`` with the shared ``wrap_tar`` formatter (tar only). GNU tar writes and
reads the same tree to and from a file. Every restore is compared with the source (diff -r).

Two times per run: "wall" is the whole DMA command; "phase" is the data operation alone (ndmpd:
its "started" to "data halted" log lines, stamped as they arrive; peer: the life of its
formatter). ndmjob polls every 2 s, so wall is quantised; the ratios against GNU tar use the
phase, the ratios against ndmjob's server use the wall ("end to end") and the phase.

The HIST part backs up --files empty files (1,000 per dir) with -I (HIST=y) and samples the
ndmpd process's VmRSS / VmHWM. Everything lives under one scratch folder, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MB,
    NdmjobServer,
    Ndmpd,
    RssSampler,
    disk_free,
    free_port,
    make_big_files,
    make_small_files,
    median,
    ndmjob,
    proc_status,
    rmtree,
    run,
    same_tree,
    scratch,
    start_ndmjob_server,
    start_ndmpd,
    timed,
    tree_bytes,
)

PATHS = ("local", "tcp")
ENGINES = ("tar", "dump")


@dataclass
class Row:
    dataset: str
    op: str  # backup | restore
    who: str  # "GNU tar", "ndmpd tar", "ndmjob-srv tar", ...
    path: str  # local | tcp | file | pipe
    walls: list[float] = field(default_factory=list)
    phases: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return median(self.walls)

    @property
    def phase(self) -> float:
        return median(self.phases) if self.phases else self.wall


def agents(agent: str, path: str) -> list[str]:
    return ["-D", agent] if path == "local" else ["-D", agent, "-T", agent]


class GnuTar:
    """GNU tar writing the tree to a file, through a pipe, and reading the file back."""

    def __init__(self, name: str, src: Path, work: Path) -> None:
        self.src, self.image = src, work / "gnu.tar"
        self.piped, self.dest = work / "gnu-pipe.tar", work / "gnu-restore"
        self.create = ["tar", "-cf", str(self.image), "-C", str(src), "."]
        self.c_file = Row(name, "backup", "GNU tar", "file")
        self.c_pipe = Row(name, "backup", "GNU tar", "pipe")
        self.x_file = Row(name, "restore", "GNU tar", "file")
        self.rows = [self.c_file, self.c_pipe, self.x_file]
        run(self.create)  # warm-up

    def round(self, i: int) -> None:
        self.c_file.walls.append(timed(lambda: run(self.create)))
        self.c_pipe.walls.append(
            timed(
                lambda: run(["bash", "-c", f"tar -cf - -C '{self.src}' . | cat > '{self.piped}'"])
            )
        )
        rmtree(self.dest)
        self.dest.mkdir()
        self.x_file.walls.append(
            timed(lambda: run(["tar", "-xf", str(self.image), "-C", str(self.dest)]))
        )
        same_tree(self.src, self.dest)
        rmtree(self.dest)

    def close(self) -> None:
        print(f"  GNU tar image {self.image.stat().st_size} bytes", flush=True)
        self.image.unlink()
        self.piped.unlink()


class NdmpdJobs:
    """Backup and restore through ndmpd, every engine on every data path (one drive each)."""

    def __init__(self, name: str, srv: Ndmpd, src_rel: str) -> None:
        self.srv, self.src_rel, self.src = srv, src_rel, srv.volume() / src_rel
        self.combos = []
        for i, (engine, path) in enumerate((e, p) for e in ENGINES for p in PATHS):
            ag = agents(srv.agent(), path)
            drive = f"nrst{i}a"
            b = Row(name, "backup", f"ndmpd {engine}", path)
            r = Row(name, "restore", f"ndmpd {engine}", path)
            self.combos.append((engine, path, ag, drive, b, r))
        self.rows = [row for *_, b, r in self.combos for row in (b, r)]
        engine, path, ag, drive, *_ = self.combos[0]
        ndmjob(self._backup(engine, ag, drive))  # warm-up

    def _backup(self, engine: str, ag: list[str], drive: str) -> list[str]:
        return ["-c", *ag, "-B", engine, "-C", f"/svm1/vol1/{self.src_rel}", "-f", drive]

    def round(self, i: int) -> None:
        srv = self.srv
        for engine, path, ag, drive, b, r in self.combos:
            mark = srv.mark()
            b.walls.append(ndmjob(self._backup(engine, ag, drive))[0])
            b.phases.append(srv.data_phase(mark))
            rel = f"restore-{engine}-{path}-{i}"
            dest = srv.volume() / rel
            mark = srv.mark()
            restore = ["-x", *ag, "-B", engine, "-C", f"/svm1/vol1/{rel}", "-f", drive]
            r.walls.append(ndmjob(restore)[0])
            r.phases.append(srv.data_phase(mark))
            same_tree(self.src, dest)
            rmtree(dest)


class PeerJobs:
    """The same jobs through ndmjob's own server (tar formatter), LOCAL and TCP."""

    def __init__(self, name: str, peer: NdmjobServer, src: Path, work: Path) -> None:
        self.peer, self.src, self.work = peer, src, work
        self.combos = []
        for path in PATHS:
            ag = agents(peer.agent(), path)
            b = Row(name, "backup", "ndmjob-srv tar", path)
            r = Row(name, "restore", "ndmjob-srv tar", path)
            self.combos.append((path, ag, b, r))
        self.rows = [row for *_, b, r in self.combos for row in (b, r)]
        ndmjob(self._backup(self.combos[0][1]))  # warm-up

    def _backup(self, ag: list[str]) -> list[str]:
        return ["-c", *ag, "-B", "tar", "-C", str(self.src), "-f", str(self.peer.tape)]

    def round(self, i: int) -> None:
        peer = self.peer
        for path, ag, b, r in self.combos:
            peer.reset_stamps()
            b.walls.append(ndmjob(self._backup(ag))[0])
            b.phases.append(peer.data_phase())
            dest = self.work / f"peer-restore-{path}-{i}"
            peer.reset_stamps()
            restore = ["-x", *ag, "-B", "tar", "-C", str(dest), "-f", str(peer.tape)]
            r.walls.append(ndmjob(restore)[0])
            r.phases.append(peer.data_phase())
            same_tree(self.src, dest)
            rmtree(dest)


def print_table(rows: list[Row], sizes: dict[str, int], runs: int) -> None:
    print()
    print(
        f"medians of {runs}; MB = 1e6 bytes of file data; ratios = their time / our time "
        "(> 1: ndmpd faster); 'vs tar' uses our data phase against GNU tar -cf/-xf FILE; "
        "'vs ndmjob' compares the same data path (local/tcp) wall to wall (end to end) and "
        "phase to phase"
    )
    head = (
        f"{'set':<6} {'op':<7} {'who':<15} {'path':<5} {'wall s':>7} {'phase s':>8} "
        f"{'MB/s':>7} {'vs tar':>7} {'vs ndmjob wall':>15} {'vs ndmjob phase':>16}"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        nbytes = sizes[row.dataset]
        tar = next(
            r
            for r in rows
            if r.dataset == row.dataset
            and r.op == row.op
            and r.who == "GNU tar"
            and r.path == "file"
        )
        peer = next(
            (
                r
                for r in rows
                if r.dataset == row.dataset
                and r.op == row.op
                and r.who.startswith("ndmjob-srv")
                and r.path == row.path
            ),
            None,
        )
        is_ours = row.who.startswith("ndmpd")
        vs_tar = (
            f"{tar.wall / row.phase:7.2f}" if row.who != "GNU tar" or row.path != "file" else ""
        )
        vs_wall = vs_phase = ""
        if is_ours and peer is not None:
            vs_wall = f"{peer.wall / row.wall:15.2f}"
            vs_phase = f"{peer.phase / row.phase:16.2f}"
        phase = f"{row.phase:8.2f}" if row.phases else f"{'':8}"
        print(
            f"{row.dataset:<6} {row.op:<7} {row.who:<15} {row.path:<5} {row.wall:7.2f} {phase} "
            f"{nbytes / row.phase / MB:7.1f} {vs_tar:>7} {vs_wall:>15} {vs_phase:>16}"
        )
    print()
    print("targets: backup >= 0.9x GNU tar on (a), >= 0.7x on (b); restore >= 0.8x on both;")
    print("         >= 1.5x ndmjob's server end to end everywhere")
    for row in rows:
        if not row.who.startswith("ndmpd"):
            continue
        tar = next(
            r
            for r in rows
            if r.dataset == row.dataset
            and r.op == row.op
            and r.who == "GNU tar"
            and r.path == "file"
        )
        want = (0.9 if row.dataset == "a" else 0.7) if row.op == "backup" else 0.8
        got = tar.wall / row.phase
        misses = []
        if got < want:
            misses.append(f"vs GNU tar {got:.2f} < {want}")
        peer = next(
            (
                r
                for r in rows
                if r.dataset == row.dataset
                and r.op == row.op
                and r.who.startswith("ndmjob-srv")
                and r.path == row.path
            ),
            None,
        )
        if peer is not None and peer.wall / row.wall < 1.5:
            misses.append(f"vs ndmjob wall {peer.wall / row.wall:.2f} < 1.5")
        if misses:
            print(f"  MISS ({row.dataset}) {row.op} {row.who} {row.path}: " + "; ".join(misses))


def throughput(base: Path, runs: int, quick: bool, skip_peer: bool, only_sets: str = "ab") -> None:
    big = 32 << 20 if quick else 256 << 20
    small_n = 5_000 if quick else 50_000
    sets = {
        "a": (f"4 x {big >> 20} MiB", lambda d: make_big_files(d, 4, big)),
        "b": (f"{small_n:,} x 4 KiB", lambda d: make_small_files(d, small_n, 4096)),
    }
    sets = {k: v for k, v in sets.items() if k in only_sets}
    srv = start_ndmpd(base / "ndmpd")
    peer = None
    rows: list[Row] = []
    sizes: dict[str, int] = {}
    try:
        if not skip_peer:
            peer = start_ndmjob_server(base / "peer", srv.volume(), free_port())
        for name, (label, make) in sets.items():
            src_rel = f"src-{name}"
            src = srv.volume() / src_rel
            t0 = time.perf_counter()
            make(src)
            files, nbytes = tree_bytes(src)
            sizes[name] = nbytes
            print(
                f"({name}) {label}: {files} files, {nbytes / MB:.1f} MB "
                f"(made in {time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
            work = base / f"work-{name}"
            work.mkdir()
            # one round = every tool once, so that a slow spell of this shared machine
            # weighs on GNU tar, ndmpd and ndmjob's server alike
            gnu = GnuTar(name, src, work)
            tools: list[GnuTar | NdmpdJobs | PeerJobs] = [gnu, NdmpdJobs(name, srv, src_rel)]
            if peer is not None:
                tools.append(PeerJobs(name, peer, src, work))
            for i in range(runs):
                for tool in tools:
                    tool.round(i)
                print(f"  round {i + 1}/{runs} done", flush=True)
            for tool in tools:
                rows += tool.rows
            gnu.close()
            rmtree(work)
            rmtree(src)
    finally:
        if peer is not None:
            peer.stop()
        srv.stop()
    print_table(rows, sizes, runs)


def hist(base: Path, nfiles: int, engines: list[str]) -> None:
    """One fresh server per engine, so each VmHWM is that backup's own high-water mark."""
    home = base / "ndmpd-hist"
    src = home / "svm1" / "vol1" / "many"
    t0 = time.perf_counter()
    make_small_files(src, nfiles, 0)
    print(
        f"HIST=y: {nfiles:,} empty files in {max(nfiles // 1000, 1)} dirs "
        f"(made in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    print(
        f"{'engine':<7} {'wall s':>7} {'phase s':>8} {'files/s':>9} {'index lines':>12} "
        f"{'peak VmRSS MB':>14} {'VmHWM MB':>9} {'idle RSS MB':>12}"
    )
    for engine in engines:
        srv = start_ndmpd(home, tapes=1)
        try:
            idle = proc_status(srv.pid).get("VmRSS", 0) / 1024
            idx = base / f"hist-{engine}.idx"
            mark = srv.mark()
            backup = ["-c", "-D", srv.agent(), "-B", engine, "-C", "/svm1/vol1/many"]
            with RssSampler(srv.pid, 0.05) as rss:
                wall, _ = ndmjob([*backup, "-f", "nrst0a", "-I", str(idx)], timeout=3600)
            phase = srv.data_phase(mark)
            with open(idx, "rb") as fh:
                lines = sum(1 for line in fh if line.startswith(b"DH"))
            idx.unlink()
            print(
                f"{engine:<7} {wall:7.1f} {phase:8.1f} {nfiles / phase:9.0f} {lines:12,} "
                f"{rss.peak_rss_kib / 1024:14.1f} {rss.hwm_kib / 1024:9.1f} {idle:12.1f}",
                flush=True,
            )
        finally:
            srv.stop()
    print("target: resident memory of the ndmpd process < 200 MB (VmHWM: its high-water mark)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data sets, 1 run")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--dir", default="/dev/shm", help="scratch parent (default /dev/shm)")
    parser.add_argument("--only", choices=["throughput", "hist"], default=None)
    parser.add_argument(
        "--files",
        type=int,
        default=None,
        help="files for the HIST=y memory run (default 1,000,000; quick 100,000)",
    )
    parser.add_argument("--hist-engines", default="dump,tar")
    parser.add_argument("--no-peer", action="store_true", help="skip ndmjob's own server")
    parser.add_argument("--sets", default="ab", help="data sets to run: a (large), b (small)")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    nfiles = args.files or (100_000 if args.quick else 1_000_000)
    parent = Path(args.dir)
    need = (2 if args.quick else 6) << 30
    if args.only != "hist" and disk_free(parent) < need:
        sys.exit(f"{parent}: less than {need >> 30} GiB free")
    with scratch("e2ebench-", str(parent)) as base:
        print(f"scratch {base}; {os.cpu_count()} CPUs; runs {runs}", flush=True)
        if args.only in (None, "throughput"):
            throughput(base, runs, args.quick, args.no_peer, args.sets)
        if args.only in (None, "hist"):
            hist(base, nfiles, args.hist_engines.split(","))


if __name__ == "__main__":
    main()
