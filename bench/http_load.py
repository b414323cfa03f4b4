"""HTTP load: concurrent clients against a real server on loopback, bounded in time.

Usage: python bench/http_load.py [--scale 0.1] [--seconds 10] [--clients 8] [--workers 1]
       [--mix] [--only PHASE ...]

Builds a demo home in a temp dir with grants that fit the load (:func:`build`: dp
budgets that outlast the run, the bank's grants released under dp rather than held for
review), starts `sandbox serve` on a free 127.0.0.1 port (rate limit and per-operator
job limit raised out of the way), and runs, one after the other, for --seconds each:

- ``explain``: ``POST /v1/explain`` of a small grouped query;
- ``query``: ``POST /v1/jobs?wait=true`` of a small query, released synchronously; every
  request asks a different query (a moving filter), so the release cache never answers
  (each phase numbers its filters from a range of its own, so the mixed phase's small
  queries are not this phase's again);
- ``query (cached)``: the same query each time, answered from the release cache;
- with ``--mix``, ``mixed``: the load test's mix (``loadgen.standard_mix``: explains, small
  and cached queries, refusals and a few large jobs polled to completion, as three
  operators), one line per request kind.

Each phase starts with one request of each of its operations, not counted
(``loadgen.warm_up``: the server's first use of a route costs about 0.3 s); clients reuse
their connection (keep-alive), as a client of the API would.

``--only`` runs the named phases only (``--only mixed --clients 50``: the load test's
mix at 50 clients, issue 15's "50 clients, mixed" figure).

It prints requests per second and p50 / p99 latency per phase, the CPU time each request
cost the server (its whole process group) and this load generator (whose client threads
share the machine's cores), and checks that the audit
trail grew by exactly the entries the documented rule expects (one per explain and per
synchronous query; none for polling one's own job), read from the audit store itself, so
the check adds no entries.  The client loop is ``bench/loadgen.py``, shared with
``tests/security/test_load.py``.  Loopback only: nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
from loadgen import (
    EXPLAIN,
    QUERY,
    MixEntry,
    audit_size,
    explain,
    load_deployment,
    monitor_entries,
    run_load,
    small_query,
    standard_mix,
    sync_query,
    warm_up,
)

#: How many operation numbers each phase has to itself (``run_load``'s ``first``), below
#: ``loadgen.WARM_UP_N``: no phase's query is another's again.
PHASE_NUMBERS = 100_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build(home: Path, scale: float) -> dict[str, str]:
    """The load deployment (``loadgen.load_deployment``) at ``scale`` in a new ``home``,
    its tokens also written to ``demo-tokens.json``; its tokens."""
    from policies.demo import write_tokens
    from sandbox.core.settings import Settings
    from sandbox.platform import Platform

    started = time.perf_counter()
    platform = Platform(Settings(home=home))
    try:
        tokens = load_deployment(
            platform, scale, by="bench", reason="load benchmark: released without review"
        )
    finally:
        platform.close()
    write_tokens(home / "demo-tokens.json", tokens)
    print(f"demo home at --scale {scale:g} built in {time.perf_counter() - started:.1f} s")
    return tokens


def serve(home: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(
        os.environ,
        SANDBOX_HOME=str(home),
        SANDBOX_RATE_LIMIT_PER_MINUTE="100000000",
        SANDBOX_MAX_JOBS_PER_OPERATOR="100000",
    )
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


def cpu_seconds(group: int) -> float:
    """User + system CPU time of every live process in process group ``group`` (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the command: state (0), ppid, pgrp (2), ... utime (11), stime (12).
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def phase(
    name: str,
    url: str,
    tokens: Mapping[str, str],
    clients: int,
    seconds: float,
    mix: Sequence[MixEntry],
    home: Path,
    server: int,
    first: int = 0,
) -> None:
    """Warm up, run one mix for ``seconds`` and print its figures, the audit check and
    where the CPU went (the server's process group, and this load generator)."""
    warm_up(url, tokens, mix)
    before = audit_size(home)
    server0, client0, wall0 = cpu_seconds(server), time.process_time(), time.perf_counter()
    result = run_load(url, tokens, mix, clients=clients, seconds=seconds, first=first)
    wall = time.perf_counter() - wall0
    server_cpu, client_cpu = cpu_seconds(server) - server0, time.process_time() - client0
    # The risk monitor's alert entries (alert.*) come on top of the requests' own, as the
    # load test counts them (tests/security/test_load.py).
    entries = audit_size(home) - before - monitor_entries(home, since=before)
    expected = result.expected_entries
    verdict = "==" if entries == expected else "!="
    what = "requests" if expected == len(result.samples) else "expected"
    check = f"  audit entries {entries} {verdict} {what}"
    if len(result.kinds()) == 1:  # a single kind: one line under the phase's name
        print(result.lines({"all": name})[-1] + check)
    else:
        print(f"{name}:{check}")
        for line in result.lines():
            print(f"  {line}")
    n = max(1, len(result.samples))
    print(
        f"  CPU: server {server_cpu / n * 1000:.1f} ms a request ({server_cpu / wall:.2f} of "
        f"{os.cpu_count()} cores busy), load generator {client_cpu / n * 1000:.1f} ms a "
        f"request ({client_cpu / wall:.2f} cores)"
    )
    failed = sorted({s.status for s in result.samples if s.status >= 400 or s.status == 0})
    if failed:
        print(f"  error statuses: {failed}")
    unanswered = [s for s in result.samples if s.status == 0]
    if unanswered:  # no HTTP answer at all: say what the client saw, and the server's state
        alive = "running" if _alive(server) else "gone"
        print(
            f"  no answer to {len(unanswered)} requests; the first: {unanswered[0].error}; "
            f"the server process is {alive}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="demo data scale (1 = 1M claims)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--mix", action="store_true", help="also run the load test's mix")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("explain", "query", "query (cached)", "mixed"),
        help="run only these phases",
    )
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
            bank = "op-bank"
            phases: list[tuple[str, list[MixEntry]]] = [
                ("explain", [MixEntry(1, explain("explain", bank, lambda n: EXPLAIN))]),
                ("query", [MixEntry(1, sync_query("query", bank, small_query))]),
                (
                    "query (cached)",
                    [MixEntry(1, sync_query("query (cached)", bank, lambda n: QUERY.format(1990)))],
                ),
            ]
            if args.mix or (args.only and "mixed" in args.only):
                phases.append(("mixed", standard_mix()))
            if args.only:
                phases = [(name, mix) for name, mix in phases if name in args.only]
            for number, (name, mix) in enumerate(phases):
                # Each phase numbers its queries from its own range: the mixed phase's
                # small queries are not the query phase's again (a repeat is cached).
                first = number * PHASE_NUMBERS
                phase(name, url, tokens, args.clients, args.seconds, mix, home, proc.pid, first)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
