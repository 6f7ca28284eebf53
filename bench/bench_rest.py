"""REST API under load: the ONTAP session endpoints with 1,000 idle NDMP sessions open, and what
polling the API costs a running backup.

Usage: python bench/bench_rest.py [--sessions 1000] [--seconds 10] [--mib 400] [--runs 3] [--quick]

1. Opens N idle NDMP sessions (CONNECT_OPEN + MD5 auth, `ndmpd.protocol.client.NdmpClient`).
2. `GET /api/protocols/ndmp/sessions/{owner}/{id}` of one of them, from a load generator: wrk
   (Debian's `wrk`, keep-alive connections, Basic auth header) when installed, else keep-alive
   httpx clients in threads. Reports requests/s and latency percentiles (wrk's own histogram).
3. `GET /api/protocols/ndmp/sessions?fields=*` (all N records), sequentially: median and p99.
4. With the idle sessions closed: an ndmjob dump backup of a data set of --mib MiB, unpolled and
   while a thread polls `GET /api/protocols/ndmp/sessions?fields=*` 50 times a second; medians of
   --runs runs each, and their ratio.

Targets (2 cores): >= 2,000 requests/s and p99 < 25 ms for (2); median < 100 ms for (3);
ratio >= 0.95 for (4). Everything listens on 127.0.0.1; every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.serverproc import ADMIN_PASSWORD, NDMJOB, ServerProcess, start_server  # noqa: E402

from ndmpd.protocol.client import NdmpClient  # noqa: E402

SESSIONS = "/api/protocols/ndmp/sessions"
MIB = 1 << 20


@dataclass
class Load:
    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int


def auth_header() -> str:
    return "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()


def open_idle_sessions(server: ServerProcess, count: int) -> list[NdmpClient]:
    password = server.ndmp_password()
    clients: list[NdmpClient] = []
    for _ in range(count):
        c = NdmpClient("127.0.0.1", server.port, timeout=30)
        c.open(check=True)
        c.auth_md5("admin", password, check=True)
        clients.append(c)
    return clients


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return float(m.group(1)) * scale


def load_wrk(url: str, seconds: float, connections: int, threads: int) -> Load:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
         "-H", f"Authorization: {auth_header()}", "-H", "Accept: application/hal+json", url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    assert total, out
    secs = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return Load(
        "wrk", int(total.group(1)), secs, rps,
        _ms(pct["50"]), _ms(pct["90"]), _ms(pct["99"]), errors,
    )  # fmt: skip


def load_httpx(url: str, seconds: float, connections: int) -> Load:
    """Keep-alive clients in threads; slower than wrk (the GIL), so a lower bound."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        with httpx.Client(headers={"Authorization": auth_header()}, timeout=30) as c:
            lat = latencies[i]
            while (t0 := time.perf_counter()) < stop:
                r = c.get(url)
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = [x * 1000 for lat in latencies for x in lat]
    return Load(
        f"httpx x{connections} threads", len(flat), elapsed, len(flat) / elapsed,
        percentile(flat, 50), percentile(flat, 90), percentile(flat, 99), sum(errors),
    )  # fmt: skip


def collection_latency(base: str, count: int) -> tuple[float, float, int]:
    """Median and p99 (ms) of `GET ...sessions?fields=*`, one at a time; and the record count."""
    times: list[float] = []
    n = 0
    with httpx.Client(headers={"Authorization": auth_header()}, timeout=60) as c:
        for _ in range(count):
            t0 = time.perf_counter()
            r = c.get(base + SESSIONS, params={"fields": "*"})
            times.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            n = r.json()["num_records"]
    return statistics.median(times), percentile(times, 99), n


def make_data(root: Path, mib: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MIB)
    for i in range(mib):
        shift = (i * 4099) % MIB
        (root / f"f{i:05d}.bin").write_bytes(block[shift:] + block[:shift])


@dataclass
class Backup:
    wall: float
    mbps: float  # the server's data-phase throughput, 1e6 bytes/s
    nbytes: int
    polls: int


