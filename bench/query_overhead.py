"""Query overhead: the full path (parse, authorize, rewrite, execute, disclose, audit)
against the same SQL run directly in DuckDB.

Usage: python bench/query_overhead.py [--scale 10] [--repeat 5] [--encrypted]

With --encrypted: the workloads' raw SQL on an encrypted enclave against a plain one
(target: at most 1.2x).

Builds a demo home at the given scale in a temp dir, with two bench operators:
`bench-plain` (``reviewed`` grants: exact values, computed and held for the bureau's
review, which is the whole exact path up to the human's approval) and `bench-dp` (ε
budget, noise on every released cell).  Each figure is the median of --repeat runs; every run of
the full path uses a distinct normalized query (a no-op HAVING), so the release
cache never answers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp

from policies import Actor, Administration, GrantTerms, Licence, ReleaseMode, Role
from policies.demo import create_demo
from sandbox.core.classification import Level
from sandbox.core.settings import Settings
from sandbox.enclave.demo_data import demo_sources
from sandbox.platform import Platform
from sandbox.query.entity_caps import GROUP_KEPT, RUNNING_ROWS
from sandbox.query.service import QueryService

WORKLOADS = {
    "W1 claims by district x diagnosis": (
        "SELECT district, diagnosis_code, count(*), count(DISTINCT person_id), "
        "avg(claim_amount) FROM health.claims GROUP BY 1, 2"
    ),
    "W2 firms x wages join": (
        "SELECT e.industry, s.month, count(DISTINCT e.credit_code), sum(s.wage_total) "
        "FROM market.enterprises e JOIN hrss.social_insurance s ON s.credit_code = e.credit_code "
        "GROUP BY 1, 2"
    ),
    "W3 trips by station x hour": (
        "SELECT board_station, date_trunc('hour', board_time), count(*), avg(fare) "
        "FROM transport.trips GROUP BY 1, 2"
    ),
}
GROUPABLE = {
    "health.claims": frozenset({"diagnosis_code"}),
    "transport.trips": frozenset({"board_time"}),
}
SMALL = "SELECT status, count(*) FROM market.enterprises WHERE founded = 2001 GROUP BY 1"


def _enrol(admin: Administration, host: Actor, account: str) -> str:
    """A token for ``account`` as a deployment gets one: the host's code, redeemed."""
    code = admin.issue_enrolment(host, account, token_ttl=timedelta(hours=1)).code
    return admin.redeem_enrolment(code).token


def setup(home: Path, scale: float, engine: str = "duckdb") -> tuple[Platform, dict[str, Actor]]:
    # A shared machine can stretch a 10 M-row query past the default 30 s limit: the bench
    # measures time, so it waits rather than reports a timeout.
    platform = Platform(Settings(home=home, max_result_rows=100_000, query_timeout_s=600.0))
    platform.init()
    started = time.perf_counter()
    for spec, source in demo_sources(scale):  # engine: bench/engines.py puts them on Spark
        platform.register(spec, source, registered_by="demo", engine=engine)
    print(f"demo data at --scale {scale:g} built in {time.perf_counter() - started:.1f} s")
    admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
    host = Actor.host("bench")
    now = datetime.now(UTC)
    create_demo(admin, host, now=now)
    for name in ("bench-plain", "bench-dp"):
        admin.create_account(
            host,
            name,
            role=Role.OPERATOR,
            organisation="bench",
            licence=Licence(number=f"BENCH-{name}", valid_until=now + timedelta(days=1)),
        )
    bureaus = {
        "health": "bureau-health",
        "market": "bureau-market",
        "hrss": "bureau-hrss",
        "transport": "bureau-transport",
    }
    for dataset in (
        "health.claims",
        "market.enterprises",
        "hrss.social_insurance",
        "transport.trips",
    ):
        bureau = platform.authority.authenticate(
            _enrol(admin, host, bureaus[dataset.split(".")[0]])
        )
        for name, epsilon in (("bench-plain", None), ("bench-dp", 1.0)):
            terms = GrantTerms(
                purpose_code="benchmark",
                purpose_text="overhead benchmark",
                valid_from=now - timedelta(minutes=1),
                valid_until=now + timedelta(days=1),
                max_level=Level.L3,
                groupable=GROUPABLE.get(dataset, frozenset()),
                k=10,
                epsilon_total=None if epsilon is None else 10_000.0,
                epsilon_per_query=epsilon,
                release_mode=ReleaseMode.REVIEWED if epsilon is None else ReleaseMode.DP,
            )
            admin.issue_grant(bureau, dataset, name, terms, reason="bench")
    actors = {}
    for name in ("bench-plain", "bench-dp"):
        actors[name] = platform.authority.authenticate(_enrol(admin, host, name))
    return platform, actors


