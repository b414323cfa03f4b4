"""Risk monitoring cost (issues 16 and 15): per query, and re-evaluating a history.

Targets: the detectors add at most 1 ms per query (issue 16); 100,000 decisions of one
operator are re-evaluated in under a second.  Issue 15 asks the monitor to cost as
little CPU per decision as it can: it runs on a thread of the server process, under
the GIL the requests need.  Measured in one run:

1. ``fingerprint``: the predicate fingerprint of one utility-corpus query's
   normalized SQL (part of 2; shown on its own);
2. ``monitor``: the monitor's CPU and wall time per decision (read the audit entry,
   bring the operator's history up to date from the audit store, fingerprint, every
   detector, record what they find), on two streams of real decisions:

   - ``corpus``: the utility corpus run once on a demo deployment (scale 0.01; mostly
     refusals: the demo's bank grants want review), with the raw DuckDB time of the
     same corpus queries for the ratio;
   - ``small``: ``--small`` pairs of issue 15's HTTP phase as the bank, in process on
     the load deployment (``loadgen.load_deployment``): an explain of a small grouped
     query and a small query with a moving filter, whose median time in process is the
     anchor (the monitor's CPU as a share of one small query);

   each in these modes, interleaved within each repeat (the order reversed every other
   repeat), each on a fresh monitor whose operators' histories were first loaded
   (each operator's first decision, untimed):

   - ``one at a time``: :meth:`Monitor.process` of each decision;
   - ``batches of 8``: :meth:`Monitor.process_batch` of 8 at a time;
   - ``queued``: every decision queued before the monitor thread starts, then
     ``drain()``: the thread takes up to 256 at a time (a backlog, as under load);
   - with ``--against REV``: ``REV one at a time``: ``Monitor.process`` of the
     ``sandbox/monitoring/monitor.py`` of git revision REV, loaded beside the current
     one (the other monitoring modules are the working tree's; the bench lists those
     that differ from REV);
3. ``threads`` (``--threads N``, 0 to skip): N request threads in this process, each
   running ``--per-thread`` pairs of the small stream, with no monitor, REV's (with
   ``--against``) and the current one attached as the server attaches it (its thread
   started, ``observe`` as the observer), interleaved: decisions per second until the
   monitor has drained, and the mean number of decisions the current monitor's thread
   took per batch (what batching gets under load);
4. ``rescan``: :func:`scan` of 100,000 synthetic decisions of one operator (a mix of
   answers with fingerprints from the corpus, refusals, suppressions, ε spends).

CPU is this process's (``time.process_time``: the monitor thread included).  Medians
and spread (min..max) over ``--repeat`` runs.

    .venv/bin/python bench/monitoring_bench.py
    .venv/bin/python bench/monitoring_bench.py --repeat 5 --decisions 100000
    .venv/bin/python bench/monitoring_bench.py --repeat 7 --against 4d5f1ef
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb
import sqlglot
from loadgen import EXPLAIN, QUERY, load_deployment

from audit import Entry
from sandbox.core.errors import SandboxError
from sandbox.core.settings import Settings
from sandbox.enclave.encrypted import connect_home
from sandbox.monitoring import Event, Monitor, predicate_fingerprint, scan, thresholds_of
from sandbox.monitoring.detectors import Thresholds
from sandbox.platform import Platform
from sandbox.query.service import QueryService
from tests.conftest import build_deployment

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "utility" / "queries.jsonl"


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


Feed = Callable[[Any, list[Entry], list[bytes]], None]
"""One mode: evaluate ``entries`` (their raw bytes beside them) on a fresh monitor."""


def _one_at_a_time(monitor: Any, entries: list[Entry], raw: list[bytes]) -> None:
    for entry in entries:
        monitor.process(entry)


def _batches_of_8(monitor: Any, entries: list[Entry], raw: list[bytes]) -> None:
    for i in range(0, len(entries), 8):
        monitor.process_batch(entries[i : i + 8])


def _queued(monitor: Any, entries: list[Entry], raw: list[bytes]) -> None:
    for item in raw:
        monitor._queue.put(item)
    monitor.start()
    monitor.drain()
    monitor.stop()


def modes(
    against: ModuleType | None, rev: str
) -> list[tuple[str, Callable[[Platform], Any], Feed]]:
    def current(platform: Platform) -> Monitor:
        return Monitor(platform, lambda: platform.settings)

    out: list[tuple[str, Callable[[Platform], Any], Feed]] = []
    if against is not None:
        old = against.Monitor
        out.append((f"{rev} one at a time", lambda p: old(p, lambda: p.settings), _one_at_a_time))
    out += [
        ("one at a time", current, _one_at_a_time),
        ("batches of 8", current, _batches_of_8),
        ("queued", current, _queued),
    ]
    return out


def per_decision(
    platform: Platform,
    raw: list[bytes],
    repeat: int,
    chosen: Sequence[tuple[str, Callable[[Platform], Any], Feed]],
) -> dict[str, tuple[list[float], list[float]]]:
    """Each mode's µs per decision (CPU, wall) per repeat, interleaved."""
    entries = [Entry.from_bytes(item) for item in raw]
    first: dict[str, int] = {}
    for i, entry in enumerate(entries):
        first.setdefault(entry.actor, i)
    primers = [entries[i] for i in sorted(first.values())]
    timed = [i for i in range(len(entries)) if i not in set(first.values())]
    rest, rest_raw = [entries[i] for i in timed], [raw[i] for i in timed]
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _, _ in chosen}
    for run in range(repeat):
        for name, make, feed in chosen if run % 2 == 0 else chosen[::-1]:
            monitor = make(platform)
            for entry in primers:  # first sight: each operator's history loaded, untimed
                monitor.process(entry)
            start, cpu = time.perf_counter(), time.process_time()
            feed(monitor, rest, rest_raw)
            out[name][0].append((time.process_time() - cpu) / len(rest) * 1e6)
            out[name][1].append((time.perf_counter() - start) / len(rest) * 1e6)
    return out


