"""Audit trail benchmark: durable appends/s, verification entries/s, proof latency.

Prints the figures issue 3 asks for (targets: >= 5,000 durable appends/s with
group commit, >= 200,000 entries/s verified, inclusion proofs < 10 ms at
1,000,000 entries).  Everything runs on a SQLite file in a temporary directory
(WAL, synchronous=FULL: every acknowledged append is on disk), or on
``--url`` (e.g. a PostgreSQL database; it must be empty).

    .venv/bin/python bench/audit_bench.py                 # full run, a few minutes
    .venv/bin/python bench/audit_bench.py --quick         # smaller sizes, seconds
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import AuditTrail, EntryDraft, KeyRing, query_details, verify_export


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


def appends_per_second(trail: AuditTrail, threads: int, per_thread: int) -> float:
    def work(offset: int) -> None:
        for i in range(per_thread):
            d = draft(offset + i)
            trail.append(
                actor=d.actor,
                role=d.role,
                action=d.action,
                target=d.target,
                dataset=d.dataset,
                decision=d.decision,
                rule=d.rule,
                request_id=d.request_id,
                client=d.client,
                details=dict(d.details),
            )

    workers = [threading.Thread(target=work, args=(t * per_thread,)) for t in range(threads)]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--url", help="SQLAlchemy URL of an empty store (default: temp SQLite)")
    args = parser.parse_args()
    appends = 1_000 if args.quick else 5_000
    verify_n = 10_000 if args.quick else 100_000
    proof_n = 50_000 if args.quick else 1_000_000

    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        root = Path(tmp)
        keys = KeyRing(root / "keys")

        def open_trail(name: str) -> AuditTrail:
            url = args.url or f"sqlite:///{root / name}.db"
            return AuditTrail.open(url, keys, sign_every_n=1000, sign_every_s=60)

        print(f"store: {args.url or 'SQLite file (WAL, synchronous=FULL)'}")
        with open_trail("one") as trail:
            rate = appends_per_second(trail, 1, appends)
        print(f"durable appends, 1 thread:   {rate:10,.0f} /s  ({appends} appends)")
        for threads in (4, 8, 16):
            with open_trail(f"threads{threads}") as trail:
                rate = appends_per_second(trail, threads, appends * 4 // threads)
            label = f"durable appends, {threads} threads:"
            print(f"{label:29s}{rate:10,.0f} /s  ({4 * appends} appends)")

        with open_trail("verify") as trail:
            fill(trail, verify_n)
            trail.export(root / "export")
            start = time.perf_counter()
            report = verify_export(root / "export")
            elapsed = time.perf_counter() - start
            assert report.ok, report.summary()
            print(
                f"offline verification:        {verify_n / elapsed:10,.0f} entries/s "
                f"({verify_n} entries, {report.tree_heads} tree heads, {elapsed:.2f} s)"
            )
            start = time.perf_counter()
            live = trail.verify()
            elapsed = time.perf_counter() - start
            assert live.ok, live.summary()
            print(f"live store verification:     {verify_n / elapsed:10,.0f} entries/s")

        with open_trail("proofs") as trail:
            seconds = fill(trail, proof_n)
            print(f"bulk import to {proof_n:,}:     {proof_n / seconds:10,.0f} entries/s")
            trail.sign_tree_head()
            rng = random.Random(7)
            timings = []
            for _ in range(200):
                seq = rng.randrange(proof_n)
                start = time.perf_counter()
                trail.inclusion_proof(seq)
                timings.append((time.perf_counter() - start) * 1000)
            timings.sort()
            print(
                f"inclusion proof at {proof_n:,}:  median {statistics.median(timings):.2f} ms, "
                f"p99 {timings[197]:.2f} ms, max {timings[-1]:.2f} ms"
            )
            start = time.perf_counter()
            trail.consistency_proof(proof_n // 3, proof_n)
            ms = (time.perf_counter() - start) * 1000
            print(f"consistency proof at {proof_n:,}: {ms:.2f} ms")


if __name__ == "__main__":
    main()
