"""HTTP load: concurrent clients against a real server on loopback, bounded in time.

Usage: python bench/http_load.py [--scale 0.1] [--seconds 10] [--clients 8] [--workers 1]

Builds a demo home in a temp dir, starts `sandbox serve` on a free 127.0.0.1 port (rate
limit raised out of the way), and runs, one after the other, for --seconds each:

- ``explain``: ``POST /v1/explain`` of a small grouped query;
- ``query``: ``POST /v1/jobs?wait=true`` of a small query, released synchronously; every
  request asks a different query (a moving filter), so the release cache never answers;
- ``query (cached)``: the same query each time, answered from the release cache.

It prints requests per second and p50 / p99 latency per phase, and checks that the audit
trail grew by exactly one entry per request (read from the audit store itself, so the
check adds no entries).  Loopback only: nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from audit import AuditTrail, KeyRing
from sandbox.settings import Settings

EXPLAIN = "SELECT industry, count(*) AS n FROM market.enterprises GROUP BY 1"
QUERY = "SELECT industry, count(*) AS n FROM market.enterprises WHERE founded > {} GROUP BY 1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build(home: Path, scale: float) -> dict[str, str]:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "--home", str(home), "demo", "--scale", str(scale)],
        check=True,
        capture_output=True,
    )
    print(f"demo home at --scale {scale:g} built in {time.perf_counter() - started:.1f} s")
    return json.loads((home / "demo-tokens.json").read_text())  # type: ignore[no-any-return]


def serve(home: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ, SANDBOX_HOME=str(home), SANDBOX_RATE_LIMIT_PER_MINUTE="100000000")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("the server did not start")


def audit_size(home: Path) -> int:
    settings = Settings(home=home)
    trail = AuditTrail.open(settings.audit_db_url, KeyRing(settings.keys_dir))
    try:
        return trail.size()
    finally:
        trail.close()


def phase(
    name: str,
    url: str,
    token: str,
    clients: int,
    seconds: float,
    request: Callable[[httpx.Client, int], httpx.Response],
    home: Path,
) -> None:
    before = audit_size(home)
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    counter = itertools.count()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            while time.perf_counter() < stop:
                n = next(counter)
                t0 = time.perf_counter()
                response = request(client, n)
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        failures.append(response.status_code)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    entries = audit_size(home) - before
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    verdict = "==" if entries == len(ms) else "!="
    print(
        f"{name:<16} {len(ms):>6} requests  {len(ms) / wall:>7.1f} req/s  "
        f"p50 {statistics.median(ms):>6.1f} ms  p99 {p99:>6.1f} ms  "
        f"errors {len(failures)}  audit entries {entries} {verdict} requests"
    )
    if failures:
        print(f"  error statuses: {sorted(set(failures))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="demo data scale (1 = 1M claims)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="http-load-") as tmp:
        home = Path(tmp) / "home"
        tokens = build(home, args.scale)
        proc, url = serve(home, args.workers)
        try:
            print(
                f"server {url}, {args.workers} process(es), {os.cpu_count()} cores; "
                f"{args.clients} clients, {args.seconds:g} s per phase"
            )
            bank = tokens["op-bank"]
            phase(
                "explain",
                url,
                bank,
                args.clients,
                args.seconds,
                lambda c, n: c.post("/v1/explain", json={"sql": EXPLAIN}),
                home,
            )
            phase(
                "query",
                url,
                bank,
                args.clients,
                args.seconds,
                lambda c, n: c.post(
                    "/v1/jobs", params={"wait": "true"}, json={"sql": QUERY.format(n)}
                ),
                home,
            )
            phase(
                "query (cached)",
                url,
                bank,
                args.clients,
                args.seconds,
                lambda c, n: c.post(
                    "/v1/jobs", params={"wait": "true"}, json={"sql": QUERY.format(1990)}
                ),
                home,
            )
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
