"""Audit trail benchmark: durable appends/s, verification entries/s, proof latency.

Prints the figures issues 3 and 15 ask for (targets: durable appends >= 5,000/s
with 4 threads and >= 10,000/s with 16, >= 200,000 entries/s verified, inclusion
proofs < 10 ms at 1,000,000 entries).  Each append rate is also given as a ratio
to the anchor measured in the same run: raw ``sqlite3`` commits of one row on the
same table and disk (the fsync-bound ceiling of one appender), with the process's
CPU time per append.  Everything runs on a SQLite file in a temporary directory
(WAL, synchronous=FULL: every acknowledged append is on disk), or on
``--url`` (e.g. a PostgreSQL database; it must be empty).

    .venv/bin/python bench/audit_bench.py                 # full run, a few minutes
    .venv/bin/python bench/audit_bench.py --quick         # smaller sizes, seconds
    .venv/bin/python bench/audit_bench.py --dir /dev/shm  # no fsync cost: the CPU ceiling
    .venv/bin/python bench/audit_bench.py --only verify   # one part (repeatable); see --help
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import AuditTrail, EntryDraft, KeyRing, query_details
from audit.schema import ENTRY_COLUMNS


def draft(i: int) -> EntryDraft:
    sql = f"SELECT district, count(*) FROM claims_{i % 7} GROUP BY district"
    return EntryDraft(
        actor=f"operator-{i % 13}",
        role="operator",
        action="query",
        target=f"job:j-{i}",
        dataset=f"health.claims_{i % 7}",
        decision="allow" if i % 5 else "deny",
        rule="grant.live" if i % 5 else "guard.aggregate_only",
        request_id=f"req-{i:08d}",
        client="10.0.0.7",
        details=query_details(
            sql=sql,
            result_digest=f"{i:064x}",
            rows_released=i % 50,
            groups_suppressed=i % 3,
            duration_ms=12,
            budget_spent=0.25,
        ),
    )


def raw_commits_per_second(path: Path, n: int) -> tuple[float, float]:
    """The anchor: raw ``sqlite3``, one audit row per commit, WAL, synchronous=FULL.

    Same table and indexes as the trail (created by it), prebuilt rows, no Python work
    beyond the driver: the fsync-bound ceiling of one appender on this disk, now.
    Returns commits per second and CPU microseconds a commit.
    """
    with AuditTrail.open(f"sqlite:///{path}", KeyRing(path.parent / "anchor-keys")):
        pass  # creates the schema
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    columns = ", ".join(ENTRY_COLUMNS)
    sql = f"INSERT INTO audit_entries ({columns}) VALUES ({', '.join('?' * len(ENTRY_COLUMNS))})"
    entry = b"x" * 640
    rows = [
        (i, "2026-12-02T00:00:00.000000Z", "operator-1", "operator", "query", f"job:j-{i}",
         "health.claims_1", "allow", entry, b"h" * 32, b"l" * 32, b"")
        for i in range(n)
    ]  # fmt: skip
    cpu = cpu_seconds()
    start = time.perf_counter()
    for row in rows:
        con.execute("BEGIN IMMEDIATE")
        con.execute(sql, row)
        con.execute("COMMIT")
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    con.close()
    return n / elapsed, cpu / n * 1e6


def commits_made(trail: AuditTrail) -> int:
    """Commits that wrote entries: the entries of one commit share their time."""
    with trail.store.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(DISTINCT time) FROM audit_entries").scalar())


def cpu_seconds() -> float:
    """User plus system CPU time of this process (every thread) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def append_arguments(i: int) -> dict[str, Any]:
    """The keyword arguments of one ``AuditTrail.append``, as a caller would pass them."""
    d = draft(i)
    return {
        "actor": d.actor,
        "role": d.role,
        "action": d.action,
        "target": d.target,
        "dataset": d.dataset,
        "decision": d.decision,
        "rule": d.rule,
        "request_id": d.request_id,
        "client": d.client,
        "details": dict(d.details),
    }


def appends_per_second(trail: AuditTrail, threads: int, per_thread: int) -> float:
    """Appends a second from ``threads`` threads, each appending one entry at a time.

    The arguments are built before the clock starts (as the anchor's rows are): the
    figure is the trail's work (validation, canonical JSON, chain, Merkle tree,
    commit, receipt), not the benchmark's making of its own test data.
    """
    arguments = [[append_arguments(t * per_thread + i) for i in range(per_thread)]
                 for t in range(threads)]  # fmt: skip

    def work(calls: list[dict[str, Any]]) -> None:
        append = trail.append
        for kwargs in calls:
            append(**kwargs)

    workers = [threading.Thread(target=work, args=(calls,)) for calls in arguments]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return threads * per_thread / (time.perf_counter() - start)


def fill(trail: AuditTrail, total: int, chunk: int = 20_000) -> float:
    drafts = [draft(i) for i in range(1000)]
    start = time.perf_counter()
    while (size := trail.size()) < total:
        n = min(chunk, total - size)
        trail.import_entries([drafts[(size + i) % 1000] for i in range(n)])
    return (time.perf_counter() - start) or 1e-9


_VERIFY = """
import json, sys, time
from pathlib import Path
from audit import verify_export
export, workers = Path(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
report = verify_export(export, workers=workers)
print(json.dumps({"seconds": time.perf_counter() - start, "ok": report.ok,
                  "heads": report.tree_heads, "summary": report.summary()}))
"""