#: Every run's seconds by label, for the spread printed at the end.
SPREAD: dict[str, list[float]] = {}


def median_time(fn, repeat: int, label: str = "") -> float:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    SPREAD[label] = times
    return statistics.median(times)


def stage_sql(stats_sql: str, cte: str, select: str = "count(*)") -> str | None:
    """The stats query cut after one of its stages: ``select`` over CTE ``cte`` (None if
    the plan has no such stage, e.g. a one-stage plan).

    DuckDB computes only what ``select`` reads: ``count(*)`` over a stage whose rows a
    window only annotates (the total cap's ``__sbx_po``) skips the window; read its
    columns to pay for it."""
    tree = sqlglot.parse_one(stats_sql, read="duckdb")
    with_ = tree.args.get("with_")
    if with_ is None or cte not in {c.alias for c in with_.expressions}:
        return None
    cut = exp.select(*sqlglot.parse_one(f"SELECT {select}", read="duckdb").expressions)
    cut = cut.from_(cte)
    cut.set("with_", with_)
    return cut.sql(dialect="duckdb")


def cap_sql(stats_sql: str) -> str | None:
    """The ε stats query up to and including its cap on each entity, on the cap's own
    columns (None without a cap).

    With ``T`` (``__sbx_po``): the window's flag and running total, both read so neither
    is optimized away; with the G cap (``__sbx_pe``): its rows, which the ``lag`` (or, at
    ``G = 1``, the join) filters.  The per-cell statistics the cap only carries along are
    not computed: what the cap costs with them is the whole stats query's."""
    running = stage_sql(
        stats_sql, "__sbx_po", f'count(*) FILTER (WHERE "{GROUP_KEPT}"), sum("{RUNNING_ROWS}")'
    )
    if running is not None:
        return running
    return stage_sql(stats_sql, "__sbx_pe") if stage_sql(stats_sql, "__sbx_pg") else None