def corpus_decisions(
    platform: Platform, tokens: dict[str, str], lines: list[dict[str, str]]
) -> list[bytes]:
    """The corpus run once through the query service: every decision's audit entry."""
    actors = {n: platform.authority.authenticate(t) for n, t in tokens.items()}
    service = QueryService(platform)
    receipts: list[bytes] = []
    service.observer = lambda receipt: receipts.append(receipt.entry)
    for line in lines:
        try:
            service.run(actors[line["as"]], line["sql"])
        except SandboxError:
            pass
    return receipts


def small_decisions(
    platform: Platform, tokens: dict[str, str], pairs: int
) -> tuple[list[bytes], list[float]]:
    """Issue 15's HTTP phase in process: per pair an explain and a small query with a
    moving filter, as the bank; the entries and each query's wall time (ms)."""
    bank = platform.authority.authenticate(tokens["op-bank"])
    service = QueryService(platform)
    receipts: list[bytes] = []
    service.observer = lambda receipt: receipts.append(receipt.entry)
    times = []
    for n in range(pairs):
        service.explain(bank, EXPLAIN)
        start = time.perf_counter()
        service.run_job(bank, QUERY.format(1900 + n))
        times.append((time.perf_counter() - start) * 1e3)
    return receipts, times


def raw_duckdb_ms(settings: Settings, lines: list[dict[str, str]], repeat: int) -> list[float]:
    con = connect_home(settings)
    runs = []
    for _ in range(repeat):
        start, count = time.perf_counter(), 0
        for line in lines:
            try:
                con.sql(line["sql"].replace("health.claims", '"health.claims"')).fetchall()
                count += 1
            except duckdb.Error:
                pass
        runs.append((time.perf_counter() - start) / max(count, 1) * 1e3)
    con.close()
    return runs


