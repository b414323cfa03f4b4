"""Totals and rollups (issue 13): the sandbox's pipeline against raw DuckDB, same run.

Usage: python bench/totals_overhead.py [--scale 1] [--repeat 7]

For the utility corpus's ratio-08 (a share of a scalar-subquery total: two releases),
cte-11 (a comma-joined one-row CTE of totals over an aggregating CTE) and cte-10 (a
per-person stage averaged per district), and the grouped query each is built on, prints
the median and spread (min-max) of: raw DuckDB on the same tables (the query as
written), and the sandbox's prepare (parse, guard, rewrite), and prepare + execute
(each part's stats query in the enclave) + release (disclosure, then the outputs), with
k=10 and no budget.  Ratios are sandbox / raw, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Level
from sandbox.core.settings import Settings
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec
from sandbox.platform import Platform
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.release import execute, prepare, release

QUERIES = {
    "ratio-08 share of a total": (
        "SELECT gender, sum(claim_amount) / (SELECT sum(claim_amount) FROM health.claims) "
        "AS share FROM health.claims GROUP BY gender"
    ),
    "  ratio-08's grouped part alone": (
        "SELECT gender, sum(claim_amount) AS s FROM health.claims GROUP BY gender"
    ),
    "cte-11 percent of a CTE total": (
        "WITH a AS (SELECT district, count(*) AS n FROM health.claims GROUP BY 1), "
        "b AS (SELECT sum(n) AS total FROM a) "
        "SELECT a.district, a.n * 100.0 / b.total AS pct FROM a, b"
    ),
    "  cte-11's grouped part alone": (
        "SELECT district, count(*) AS n FROM health.claims GROUP BY district"
    ),
    "cte-10 mean of per-person sums": (
        "WITH per_person AS (SELECT person_id, district, sum(claim_amount) AS total "
        "FROM health.claims GROUP BY person_id, district) "
        "SELECT district, avg(total) AS mean_per_person FROM per_person GROUP BY district"
    ),
}
PARAMS = DisclosureParams(k=10)
MAX_SQL = 100_000


def _timed(run: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def _fmt(times: list[float]) -> str:
    return (
        f"{statistics.median(times) * 1000:8.1f} ms "
        f"({min(times) * 1000:.1f}-{max(times) * 1000:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        platform = Platform(Settings(home=Path(tmp) / "home", threads=2))
        platform.init()
        platform.load_demo_data(scale=args.scale)
        access = {
            d: DatasetAccess(demo_spec(d), Level.L3, None, frozenset({"gender"}))
            for d in DEMO_DATASETS
        }
        print(f"scale {args.scale}, {args.repeat} runs each: median (min-max)")
        print(f"{'query':34} {'raw DuckDB':>26} {'prepare':>26} {'sandbox':>26}  ratio")
        for name, sql in QUERIES.items():

            def raw(sql: str = sql) -> object:
                with platform.enclave.cursor() as cur:
                    return cur.sql(sql).fetchall()

            def prep(sql: str = sql) -> object:
                return prepare(sql, access, PARAMS, max_sql_length=MAX_SQL)

            def full(sql: str = sql) -> object:
                prepared = prepare(sql, access, PARAMS, max_sql_length=MAX_SQL)
                return release(execute(platform.enclave, prepared), prepared)

            raw()  # warm the tables
            raw_t = _timed(raw, args.repeat)
            prep_t = _timed(prep, args.repeat)
            full_t = _timed(full, args.repeat)
            ratio = statistics.median(full_t) / statistics.median(raw_t)
            figures = f"{_fmt(raw_t):>26} {_fmt(prep_t):>26} {_fmt(full_t):>26}"
            print(f"{name:34} {figures}  {ratio:.1f}x")
        platform.close()


if __name__ == "__main__":
    main()