def backup_run(server: ServerProcess, agent: str, poll_hz: float) -> Backup:
    """One ndmjob dump backup; with poll_hz > 0 a thread polls the sessions meanwhile."""
    stop = threading.Event()
    polls = [0]

    def poller() -> None:
        period = 1.0 / poll_hz
        with httpx.Client(headers={"Authorization": auth_header()}, timeout=30) as c:
            next_at = time.perf_counter()
            while not stop.is_set():
                c.get(str(server.rest_url) + SESSIONS, params={"fields": "*"}).raise_for_status()
                polls[0] += 1
                next_at += period
                delay = next_at - time.perf_counter()
                if delay > 0:
                    stop.wait(delay)

    thread = threading.Thread(target=poller) if poll_hz > 0 else None
    if thread:
        thread.start()
    try:
        t0 = time.perf_counter()
        out = subprocess.run(
            [NDMJOB, "-c", "-D", agent, "-B", "dump", "-C", "/svm1/vol1/bench", "-f", "nrst0a"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        if thread:
            thread.join()
    text = out.stdout + out.stderr
    if "Operation ended OKAY" not in text:
        raise RuntimeError("backup failed:\n" + out.stdout[-3000:] + out.stderr[-2000:])
    # The server's own figure for the data phase ("backup of ... done: N bytes in T s (R MB/s)"),
    # which ndmjob logs; its wall time adds ~2 s of ndmjob's own set-up and polling sleeps.
    m = re.search(r"done: (\d+) bytes in [\d.]+ s \(([\d.]+) MB/s\)", text)
    if not m:
        raise RuntimeError("no throughput line in ndmjob's output:\n" + text[-3000:])
    return Backup(elapsed, float(m.group(2)), int(m.group(1)), polls[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0, help="load duration for the GET test")
    ap.add_argument("--connections", type=int, default=16, help="load generator connections")
    ap.add_argument("--mib", type=int, default=400, help="backup data set size")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--collection-gets", type=int, default=50)
    ap.add_argument("--tool", choices=("auto", "wrk", "httpx"), default="auto")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--quick", action="store_true", help="small run: 200 sessions, 3 s, 100 MiB")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.seconds, args.mib = min(args.sessions, 200), 3.0, 100
        args.collection_gets = 20
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "httpx"

    scratch = Path(tempfile.mkdtemp(prefix="restbench-", dir=args.dir))
    server = start_server(
        scratch / "srv", log_level="WARNING", tapes={"nrst0a": f"{max(4, args.mib // 256 + 2)}G"}
    )
    rows: list[tuple[str, str, str]] = []
    try:
        base = str(server.rest_url)
        t0 = time.perf_counter()
        clients = open_idle_sessions(server, args.sessions)
        opened = time.perf_counter() - t0
        print(f"opened {len(clients)} idle authenticated NDMP sessions in {opened:.1f} s")
        with httpx.Client(headers={"Authorization": auth_header()}) as c:
            listing = c.get(base + SESSIONS).json()
        assert listing["num_records"] == args.sessions, listing.get("num_records")
        href = listing["records"][len(listing["records"]) // 2]["_links"]["self"]["href"]
        url = base + href

        load = (
            load_wrk(url, args.seconds, args.connections, 1)
            if tool == "wrk"
            else load_httpx(url, args.seconds, args.connections)
        )
        rows.append((
            f"GET one session, {args.sessions} idle sessions ({load.tool}, "
            f"{args.connections} keep-alive conns)",
            f"{load.rps:,.0f} req/s; p50 {load.p50_ms:.1f} ms, p90 {load.p90_ms:.1f} ms, "
            f"p99 {load.p99_ms:.1f} ms; {load.errors} errors",
            f">= 2,000 req/s, p99 < 25 ms: "
            f"{'yes' if load.rps >= 2000 and load.p99_ms < 25 and not load.errors else 'NO'}",
        ))  # fmt: skip

        med, p99, n = collection_latency(base, args.collection_gets)
        rows.append((
            f"GET collection fields=* ({n} records), sequential x{args.collection_gets}",
            f"median {med:.1f} ms, p99 {p99:.1f} ms",
            f"median < 100 ms: {'yes' if med < 100 else 'NO'}",
        ))  # fmt: skip

        for c in clients:
            c.close()
        clients.clear()
        time.sleep(1.0)

        make_data(server.volume() / "bench", args.mib)
        agent = server.agent()
        backup_run(server, agent, 0)  # warm the page cache and the tape image
        plain: list[Backup] = []
        polled: list[Backup] = []
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            plain.append(backup_run(server, agent, 0))
            polled.append(backup_run(server, agent, 50))
        mp = statistics.median(b.mbps for b in plain)
        mq = statistics.median(b.mbps for b in polled)
        wp = statistics.median(b.wall for b in plain)
        wq = statistics.median(b.wall for b in polled)
        polls = statistics.median(b.polls / b.wall for b in polled)
        ratio = mq / mp
        rows.append((
            f"ndmjob dump backup {args.mib} MiB, unpolled (median of {args.runs})",
            f"{mp:,.0f} MB/s (server's data phase); ndmjob wall {wp:.2f} s", "",
        ))  # fmt: skip
        rows.append((
            "same, REST polled 50/s (GET sessions?fields=*)",
            f"{mq:,.0f} MB/s; ndmjob wall {wq:.2f} s; {polls:.0f} polls/s achieved",
            f"ratio {ratio:.3f} (wall {wp / wq:.3f}), >= 0.95: {'yes' if ratio >= 0.95 else 'NO'}",
        ))  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    wide = max(len(r[1]) for r in rows)
    print(f"\n{'measurement'.ljust(width)}  {'result'.ljust(wide)}  target")
    print(f"{'-' * width}  {'-' * wide}  ------")
    for name, result, target in rows:
        print(f"{name.ljust(width)}  {result.ljust(wide)}  {target}")
    print(f"\n{os.cpu_count()} CPUs; load generator: {tool}; server log level WARNING")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
