"""Risk monitoring cost (issue 16): per query, and re-evaluating an operator's history.

Targets: the detectors add at most 1 ms per query; 100,000 decisions of one operator
are re-evaluated in under a second.  Measured in one run, on one demo deployment
(scale 0.01), against raw DuckDB on the same enclave file:

1. ``fingerprint``: the predicate fingerprint of one utility-corpus query's
   normalized SQL (part of 2; shown on its own);
2. ``monitor``: :meth:`Monitor.process` of one decision (parse the audit entry, bring
   the operator's history up to date from the audit store, fingerprint, every
   detector), on the monitor's thread, per decision, with the raw DuckDB time of the
   same corpus queries for the ratio.  On the query's own thread the monitor costs
   one queue put;
3. ``rescan``: :func:`scan` of 100,000 synthetic decisions of one operator (a mix of
   answers with fingerprints from the corpus, refusals, suppressions, ε spends).

Medians and spread (min..max) over ``--repeat`` runs.

    .venv/bin/python bench/monitoring_bench.py
    .venv/bin/python bench/monitoring_bench.py --repeat 5 --decisions 100000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb
import sqlglot

from audit import Entry
from sandbox.core.errors import SandboxError
from sandbox.enclave.encrypted import connect_home
from sandbox.monitoring import Event, Monitor, predicate_fingerprint, scan, thresholds_of
from sandbox.monitoring.detectors import Thresholds
from sandbox.query.service import QueryService
from tests.conftest import build_deployment

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "utility" / "queries.jsonl"


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.3f} (min {min(values):.3f} .. max {max(values):.3f})"
    )


def corpus() -> list[dict[str, str]]:
    return [json.loads(x) for x in CORPUS.read_text().splitlines() if x.strip()]


def normalized(lines: list[dict[str, str]]) -> list[str]:
    """The corpus queries as the audit records them (``normalized_sql``); a few are other
    dialects sqlglot does not parse (the guard refuses them)."""
    out = []
    for line in lines:
        try:
            query = sqlglot.parse_one(line["sql"], read="duckdb")
        except sqlglot.errors.ParseError:
            continue
        out.append(query.sql(dialect="duckdb", normalize=True))
    return out


def fingerprint_us(lines: list[dict[str, str]], repeat: int) -> list[float]:
    texts = normalized(lines)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for text in texts:
            predicate_fingerprint(text)
        runs.append((time.perf_counter() - start) / len(texts) * 1e6)
    return runs


def live(lines: list[dict[str, str]], repeat: int) -> tuple[list[float], list[float], list[float]]:
    """Monitor.process per decision (µs: wall, CPU) and raw DuckDB per corpus query (ms)."""
    with tempfile.TemporaryDirectory() as home:
        platform, tokens = build_deployment(Path(home) / "home")
        try:
            actors = {n: platform.authority.authenticate(t) for n, t in tokens.items()}
            service = QueryService(platform)
            receipts: list[bytes] = []
            service.observer = lambda receipt: receipts.append(receipt.entry)
            for line in lines:
                try:
                    service.run(actors[line["as"]], line["sql"])
                except SandboxError:
                    pass
            entries = [Entry.from_bytes(raw) for raw in receipts]
            monitor_runs: list[float] = []
            monitor_cpu: list[float] = []
            for _ in range(repeat):
                monitor = Monitor(platform, lambda: platform.settings)  # fresh histories
                for entry in entries[:5]:
                    monitor.process(entry)  # first sight of each operator loads its history
                monitor._histories.clear()
                for entry in entries:  # warm: one history per operator, then every decision
                    monitor._history(entry.actor, entry.seq)
                    break
                start, cpu = time.perf_counter(), time.process_time()
                for entry in entries:
                    monitor.process(entry)
                monitor_runs.append((time.perf_counter() - start) / len(entries) * 1e6)
                monitor_cpu.append((time.process_time() - cpu) / len(entries) * 1e6)
        finally:
            platform.close()
        con = connect_home(platform.settings)
        raw_runs = []
        for _ in range(repeat):
            start, count = time.perf_counter(), 0
            for line in lines:
                try:
                    con.sql(line["sql"].replace("health.claims", '"health.claims"')).fetchall()
                    count += 1
                except duckdb.Error:
                    pass
            raw_runs.append((time.perf_counter() - start) / max(count, 1) * 1e3)
        con.close()
    return monitor_runs, monitor_cpu, raw_runs


def synthetic(n: int, lines: list[dict[str, str]], seed: int = 7) -> list[Event]:
    """An operator's history: a query every 20 s on average during working hours
    (09:00-18:00 local, weekdays), 10% refused, 10% with small groups suppressed, each
    answer one of the corpus's fingerprints with one of 50 constants, ε spent on each."""
    rng = random.Random(seed)
    prints = [predicate_fingerprint(text) for text in normalized(lines)]
    events: list[Event] = []
    at = 1_789_952_400.0  # a Monday 09:00 in UTC+8
    rules = ["guard.identifier", "guard.band", "budget.exhausted", "guard.columns"]
    for seq in range(n):
        at += rng.expovariate(1 / 20)
        local = (at + 8 * 3600) % 86400
        if local >= 18 * 3600:  # the next working morning (weekends skipped)
            at += 86400 - local + 9 * 3600
            while int((at + 8 * 3600) // 86400 + 3) % 7 >= 5:
                at += 86400
        if rng.random() < 0.1:
            rule = rng.choice(rules)
            events.append(Event(seq, at, "op", "health.claims", False, rule, client="10.0.0.1"))
            continue
        f = prints[rng.randrange(len(prints))]
        events.append(
            Event(
                seq,
                at,
                "op",
                "health.claims",
                True,
                "grant.allow",
                client="10.0.0.1",
                query=f"{f['template']}{rng.randrange(50)}",
                shape=f["shape"],
                template=f["template"],
                sets=tuple(tuple(s) for s in f["sets"]),
                suppressed=rng.choice([0] * 9 + [3]),
                epsilon_spent=0.1,
                epsilon_remaining=1e6 - 0.1 * seq,
            )
        )
    return events


def rescan_s(
    events: list[Event], th: Thresholds, repeat: int
) -> tuple[list[float], list[float], int]:
    runs, cpu_runs, found = [], [], 0
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        found = len(scan("op", events, th))
        runs.append(time.perf_counter() - start)
        cpu_runs.append(time.process_time() - cpu)
    return runs, cpu_runs, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--decisions", type=int, default=100_000)
    args = parser.parse_args()
    lines = corpus()
    fp = fingerprint_us(lines, args.repeat)
    print(f"fingerprint per query (µs), {len(lines)} corpus queries: {spread(fp)}")
    monitor, monitor_cpu, raw = live(lines, args.repeat)
    print(f"monitor per decision (µs wall), {len(lines)} decisions: {spread(monitor)}")
    print(f"monitor per decision (µs CPU of this process): {spread(monitor_cpu)}")
    print(f"raw DuckDB per corpus query (ms wall): {spread(raw)}")
    wall_ms, cpu_ms = statistics.median(monitor) / 1000, statistics.median(monitor_cpu) / 1000
    print(
        f"detectors per query: {wall_ms:.3f} ms wall, {cpu_ms:.3f} ms CPU (target <= 1 ms: "
        f"{'met' if cpu_ms <= 1 else 'MISSED'} in CPU, {'met' if wall_ms <= 1 else 'MISSED'} "
        f"in wall time); ratio to raw DuckDB (wall): {wall_ms / statistics.median(raw):.2f}"
    )
    from sandbox.core.settings import Settings

    events = synthetic(args.decisions, lines)
    runs, cpu_runs, found = rescan_s(events, thresholds_of(Settings()), args.repeat)
    days = (events[-1].at - events[0].at) / 86400
    print(
        f"re-evaluate {args.decisions:,} decisions of one operator ({days:.0f} days): "
        f"wall s {spread(runs)}; CPU s {spread(cpu_runs)}; {found} findings; target < 1 s: "
        f"{'met' if statistics.median(cpu_runs) < 1 else 'MISSED'} in CPU, "
        f"{'met' if statistics.median(runs) < 1 else 'MISSED'} in wall time"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
