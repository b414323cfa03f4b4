"""Where the small query's time goes, stage by stage, against raw DuckDB in the same run.

Usage: python bench/profile_small.py [--scale 1] [--repeat 31] [--quick] [--average]

Builds the demo home of ``bench/query_overhead.py`` (its two bench operators:
``bench-plain`` with ``reviewed`` grants, whose query is computed and held, and
``bench-dp`` with a budget, whose query is noised and released) and runs its small
query through the real :class:`~sandbox.query.service.QueryService`, ``--repeat``
times per path, each time with a distinct normalized query (a no-op HAVING), so neither
the plan cache nor the release cache answers; then the same query again and again
(``dp repeat``): its analysis comes from the plan cache and its rows from the release
cache.

The stages are the service's own calls, wrapped for the run by a timer (nothing is
replaced: each wrapper calls the real function): a stage's time is its own, the time
of the stages it calls is theirs.  ``other`` is the rest of the run (the service's
glue).  Each figure is the median over the runs, with the 10th-90th percentile spread;
``raw duckdb`` is the same SQL on the enclave's reader in the same run, and ``added``
is the whole run's median minus raw's.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from query_overhead import SMALL, setup

import sandbox.query.release as release_module
import sandbox.query.service as service_module
from sandbox.query.service import QueryService

#: ``--average``: the small query with an average (its per-cell intervals are computed too).
SMALL_AVERAGE = SMALL.replace("count(*)", "count(*), avg(registered_capital)")

STAGES = (
    "parse",
    "authorization",
    "catalog",
    "cost",
    "guard",
    "plan/rewrite",
    "prepare (rest)",
    "cache lookup",
    "charge (ε, usage)",
    "enclave",
    "disclosure",
    "release outputs",
    "commit/audit",
    "audit append",
    "receipt",
    "other",
)


class StageClock:
    """Self time per stage: a stage's clock pauses while a stage it calls runs.

    Each thread keeps its own stack of running stages; ``counts`` says which threads are
    timed (all by default), so a stage also called by a background thread (the risk
    monitor records its alerts through the same audit call) is left out of a profile of
    the request threads.
    """

    def __init__(self, counts: Callable[[threading.Thread], bool] | None = None) -> None:
        self.totals: dict[str, float] = {}
        self._counts = counts
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._counts is not None and not self._counts(threading.current_thread()):
            yield
            return
        stack: list[list[Any]] = self._local.__dict__.setdefault("stack", [])
        frame: list[Any] = [name, time.perf_counter(), 0.0]  # name, started, called stages
        stack.append(frame)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - frame[1]
            stack.pop()
            with self._lock:
                self.totals[name] = self.totals.get(name, 0.0) + elapsed - frame[2]
            if stack:
                stack[-1][2] += elapsed

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return fn(*args, **kwargs)

        return timed

    def reset(self) -> None:
        self.totals = {}


def instrument(clock: StageClock, service: QueryService) -> list[str]:
    """Wrap the service's calls in place; returns the names it could not find (reported)."""
    missing = []
    platform = service.platform
    targets: list[tuple[object, str, str]] = [
        (service_module, "parse_query", "parse"),
        (service_module, "check_cost", "cost"),
        (service_module, "prepare", "prepare (rest)"),
        (service_module, "execute", "enclave"),
        (service_module, "release", "release outputs"),
        (service_module, "issue_receipt", "receipt"),
        (release_module, "check_query", "guard"),
        (release_module, "build_plan", "plan/rewrite"),
        (release_module, "disclose", "disclosure"),
        (platform.authority, "decide", "authorization"),
        (platform.catalog, "get", "catalog"),
        (platform, "record", "audit append"),
        (service, "_cached", "cache lookup"),
        (service, "_charge", "charge (ε, usage)"),
        (service, "_commit", "commit/audit"),
        (service, "_hold", "commit/audit"),
        (service, "_meter", "commit/audit"),
    ]
    for owner, attr, name in targets:
        fn = getattr(owner, attr, None)
        if fn is None:
            missing.append(f"{getattr(owner, '__name__', type(owner).__name__)}.{attr}")
            continue
        setattr(owner, attr, clock.wrap(name, fn))
    return missing


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--quick", action="store_true", help="scale 0.01, 5 runs (a smoke run)")
    parser.add_argument(
        "--average", action="store_true", help="the small query with an avg() beside its count"
    )
    args = parser.parse_args()
    small = SMALL_AVERAGE if args.average else SMALL
    if args.quick:
        args.scale, args.repeat = 0.01, 5
    with tempfile.TemporaryDirectory(prefix="profile-small-") as tmp:
        platform, actors = setup(Path(tmp) / "home", args.scale)
        service = QueryService(platform)
        clock = StageClock()
        missing = instrument(clock, service)
        counter = iter(range(10**9))

        raw_times = []
        with platform.enclave.cursor() as cur:
            cur.sql(small).to_arrow_table()  # warm
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            with platform.enclave.cursor() as cur:
                cur.sql(small).to_arrow_table()
            raw_times.append(time.perf_counter() - t0)
        raw = statistics.median(raw_times) * 1000

        print(f"small query: {small}")
        print(f"--scale {args.scale:g}, median of {args.repeat} runs per path, ms (p10-p90)")
        if missing:
            print(f"not instrumented (renamed?): {', '.join(missing)}")
        print(f"raw duckdb {raw:.2f} ms (p10-p90 {_spread(raw_times)})")

        def fresh() -> str:
            return f"{small} HAVING count(*) > -{next(counter)}"

        for label, who, call, text in (
            ("reviewed (computed, held)", "bench-plain", service.run_job, fresh),
            ("dp (noised, released)", "bench-dp", service.run, fresh),
            # The same text again: analysis from the plan cache, rows from the release cache.
            ("dp repeat (cached)", "bench-dp", service.run, lambda: small),
        ):
            per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
            totals = []
            for i in range(args.repeat + 1):
                clock.reset()
                t0 = time.perf_counter()
                with clock.stage("other"):
                    call(actors[who], text())
                total = time.perf_counter() - t0
                if i == 0:
                    continue  # warm: first-use caches and connections
                totals.append(total)
                for name in STAGES:
                    per_stage[name].append(clock.totals.get(name, 0.0))
            whole = statistics.median(totals) * 1000
            print()
            print(
                f"{label}: whole run {whole:.2f} ms (p10-p90 {_spread(totals)}), "
                f"added over raw {whole - raw:+.2f} ms"
            )
            print(f"  {'stage':<20} {'median ms':>10} {'p10-p90':>15} {'share':>6}")
            for name in STAGES:
                values = per_stage[name]
                if not any(values):
                    continue
                median = statistics.median(values) * 1000
                share = median / whole if whole else 0.0
                print(f"  {name:<20} {median:>10.2f} {_spread(values):>15} {share:>6.0%}")
        platform.close()


def _spread(values: list[float]) -> str:
    return f"{quantile(values, 0.1) * 1000:.2f}-{quantile(values, 0.9) * 1000:.2f}"


if __name__ == "__main__":
    main()
