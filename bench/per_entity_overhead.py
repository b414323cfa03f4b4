"""Per-entity tables: the full path against the same SQL run directly in DuckDB.

Usage: python bench/per_entity_overhead.py [--scale 1] [--repeat 5]

The queries aggregate each person's claims in a derived table and then aggregate the
persons (``docs/guard.md``, "Per-entity tables"): the histogram of claims per person,
mean totals by the number of asthma claims (a FILTER per person), and the persons with
five claims or more (a HAVING per person).  Each runs raw in DuckDB and through
``QueryService.run_job`` as the two bench operators of ``bench/query_overhead.py``
(``bench-plain``: reviewed, exact and held; ``bench-dp``: noised under ε), each run a
distinct normalized query (a no-op HAVING) so the release cache never answers.  Every
figure is the median of --repeat runs; the spread is printed beside it, and the ratio
is to raw DuckDB in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.query_overhead import SPREAD, median_time, setup
from sandbox.query.service import QueryService

QUERIES = {
    "claims per person": (
        "SELECT n, count(*) AS persons FROM (SELECT person_id, count(*) AS n "
        "FROM health.claims GROUP BY person_id) GROUP BY n"
    ),
    "mean total by asthma claims": (
        "SELECT asthma, count(*) AS persons, avg(total) AS mean_total FROM (SELECT person_id, "
        "count(*) FILTER (WHERE diagnosis_code = 'J45') AS asthma, sum(claim_amount) AS total "
        "FROM health.claims GROUP BY person_id) GROUP BY asthma"
    ),
    "five claims or more, by district": (
        "SELECT district, count(*) AS persons FROM (SELECT person_id, district "
        "FROM health.claims GROUP BY person_id, district HAVING count(*) >= 5) GROUP BY district"
    ),
}


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float, float]]:
    """Print the figures; return (raw, plain, dp) median seconds per query."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        platform, actors = setup(Path(tmp) / "home", args.scale)
        service = QueryService(platform)
        platform.enclave.query("SELECT 1")  # open the reader
        counter = iter(range(10**9))
        rows = platform.enclave.query("SELECT count(*) AS n FROM health.claims")
        print(
            f"health.claims: {rows.column('n')[0].as_py():,} rows; threads="
            f"{platform.settings.threads}; median of {args.repeat}; load average before: "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        print(f"{'query':<34} {'raw s':>8} {'plain s':>8} {'ratio':>6} {'dp s':>8} {'ratio':>6}")
        for label, sql in QUERIES.items():

            def raw(_i: int, sql: str = sql) -> None:
                with platform.enclave.cursor() as cur:
                    cur.sql(sql).to_arrow_table()

            def guarded(who: str, sql: str = sql, label: str = label) -> float:
                def run(_i: int) -> None:
                    service.run_job(actors[who], f"{sql} HAVING count(*) > -{next(counter)}")

                run(0)  # warm
                return median_time(run, args.repeat, f"{who} {label}")

            raw(0)  # warm
            base = median_time(raw, args.repeat, f"raw {label}")
            plain = guarded("bench-plain")
            dp = guarded("bench-dp")
            figures[label] = (base, plain, dp)
            print(
                f"{label:<34} {base:8.3f} {plain:8.3f} {plain / base:6.2f} {dp:8.3f} "
                f"{dp / base:6.2f}"
            )
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print("spread (min-max s) per figure:")
        for name, times in SPREAD.items():
            middle = statistics.median(times)
            print(f"  {name:<56} {min(times):8.3f} - {max(times):8.3f}  (median {middle:.3f})")
        platform.close()
    return figures


if __name__ == "__main__":
    main()
