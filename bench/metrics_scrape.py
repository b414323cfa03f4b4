"""Cost of a ``/metrics`` scrape's shared figures (issue 16) on a trail of 100,000 entries.

Measured in one run on temporary SQLite stores (audit and control plane):

1. ``cold``: a process's first scrape: :class:`TrailTally` reads the whole trail once
   (entries by action and decision, refusals by rule from each deny entry's bytes),
   plus the control-plane counts (ε per dataset, alerts by severity, jobs by state);
2. ``warm``: a later scrape after ``--new`` entries were appended (the tally reads
   only those, by primary key), the whole exposition rendered by prometheus-client;
3. ``resumed``: a new process's first scrape when the shared checkpoint
   (``metrics_trail_counts``) is ``--new`` entries behind the trail;
4. ``raw``: for scale, one plain ``SELECT action, decision, count(*) ... GROUP BY``
   over the same trail (what recounting at every scrape would cost at least, without
   refusals by rule).

Medians and spread (min..max) over ``--repeat`` runs.

    .venv/bin/python bench/metrics_scrape.py
    .venv/bin/python bench/metrics_scrape.py --entries 100000 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from audit import AuditTrail, EntryDraft, KeyRing, query_details
from sandbox.api.metrics import SharedCollector
from sandbox.core.db import metadata
from sandbox.jobs.states import JobState
from sandbox.jobs.tables import jobs
from sandbox.monitoring.metrics import TrailTally, checkpoints, shared_figures
from sandbox.monitoring.tables import alerts

RULES = ("guard.not_aggregated", "disclosure.k", "grant.none", "budget.exhausted")
ACTIONS = ("dataset.query", "dataset.query", "dataset.query", "job.cancel", "alert.read")


def draft(i: int) -> EntryDraft:
    deny = i % 5 == 0
    return EntryDraft(
        actor=f"operator-{i % 13}",
        role="operator",
        action=ACTIONS[i % len(ACTIONS)],
        target=f"job:j-{i}",
        dataset=None if deny else f"health.claims_{i % 7}",
        decision="deny" if deny else "allow",
        rule=RULES[i % len(RULES)] if deny else "grant.live",
        request_id=f"req-{i:08d}",
        client="10.0.0.7",
        details=query_details(
            sql=f"SELECT district, count(*) FROM claims_{i % 7} GROUP BY district",
            result_digest=f"{i:064x}",
            rows_released=i % 50,
            groups_suppressed=i % 3,
            duration_ms=12,
            budget_spent=0.25,
        ),
    )


def fill_control(engine: sa.engine.Engine, n_jobs: int, n_alerts: int) -> None:
    metadata.create_all(engine, tables=[jobs, alerts])
    states = [s.value for s in JobState]
    stamp = "2026-12-02T00:00:00.000000Z"
    with engine.begin() as conn:
        conn.execute(
            sa.insert(jobs),
            [
                {
                    "id": f"j-{i}",
                    "operator": "op",
                    "state": states[i % len(states)],
                    "sql": "-",
                    "format": "json",
                    "created_at": stamp,
                    "datasets": [],
                    "review_datasets": [],
                    "reviews": [],
                }
                for i in range(n_jobs)
            ],
        )
        conn.execute(
            sa.insert(alerts),
            [
                {
                    "id": f"al_{i:016x}",
                    "key": f"k{i}",
                    "detector": "probing",
                    "severity": ("info", "warning", "high")[i % 3],
                    "operator": "op",
                    "state": ("open", "acknowledged", "resolved")[i % 3],
                    "summary": "-",
                    "evidence": [],
                    "responses": [],
                    "opened_at": stamp,
                    "updated_at": stamp,
                }
                for i in range(n_alerts)
            ],
        )
    # The grants' ledgers: the tables exist (empty) so the ε query runs its plan.
    metadata.create_all(
        engine, tables=[metadata.tables["grants"], metadata.tables["grant_budgets"]]
    )


def spread(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"median {statistics.median(ms):8.2f} ms  (min {min(ms):.2f} .. max {max(ms):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=100, help="entries appended between scrapes")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    states = tuple(s.value for s in JobState)

    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as tmp:
        root = Path(tmp)
        trail = AuditTrail.open(f"sqlite:///{root / 'audit.db'}", KeyRing(root / "keys"))
        drafts = [draft(i) for i in range(1000)]
        while (size := trail.size()) < args.entries:
            n = min(20_000, args.entries - size)
            trail.import_entries([drafts[(size + i) % 1000] for i in range(n)])
        control = sa.create_engine(f"sqlite:///{root / 'control.db'}")
        fill_control(control, n_jobs=10_000, n_alerts=1_000)

        cold, warm, resumed, raw = [], [], [], []
        for r in range(args.repeat):
            tally = TrailTally(trail.store)
            started = time.perf_counter()
            figures = shared_figures(tally, control, states)
            cold.append(time.perf_counter() - started)
            trail.import_entries([drafts[i % 1000] for i in range(args.new)])
            collector = SharedCollector(lambda t=tally: shared_figures(t, control, states))
            registry = CollectorRegistry(auto_describe=False)
            registry.register(collector)
            started = time.perf_counter()
            body = generate_latest(registry)
            warm.append(time.perf_counter() - started)
            TrailTally(trail.store, control, checkpoint_every=1).counts()  # checkpoint now
            trail.import_entries([drafts[i % 1000] for i in range(args.new)])
            fresh = TrailTally(trail.store, control)
            started = time.perf_counter()
            shared_figures(fresh, control, states)
            resumed.append(time.perf_counter() - started)
            with control.begin() as conn:
                conn.execute(sa.delete(checkpoints))
            started = time.perf_counter()
            with trail.store.reading() as reads:
                counted = reads.conn.execute(
                    sa.text("SELECT action, decision, count(*) FROM audit_entries GROUP BY 1, 2")
                ).all()
            raw.append(time.perf_counter() - started)
            if r == 0:
                total = sum(figures.trail.entries.values())
                refused = sum(figures.trail.refusals.values())
                print(
                    f"trail {figures.trail.next_seq} entries; counted {total}, refusals {refused}, "
                    f"{len(counted)} (action, decision) groups; exposition {len(body)} bytes"
                )
        trail.close()
    print(f"cold scrape (whole trail read once) : {spread(cold)}")
    print(f"warm scrape (+{args.new} entries, rendered): {spread(warm)}")
    print(f"resumed first scrape (+{args.new} after checkpoint): {spread(resumed)}")
    print(f"raw GROUP BY recount of the trail    : {spread(raw)}")
    print(
        f"ratio warm / raw recount: {statistics.median(warm) / statistics.median(raw):.3f}; "
        f"cold / raw: {statistics.median(cold) / statistics.median(raw):.1f}"
    )


if __name__ == "__main__":
    main()
