"""Where an HTTP small query's server time goes: each server thread's CPU, and the
request thread's stages.

Usage: python bench/profile_http.py [--scale 0.1] [--requests 600] [--quick]

Builds the load deployment of ``bench/http_load.py`` (its :func:`~http_load.build`),
serves the real application under uvicorn on a loopback port as ``sandbox serve`` runs
it (h11, one process), but in this process, so that its threads can be read, and sends
``POST /v1/jobs?wait=true`` small queries (``loadgen.small_query``: a different filter
each time, over the same rows, so neither the plan cache nor the release cache answers)
one at a time from one client thread.  One at a time, so requests do not queue behind
each other (``http_load.py`` measures that); the server's own background threads (the
risk monitor evaluating the last request's audit entry, the audit writer, DuckDB's
threads) still run beside the next request and take the GIL from it now and then.

Two tables:

- **CPU a request, by thread**: each thread's time on a CPU over the run (Linux
  ``/proc/self/task/<tid>/schedstat``, nanoseconds; ``stat``'s 10 ms ticks where it is
  missing), divided by the requests, grouped by what the thread does: the event loop
  (uvicorn's h11 parsing, FastAPI's routing, validation and JSON), the request threads
  (AnyIO's pool: the handler, the job desk and the whole query path, control-plane
  commits included), the audit writer (group commit), the risk monitor, DuckDB's own
  worker threads (threads Python does not know), and the rest.  The client thread is this
  process's too and is shown apart, never in the server's total.  The process's own CPU
  time over the run is printed beside the threads' sum: a thread that started and ended
  within the run is in the first only.
- **The request thread by stage**: wall time a request (mean), with
  ``profile_small.py``'s stages (each the service's own call, wrapped for the run, timed
  in the request threads only) and the job desk's own: its limit check, the job row and
  reading the released rows back.  A stage's wall time includes what it waits for:
  DuckDB's threads running the stats query, fsync, the GIL.  The last line,
  ``outside the stages``, is the client's latency minus the stages: the handler's glue
  and response model, the event loop, the hand-offs between threads, the loopback and
  the client's own HTTP work.

Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from http_load import build, free_port
from loadgen import small_query
from profile_small import StageClock, instrument

#: Python thread names (their prefix) and what the table calls them.
GROUPS = (
    ("uvicorn", "event loop (h11, routing, validation, JSON)"),
    ("AnyIO worker thread", "request threads (handler, job desk, query path)"),
    ("audit-writer", "audit writer (group commit)"),
    ("monitor", "risk monitor"),
)
NATIVE = "DuckDB workers and other native threads"
REST = "other Python threads (job runner, watchdogs)"
CLIENT = "client"

#: The job desk's own calls, timed besides profile_small's stages.
DESK_STAGES = (
    ("active_count", "job desk: concurrency limit"),
    ("new", "job desk: job row"),
    ("result", "job desk: read the released rows back"),
)


def thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process, by native id (``schedstat``'s
    nanoseconds on a CPU; ``stat``'s user and system ticks where it is missing)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/schedstat", "rb") as handle:
                out[int(task)] = int(handle.read().split()[0]) / 1e9
            continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"/proc/self/task/{task}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        out[int(task)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def process_cpu() -> float:
    """This process's user and system CPU seconds, every thread it ever had included."""
    times = os.times()
    return times.user + times.system


def python_names() -> dict[int, str]:
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def group_of(name: str | None) -> str:
    if name is None:
        return NATIVE
    for prefix, label in GROUPS:
        if name.startswith(prefix):
            return label
    return REST