def threaded(
    platform: Platform,
    tokens: dict[str, str],
    clients: int,
    per_thread: int,
    repeat: int,
    against: ModuleType | None,
    rev: str,
) -> tuple[dict[str, list[float]], list[float]]:
    """Decisions per second with each monitor (or none) and the current one's mean batch."""
    bank = platform.authority.authenticate(tokens["op-bank"])
    kinds: list[tuple[str, Any]] = [("no monitor", None)]
    if against is not None:
        kinds.append((rev, against.Monitor))
    kinds.append(("current", Monitor))
    rates: dict[str, list[float]] = {name: [] for name, _ in kinds}
    batches: list[float] = []
    moving = iter(range(10**9))
    for run in range(repeat):
        for name, kind in kinds if run % 2 == 0 else kinds[::-1]:
            service = QueryService(platform)
            monitor = None if kind is None else kind(platform, lambda: platform.settings)
            if monitor is not None:
                monitor.start()
                service.observer = monitor.observe

            def client(service: QueryService = service) -> None:
                for _ in range(per_thread):
                    service.explain(bank, EXPLAIN)
                    service.run_job(bank, QUERY.format(next(moving)))

            threads = [threading.Thread(target=client) for _ in range(clients)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if monitor is not None:
                monitor.drain()
            rates[name].append(2 * clients * per_thread / (time.perf_counter() - start))
            if monitor is not None:
                monitor.stop()
                if kind is Monitor:
                    batches.append(monitor.taken / max(monitor.batches, 1))
    return rates, batches


def monitor_at(rev: str) -> ModuleType:
    """``sandbox/monitoring/monitor.py`` of git revision ``rev``, as a module beside the
    current one (its relative imports resolve to the working tree's package)."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:sandbox/monitoring/monitor.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="monitor-at-")) / "monitor_at_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("sandbox.monitoring._monitor_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def report_modes(label: str, results: dict[str, tuple[list[float], list[float]]], n: int) -> None:
    base = statistics.median(results["one at a time"][0])
    print(f"monitor per decision, {label} ({n} decisions, µs):")
    for name, (cpu, wall) in results.items():
        print(
            f"  {name:>22}: CPU {spread(cpu)}; wall {spread(wall)}; "
            f"CPU / one at a time {statistics.median(cpu) / base:.2f}"
        )


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
    parser.add_argument("--small", type=int, default=200, help="pairs of the small stream")
    parser.add_argument("--against", metavar="REV", help="also time REV's monitor.py")
    parser.add_argument("--threads", type=int, default=8, help="request threads (0: skip)")
    parser.add_argument("--per-thread", type=int, default=15, help="pairs per thread")
    args = parser.parse_args()
    against = None
    if args.against:
        against = monitor_at(args.against)
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "diff", "--stat", args.against, "--", "sandbox/monitoring"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"against {args.against}'s monitor.py; sandbox/monitoring since then:\n{changed}")
    chosen = modes(against, args.against or "")
    lines = corpus()
    fp = fingerprint_us(lines, args.repeat)
    print(f"fingerprint per query (µs), {len(lines)} corpus queries: {spread(fp)}")
    with tempfile.TemporaryDirectory() as home:
        platform, tokens = build_deployment(Path(home) / "corpus")
        try:
            raw = corpus_decisions(platform, tokens, lines)
            corpus_modes = per_decision(platform, raw, args.repeat, chosen)
        finally:
            platform.close()
        raw_ms = raw_duckdb_ms(platform.settings, lines, args.repeat)
        platform = Platform(Settings(home=Path(home) / "small"))
        try:
            tokens = load_deployment(platform, 0.01, by="bench", reason="monitoring benchmark")
            small, small_ms = small_decisions(platform, tokens, args.small)
            small_modes = per_decision(platform, small, args.repeat, chosen)
            if args.threads:
                rates, batches = threaded(
                    platform,
                    tokens,
                    args.threads,
                    args.per_thread,
                    args.repeat,
                    against,
                    args.against or "",
                )
        finally:
            platform.close()
    report_modes("corpus", corpus_modes, len(raw))
    print(f"raw DuckDB per corpus query (ms wall): {spread(raw_ms)}")
    cpu_ms = statistics.median(corpus_modes["one at a time"][0]) / 1000
    wall_ms = statistics.median(corpus_modes["one at a time"][1]) / 1000
    print(
        f"detectors per query, one at a time: {wall_ms:.3f} ms wall, {cpu_ms:.3f} ms CPU "
        f"(target <= 1 ms: {'met' if cpu_ms <= 1 else 'MISSED'} in CPU, "
        f"{'met' if wall_ms <= 1 else 'MISSED'} in wall time); ratio to raw DuckDB (wall): "
        f"{wall_ms / statistics.median(raw_ms):.2f}"
    )
    report_modes("small", small_modes, len(small))
    query_ms = statistics.median(small_ms)
    print(f"small query in process (ms wall, {len(small_ms)} queries): {spread(small_ms)}")
    for name, (cpu, _wall) in small_modes.items():
        print(
            f"  monitor CPU per decision / one small query's wall time, {name}: "
            f"{statistics.median(cpu) / 1000 / query_ms:.3f}"
        )
    if args.threads:
        print(f"{args.threads} request threads in process, {2 * args.per_thread} decisions each:")
        anchor = statistics.median(rates["no monitor"])
        for name, values in rates.items():
            print(
                f"  {name:>10}: decisions/s {spread(values)}; "
                f"/ no monitor {statistics.median(values) / anchor:.3f}"
            )
        print(f"  current monitor's mean batch (decisions per batch): {spread(batches)}")

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
