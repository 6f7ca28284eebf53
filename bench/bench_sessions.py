"""Memory per idle authenticated NDMP session, and the time to open them.

Usage: python bench/bench_sessions.py [--quick] [--sessions 1000] [--dir /dev/shm]

Starts ``ndmpd serve`` on loopback, reads its VmRSS with no session, opens N sessions with
``NdmpClient`` (connect, CONNECT_OPEN, MD5 auth as admin) and leaves them idle, reads VmRSS
again once it has settled, and prints the delta per session. It then closes them and reads
VmRSS once more (what is not given back to the OS). Sessions are opened one after another from
this process, so "open time" includes our client's share of the MD5 round trips.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import proc_status, scratch, start_ndmpd
from ndmpd.protocol.client import NdmpClient


def rss_mib(pid: int) -> float:
    return proc_status(pid).get("VmRSS", 0) / 1024


def settled_rss(pid: int, seconds: float = 1.5) -> float:
    """VmRSS after it stops moving (the server may still be finishing the last handshakes)."""
    last = rss_mib(pid)
    deadline = time.monotonic() + seconds * 4
    while time.monotonic() < deadline:
        time.sleep(seconds / 3)
        now = rss_mib(pid)
        if abs(now - last) < 0.05:
            return now
        last = now
    return last


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=None, help="default 1000 (quick: 100)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", default="/dev/shm", help="scratch parent (default /dev/shm)")
    args = parser.parse_args()
    n = args.sessions or (100 if args.quick else 1000)
    raise_fd_limit(n + 256)
    with scratch("e2ebench-sessions-", args.dir) as base:
        srv = start_ndmpd(base / "ndmpd", tapes=1)
        clients: list[NdmpClient] = []
        try:
            # one session first, so that lazy imports and caches are not charged to the N
            with NdmpClient("127.0.0.1", srv.port) as warm:
                warm.open(check=True)
                warm.auth_md5("admin", srv.password, check=True)
            time.sleep(0.5)
            rss0 = settled_rss(srv.pid)
            t0 = time.perf_counter()
            for _ in range(n):
                c = NdmpClient("127.0.0.1", srv.port, timeout=30)
                c.open(check=True)
                c.auth_md5("admin", srv.password, check=True)
                clients.append(c)
            t_open = time.perf_counter() - t0
            rss_n = settled_rss(srv.pid)
            # every session still answers after the others were opened
            t1 = time.perf_counter()
            for c in clients:
                c.open(check=True)
            t_ping = time.perf_counter() - t1
            for c in clients:
                c.close()
            clients.clear()
            gc.collect()
            time.sleep(2)
            rss_after = settled_rss(srv.pid)
            hwm = proc_status(srv.pid).get("VmHWM", 0) / 1024
        finally:
            for c in clients:
                c.close()
            srv.stop()
    per = (rss_n - rss0) * 1024 / n
    print(f"ndmpd: {n} idle authenticated sessions (connect, CONNECT_OPEN, MD5 auth)")
    print(f"  {'VmRSS, 0 sessions (1 opened and closed first)':<52} {rss0:9.1f} MiB")
    print(f"  {f'VmRSS, {n} idle sessions':<52} {rss_n:9.1f} MiB")
    print(f"  {'per session':<52} {per:9.1f} KiB")
    print(f"  {'VmRSS after closing them':<52} {rss_after:9.1f} MiB")
    print(f"  {'VmHWM':<52} {hwm:9.1f} MiB")
    print(
        f"  {'time to open them, one after another':<52} {t_open:9.2f} s "
        f"({t_open / n * 1000:.2f} ms per session)"
    )
    print(
        f"  {'one more CONNECT_OPEN round trip on each':<52} {t_ping:9.2f} s "
        f"({t_ping / n * 1e6:.0f} us per request)"
    )


if __name__ == "__main__":
    main()