def serve(app: Any, port: int) -> tuple[Any, threading.Thread]:
    """The application under uvicorn in a thread named ``uvicorn`` (as ``sandbox serve``)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        proxy_headers=False,
        forwarded_allow_ips="",
        http="h11",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    return server, thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="demo data scale")
    parser.add_argument("--requests", type=int, default=600, help="measured requests")
    parser.add_argument("--quick", action="store_true", help="scale 0.01, 40 requests")
    args = parser.parse_args()
    if args.quick:
        args.scale, args.requests = 0.01, 40
    with tempfile.TemporaryDirectory(prefix="profile-http-") as tmp:
        home = Path(tmp) / "home"
        tokens = build(home, args.scale)
        # As bench/http_load.py's server: limits out of the way, one process.
        os.environ.update(
            SANDBOX_HOME=str(home),
            SANDBOX_RATE_LIMIT_PER_MINUTE="100000000",
            SANDBOX_MAX_JOBS_PER_OPERATOR="100000",
            SANDBOX_WORKERS="1",
            SANDBOX_JOB_WORKERS=str(os.cpu_count() or 1),
            PROMETHEUS_MULTIPROC_DIR=str(Path(tmp) / "prometheus"),
        )
        (Path(tmp) / "prometheus").mkdir()
        from sandbox.api.app import create_app
        from sandbox.core.settings import load_settings

        app = create_app(load_settings())
        services = app.state.services
        port = free_port()
        server, loop_thread = serve(app, port)
        try:
            run(services, f"http://127.0.0.1:{port}", tokens["op-bank"], args)
        finally:
            server.should_exit = True
            loop_thread.join(timeout=60)


def run(services: Any, url: str, token: str, args: argparse.Namespace) -> None:
    requests = args.requests
    clock = StageClock(counts=lambda t: t.name.startswith("AnyIO worker thread"))
    missing = instrument(clock, services.service)
    store = services.desk.store
    for attr, name in DESK_STAGES:
        setattr(store, attr, clock.wrap(name, getattr(store, attr)))
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=120) as client:

        def one(n: int) -> float:
            t0 = time.perf_counter()
            response = client.post(
                "/v1/jobs",
                params={"wait": "true"},
                json={"sql": small_query(n)},
                headers=headers,
            )
            elapsed = time.perf_counter() - t0
            if response.status_code != 200 or response.json().get("state") != "succeeded":
                raise RuntimeError(f"request {n}: {response.status_code} {response.text[:200]}")
            return elapsed

        for n in range(20):  # warm: routes, connections, caches of the first use
            one(10_000_000 + n)
        services.monitor.drain()  # the warm-up's evaluations, before the clocks start
        clock.reset()
        names = python_names()
        before, process0 = thread_cpu(), process_cpu()
        t0 = time.perf_counter()
        walls = [one(n) for n in range(requests)]
        wall = time.perf_counter() - t0
        services.monitor.drain()  # every evaluation these requests caused, and no more
        after, process = thread_cpu(), process_cpu() - process0
        names |= python_names()  # threads started during the run too
    client_id = threading.main_thread().native_id
    per_group: dict[str, float] = {}
    for tid, seconds in after.items():
        used = seconds - before.get(tid, 0.0)
        group = CLIENT if tid == client_id else group_of(names.get(tid))
        per_group[group] = per_group.get(group, 0.0) + used
    ended = len(set(before) - set(after))
    server_cpu = sum(v for k, v in per_group.items() if k != CLIENT)
    threads_cpu = server_cpu + per_group.get(CLIENT, 0.0)

    print(
        f"HTTP small query, one at a time: {requests} requests in {wall:.1f} s, "
        f"{requests / wall:.1f} req/s, latency median {statistics.median(walls) * 1000:.1f} ms "
        f"(p90 {sorted(walls)[int(0.9 * (requests - 1))] * 1000:.1f} ms)"
    )
    if missing:
        print(f"not instrumented (renamed?): {', '.join(missing)}")
    print(f"server CPU a request: {server_cpu / requests * 1000:.2f} ms, by thread:")
    order = [label for _, label in GROUPS] + [NATIVE, REST]
    for label in order:
        ms = per_group.get(label, 0.0) / requests * 1000
        share = per_group.get(label, 0.0) / server_cpu if server_cpu else 0.0
        print(f"  {label:<50} {ms:6.2f} ms  {share:4.0%}")
    client_ms = per_group.get(CLIENT, 0.0) / requests * 1000
    print(f"  (the client thread, not the server: {client_ms:.2f} ms)")
    print(
        f"  (the process's CPU over the run: {process / requests * 1000:.2f} ms a request, "
        f"against {threads_cpu / requests * 1000:.2f} ms in its threads' sum, client included; "
        f"{ended} thread(s) ended during the run)"
    )
    print("the request thread by stage (wall ms a request, mean):")
    stages = dict(sorted(clock.totals.items(), key=lambda item: -item[1]))
    timed = sum(stages.values())
    request_cpu = per_group.get(GROUPS[1][1], 0.0)
    for name, seconds in stages.items():
        print(f"  {name:<40} {seconds / requests * 1000:6.2f}")
    rest = max(0.0, statistics.fmean(walls) * requests - timed)
    print(f"  {'outside the stages':<40} {rest / requests * 1000:6.2f}")
    print(
        f"  (the request threads' CPU: {request_cpu / requests * 1000:.2f} ms a request; "
        f"the stages' wall time: {timed / requests * 1000:.2f} ms, which includes waiting "
        "for DuckDB's threads, fsync and the GIL)"
    )


if __name__ == "__main__":
    main()
