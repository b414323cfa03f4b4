"""Authorization benchmark: decisions per second under a realistic policy.

Builds a control plane with 40 datasets in 10 bureau domains, 100 operators and
1,000 grants (a third with daily quotas, a tenth with a privacy budget, some
commercial), issued through the audited administrative API, then replays a
mix of query decisions: single-dataset and two-dataset joins, varied columns,
about one in twenty denied.  Reports cold decisions (cache misses), warm
decisions (the steady state: one policy-state check per decision; on SQLite
``PRAGMA data_version``, the rows read again only after a commit, see
``policies/probe.py``), the cost of a policy change (first decision after it),
and raw Casbin enforcement for comparison.  The audit recorder is a no-op:
appends are measured by ``bench/audit_bench.py``.

    .venv/bin/python bench/authz_bench.py [--operators 100] [--grants 1000]
        [--seconds 3] [--db-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import (
    Actor,
    Administration,
    Authority,
    GrantTerms,
    Licence,
    NullRecorder,
    Role,
    Tariff,
)
from sandbox.core.classification import Level
from sandbox.core.classification import Role as ColumnRole
from sandbox.core.db import datasets, open_control_db
from sandbox.core.policy_tables import bump_policy_version
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec

DOMAINS = [f"bureau{i}" for i in range(10)]


def build(url: str, operators: int, grants: int, seed: int) -> tuple[Authority, list[Actor], list]:  # type: ignore[type-arg]
    rng = random.Random(seed)
    engine = open_control_db(url)
    now = datetime.now(UTC)
    specs = {}
    with engine.begin() as conn:
        for i in range(40):
            base = demo_spec(DEMO_DATASETS[i % 4])
            dataset_id = f"{DOMAINS[i % 10]}.t{i}"
            spec = replace(base, id=dataset_id)
            specs[dataset_id] = spec
            conn.execute(
                sa.insert(datasets).values(
                    id=dataset_id,
                    domain=spec.domain,
                    name=spec.table,
                    title=spec.title,
                    description="",
                    entity_key=spec.entity_key,
                    row_count=rng.randint(10**4, 10**7),
                    connector="bench",
                    source_uri="bench://",
                    source_sha256="0" * 64,
                    loaded_at="2026-01-01T00:00:00Z",
                    schema_sha256="0" * 64,
                    classification=spec.to_dict(),
                    classification_sha256=spec.sha256(),
                    version=1,
                    registered_by="bench",
                    frozen=False,
                )
            )
    authority = Authority(engine, recorder=NullRecorder())
    admin = Administration(authority)
    host = Actor.host("bench")
    bureaus = {}
    for domain in DOMAINS:
        admin.create_account(
            host, f"b-{domain}", role=Role.BUREAU, organisation=domain, domains=[domain]
        )
        bureaus[domain] = Actor(
            name=f"b-{domain}", role=Role.BUREAU, subject=f"b-{domain}", domains=(domain,)
        )
    names = [f"op-{i:03d}" for i in range(operators)]
    for name in names:
        admin.create_account(
            host,
            name,
            role=Role.OPERATOR,
            organisation=name,
            licence=Licence(number=name, valid_until=now + timedelta(days=365)),
        )
    held: dict[str, list[str]] = {name: [] for name in names}
    ids = sorted(specs)
    for g in range(grants):
        operator = names[g % operators]
        dataset_id = rng.choice([d for d in ids if d not in held[operator]])
        held[operator].append(dataset_id)
        spec = specs[dataset_id]
        groupable = frozenset(
            c.name for c in spec.columns if c.role in (ColumnRole.QUASI, ColumnRole.SENSITIVE)
        )
        budget = g % 10 == 0
        terms = GrantTerms(
            purpose_code=rng.choice(["inclusive-finance", "urban-planning", "epidemiology"]),
            purpose_text="bench",
            valid_from=now - timedelta(days=1),
            valid_until=now + timedelta(days=rng.randint(30, 365)),
            max_level=Level.L3,
            groupable=groupable,
            k=10,
            epsilon_total=10.0 if budget else None,
            epsilon_per_query=1.0 if budget else None,
            queries_per_day=1000 if g % 3 == 0 else None,
            tariff=Tariff.commercial(per_query=100, per_million_rows=500) if g % 2 else Tariff(),
        )
        admin.issue_grant(bureaus[spec.domain], dataset_id, operator, terms)
    actors = [Actor(name=n, role=Role.OPERATOR, subject=n) for n in names]
    requests = []
    for _ in range(5_000):
        actor = rng.choice(actors)
        mine = held[actor.name]
        if rng.random() < 0.05:
            touched = [rng.choice([d for d in ids if d not in mine])]  # no grant: denied
        elif rng.random() < 0.2 and len(mine) > 1:
            touched = rng.sample(mine, 2)
        else:
            touched = [rng.choice(mine)]
        columns = {
            d: rng.sample(
                [c.name for c in specs[d].columns if c.level < Level.L4],
                k=min(3, len(specs[d].columns) - 1),
            )
            for d in touched
        }
        requests.append((actor, touched, columns))
    return authority, actors, requests


def run(
    authority: Authority, requests: list, seconds: float, threads: int = 1
) -> tuple[float, int, int]:  # type: ignore[type-arg]
    """Decisions per second over ``threads`` threads replaying the request mix."""
    counts: list[tuple[int, int]] = []
    lock = threading.Lock()
    go = threading.Barrier(threads + 1)

    def worker(offset: int) -> None:
        done = allowed = 0
        mine = requests[offset:] + requests[:offset]
        go.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for actor, touched, columns in mine[:500]:
                d = authority.decide(actor, "dataset.query", datasets=touched, columns=columns)
                allowed += d.allowed
                done += 1
            mine = mine[500:] + mine[:500]
        with lock:
            counts.append((done, allowed))

    pool = [threading.Thread(target=worker, args=(i * 997,)) for i in range(threads)]
    for t in pool:
        t.start()
    go.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    done = sum(c[0] for c in counts)
    return done / elapsed, done, sum(c[1] for c in counts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operators", type=int, default=100)
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--db-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=4, help="also measure with N threads")
    args = parser.parse_args(argv)
    url = args.db_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'control.db'}"
    t0 = time.perf_counter()
    authority, actors, requests = build(url, args.operators, args.grants, args.seed)
    setup = time.perf_counter() - t0
    backend = url.split(":", 1)[0]
    print(
        f"policy: {args.operators} operators, {args.grants} grants, 40 datasets, "
        f"{len(authority.enforcer.lines())} Casbin lines; backend {backend}; "
        f"built through the audited admin API in {setup:.1f} s"
    )

    t0 = time.perf_counter()
    for actor, touched, columns in requests:
        authority.decide(actor, "dataset.query", datasets=touched, columns=columns)
    cold = len(requests) / (time.perf_counter() - t0)
    print(f"cold decisions (cache misses, {len(requests):,} distinct requests): {cold:,.0f}/s")

    rate, done, allowed = run(authority, requests, args.seconds)
    print(
        f"warm decisions: {rate:,.0f}/s  ({done:,} decisions, {allowed / done:.0%} allowed; "
        f"target >= 20,000/s)"
    )

    if args.threads > 1:
        many, _, _ = run(authority, requests, args.seconds, args.threads)
        print(f"warm decisions, {args.threads} threads sharing one Authority: {many:,.0f}/s")

    for label, rules in (("a grant or freeze change", False), ("a Casbin rule change", True)):
        latencies = []
        for i in range(20):
            actor, touched, columns = requests[i]
            with authority.engine.begin() as conn:
                bump_policy_version(conn, rules=rules)
            t0 = time.perf_counter()
            authority.decide(actor, "dataset.query", datasets=touched, columns=columns)
            latencies.append(time.perf_counter() - t0)
        print(
            f"first decision after {label}: {statistics.median(latencies) * 1000:.1f} ms median"
            + (" (Casbin reload)" if rules else " (cache refill)")
        )

    enforcer = authority.enforcer.casbin
    t0 = time.perf_counter()
    n = 5_000
    for i in range(n):
        enforcer.enforce_ex(actors[i % len(actors)].subject, "bureau3", "dataset", "query")
    raw = n / (time.perf_counter() - t0)
    print(f"raw Casbin enforce_ex on this policy (no cache): {raw:,.0f}/s")
    authority.close()
    authority.engine.dispose()
    if rate < 20_000:
        print("WARNING: below the 20,000 decisions/s target", file=sys.stderr)


if __name__ == "__main__":
    main()
