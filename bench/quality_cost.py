"""Quality evaluation's cost at registration: its counts against a raw scan, in one run.

A demo home at ``--scale`` (default 0.1) is built in a temporary directory; then, on one
read-only DuckDB connection to its enclave file, for each demo dataset, interleaved
``--runs`` times (default 7): ``quality_counts`` (what a registration adds: one scan of
counts per column, rules and distinct entity keys, plus a match count per join partner)
the raw ``SELECT count(*)`` of the same table (a registration counts its rows anyway;
DuckDB answers it almost from metadata), and a raw scan reading every column once
(``count(c)`` of each; DuckDB too answers much of it from its statistics).  Printed:
the median and spread (min..max) in milliseconds, and the sum of the quality medians
against the wall time of registering the four datasets (generation, load, checks,
certificates, quality included) measured in the same run: the share quality takes.

    .venv/bin/python bench/quality_cost.py
    .venv/bin/python bench/quality_cost.py --scale 1 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    from sandbox.core.settings import Settings
    from sandbox.enclave.encrypted import connect_home
    from sandbox.enclave.quality import quality_counts
    from sandbox.platform import Platform

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", threads=2)
        platform = Platform(settings)
        platform.init()
        started = time.perf_counter()
        platform.load_demo_data(scale=args.scale)
        registration = time.perf_counter() - started
        specs = {r.id: (r.spec, r.row_count) for r in platform.catalog.list()}
        platform.close()
        con = connect_home(settings)
        con.execute("SET threads = 2")
        timings: dict[str, dict[str, list[float]]] = {
            d: {"quality": [], "raw": [], "scan": []} for d in specs
        }
        for _ in range(args.runs):
            for dataset, (spec, _rows) in specs.items():
                table = f'"{spec.domain}"."{spec.table}"'
                started = time.perf_counter()
                con.execute(f"SELECT count(*) FROM {table}").fetchone()
                timings[dataset]["raw"].append(time.perf_counter() - started)
                every = ", ".join(f'count("{c.name}")' for c in spec.columns)
                started = time.perf_counter()
                con.execute(f"SELECT {every} FROM {table}").fetchone()
                timings[dataset]["scan"].append(time.perf_counter() - started)
                started = time.perf_counter()
                quality_counts(con, spec)
                timings[dataset]["quality"].append(time.perf_counter() - started)
        con.close()
    print(f"scale {args.scale}, {args.runs} interleaved runs; ms median (min..max)")
    for dataset, (_spec, rows) in specs.items():
        q, r, scan = (timings[dataset][k] for k in ("quality", "raw", "scan"))
        print(
            f"{dataset:<22} {rows:>9} rows  quality {_ms(q)}  count(*) {_ms(r)}  scan {_ms(scan)}"
        )
    total = sum(statistics.median(t["quality"]) for t in timings.values())
    print(
        f"quality, all four: {total:.2f} s of a {registration:.2f} s registration "
        f"of the four ({100 * total / registration:.0f}%)"
    )


def _ms(values: list[float]) -> str:
    return (
        f"{1000 * statistics.median(values):7.1f} "
        f"({1000 * min(values):.1f}..{1000 * max(values):.1f})"
    )


if __name__ == "__main__":
    main()