def offline_verification(export: Path, workers: int, runs: int = 3) -> list[dict[str, Any]]:
    """``verify_export`` of ``export`` with ``workers`` processes, timed inside a fresh
    interpreter as ``sandbox audit verify`` runs it (one thread, so it may fork its
    workers; this benchmark's own process holds the trail's writer thread), ``runs``
    times; the interpreter's start is not in the figure."""
    root = Path(__file__).resolve().parents[1]
    results = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _VERIFY, str(export), str(workers)],
            capture_output=True, text=True, check=True, cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
        results.append(json.loads(out.stdout))
        assert results[-1]["ok"], results[-1]["summary"]
    return results


def verify_part(trail: AuditTrail, export: Path, n: int) -> None:
    """Offline verification of an export of ``n`` entries (as ``sandbox audit verify``
    runs it: one process per core, then one process), then live verification twice."""
    fill(trail, n)
    trail.export(export)
    cores = os.cpu_count() or 1
    for workers in (cores, 1):
        runs = offline_verification(export, workers)
        times = sorted(r["seconds"] for r in runs)
        median = statistics.median(times)
        label = "offline verification:" if workers == cores else "offline verification, 1 process:"
        print(
            f"{label:29s}{n / median:10,.0f} entries/s "
            f"({n} entries, {runs[0]['heads']} tree heads, median {median:.2f} s of "
            f"{len(runs)}, {times[0]:.2f}-{times[-1]:.2f}; {workers} process"
            f"{'es' if workers > 1 else ''})"
        )
    start = time.perf_counter()
    live = trail.verify()
    elapsed = time.perf_counter() - start
    assert live.ok, live.summary()
    print(f"live store verification:     {n / elapsed:10,.0f} entries/s")
    start = time.perf_counter()
    again = trail.verify()
    elapsed = time.perf_counter() - start
    assert again.ok, again.summary()
    print(
        f"live verification again:     {n / elapsed:10,.0f} entries/s "
        "(entries the first run found sound are not parsed again)"
    )


def proofs_part(trail: AuditTrail, n: int) -> None:
    """Bulk import to ``n`` entries, then inclusion and consistency proof latency."""
    seconds = fill(trail, n)
    print(f"bulk import to {n:,}:     {n / seconds:10,.0f} entries/s")
    trail.sign_tree_head()
    rng = random.Random(7)
    timings = []
    for _ in range(200):
        seq = rng.randrange(n)
        start = time.perf_counter()
        trail.inclusion_proof(seq)
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    print(
        f"inclusion proof at {n:,}:  median {statistics.median(timings):.2f} ms, "
        f"p99 {timings[197]:.2f} ms, max {timings[-1]:.2f} ms"
    )
    start = time.perf_counter()
    trail.consistency_proof(n // 3, n)
    ms = (time.perf_counter() - start) * 1000
    print(f"consistency proof at {n:,}: {ms:.2f} ms")


PARTS = ("anchor", "appends", "verify", "proofs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--url", help="SQLAlchemy URL of an empty store (default: temp SQLite)")
    parser.add_argument(
        "--dir",
        help="where the temporary SQLite files go (e.g. /dev/shm: fsync costs nothing there, "
        "so the append figures show the CPU ceiling, not the disk's)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable; default: every part)",
    )
    args = parser.parse_args()
    parts = set(args.only or PARTS)
    appends = 1_000 if args.quick else 5_000
    verify_n = 10_000 if args.quick else 100_000
    proof_n = 50_000 if args.quick else 1_000_000

    with tempfile.TemporaryDirectory(prefix="audit-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        keys = KeyRing(root / "keys")

        def open_trail(name: str) -> AuditTrail:
            url = args.url or f"sqlite:///{root / name}.db"
            return AuditTrail.open(url, keys, sign_every_n=1000, sign_every_s=60)

        print(f"store: {args.url or 'SQLite file (WAL, synchronous=FULL)'}")
        print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        if parts & {"anchor", "appends"}:
            anchor, anchor_cpu = raw_commits_per_second(root / "anchor.db", appends // 2)
            print(
                f"anchor, raw sqlite3 commits of one row: {anchor:10,.0f} /s "
                f"({anchor_cpu:.0f} us CPU a commit)"
            )
        for threads in (1, 4, 8, 16) if "appends" in parts else ():
            total = appends if threads == 1 else 4 * appends
            with open_trail(f"threads{threads}") as trail:
                trail.sign_tree_head()  # the writer thread and the schema, outside the timing
                cpu = cpu_seconds()
                rate = appends_per_second(trail, threads, total // threads)
                cpu = (cpu_seconds() - cpu) / total * 1e6
                commits = commits_made(trail)
            label = f"durable appends, {threads} thread{'s' if threads > 1 else ''}:"
            print(
                f"{label:29s}{rate:10,.0f} /s  ({total} appends; {rate / anchor:.2f}x the anchor, "
                f"{cpu:.0f} us CPU an append, {total / commits:.1f} appends a commit)"
            )

        if "verify" in parts:
            with open_trail("verify") as trail:
                verify_part(trail, root / "export", verify_n)
        if "proofs" in parts:
            with open_trail("proofs") as trail:
                proofs_part(trail, proof_n)
        print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