def compare_encryption(scale: float, repeat: int) -> None:
    """Each workload's raw SQL on an encrypted and on a plain enclave of the same data,
    runs interleaved (plain, encrypted, plain, ...) so drift on a shared machine hits both."""
    with tempfile.TemporaryDirectory() as tmp:
        homes = {}
        for name, encrypted in (("plain", False), ("encrypted", True)):
            settings = Settings(
                home=Path(tmp) / name, encrypt_at_rest=encrypted, query_timeout_s=600.0
            )
            platform = Platform(settings)
            platform.init()
            platform.load_demo_data(scale)
            platform.enclave.query("SELECT 1")
            homes[name] = platform
        assert homes["encrypted"].enclave.encryption_key is not None
        assert homes["plain"].enclave.encryption_key is None
        print(f"duckdb {duckdb.__version__}, --scale {scale:g}, median of {repeat} (min-max)")
        print(f"{'workload':<36} {'plain s':>16} {'encrypted s':>16} {'ratio':>6}")
        for label, sql in {**WORKLOADS, "small query": SMALL}.items():
            times: dict[str, list[float]] = {"plain": [], "encrypted": []}
            for i in range(repeat + 1):
                for name, platform in homes.items():
                    start = time.perf_counter()
                    with platform.enclave.cursor() as cur:
                        cur.sql(sql).to_arrow_table()
                    if i:  # the first round warms both
                        times[name].append(time.perf_counter() - start)
            p, e = (statistics.median(times[n]) for n in ("plain", "encrypted"))
            spread = {n: f"{min(t):.3f}-{max(t):.3f}" for n, t in times.items()}
            print(
                f"{label:<36} {p:7.3f} {spread['plain']:>8} {e:7.3f} {spread['encrypted']:>8} "
                f"{e / p:6.2f}"
            )
        for platform in homes.values():
            platform.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--encrypted",
        action="store_true",
        help="Compare the workloads on an encrypted enclave against a plain one (raw SQL).",
    )
    args = parser.parse_args()
    if args.encrypted:
        compare_encryption(args.scale, args.repeat)
        return
    with tempfile.TemporaryDirectory() as tmp:
        platform, actors = setup(Path(tmp) / "home", args.scale)
        service = QueryService(platform)
        platform.enclave.query("SELECT 1")  # open the reader
        counter = iter(range(10**9))

        def raw(sql: str, label: str = "") -> float:
            def run(_i: int) -> None:
                with platform.enclave.cursor() as cur:
                    cur.sql(sql).to_arrow_table()

            run(0)  # warm
            return median_time(run, args.repeat, label or f"raw {sql[:40]}")

        def guarded(sql: str, who: str) -> float:
            def run(_i: int) -> None:
                # run_job: a reviewed grant's result is computed and held (no release).
                service.run_job(actors[who], f"{sql} HAVING count(*) > -{next(counter)}")

            run(0)
            return median_time(run, args.repeat, f"{who} {sql[:40]}")

        print(
            f"threads={platform.settings.threads}, duckdb {duckdb.__version__}, "
            f"median of {args.repeat}, load average before: "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        print(f"{'workload':<36} {'raw s':>8} {'plain s':>8} {'ratio':>6} {'dp s':>8} {'ratio':>6}")
        for label, sql in WORKLOADS.items():
            base = raw(sql)
            plain = guarded(sql, "bench-plain")
            dp = guarded(sql, "bench-dp")
            print(
                f"{label:<36} {base:8.3f} {plain:8.3f} {plain / base:6.2f} {dp:8.3f} "
                f"{dp / base:6.2f}"
            )
        # What the governed queries cannot be cheaper than, each the stats query (or a cut of
        # it) run raw: the exact plan's per-entity stage (``__sbx_pe``: one row per (group,
        # entity) cell, counted) and its whole stats query; the ε plan up to and including
        # its cap on each entity (cap_sql) and its whole stats query.  What a governed run
        # adds over its stats query is the rest of the path (release, noise, audit).
        print("stage floors (median s, ratio to raw DuckDB; the stats query or a cut of it, raw):")
        for label, sql in WORKLOADS.items():
            base = statistics.median(SPREAD[f"raw {sql[:40]}"])
            exact, dp_ = (
                service._authorize(actors[who], sql, "floors", None, None).prepared.plan.stats_sql
                for who in ("bench-plain", "bench-dp")
            )
            for stages in (
                (("per-entity", stage_sql(exact, "__sbx_pe")), ("stats", exact)),
                (("capped (ε)", cap_sql(dp_)), ("stats (ε)", dp_)),
            ):
                shown = []
                for name, cut in stages:
                    if cut is None:
                        shown.append(f"{name} -")
                        continue
                    floor = raw(cut, f"floor {name}: {label[:30]}")
                    shown.append(f"{name} {floor:7.3f} {floor / base:5.2f}x")
                print(f"{label:<36} {'   '.join(shown)}")
        base = raw(SMALL)
        plain = guarded(SMALL, "bench-plain")
        print(
            f"{'small query (added ms)':<36} {base * 1000:8.1f} {plain * 1000:8.1f} "
            f"{(plain - base) * 1000:+6.1f} ms"
        )
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print("spread (min-max s) per figure:")
        for label, times in SPREAD.items():
            print(f"  {label:<56} {min(times):8.3f} - {max(times):8.3f}")
        platform.close()


if __name__ == "__main__":
    main()
