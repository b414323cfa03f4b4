"""Noise cost: exact discrete Laplace cells per second, and a whole noisy disclosure.

Issue 5's budget leaves about 0.3 s for noising ~3,000 released cells.  This
prints the sampler's throughput with the production source (the OS CSPRNG, read
a block at a time) and the seeded test source, at scales from 1 to 10^8 (the cost of
the exact sampler does not depend on the scale), then the time of ``disclose``
on a stats table of 600 groups x 5 noised columns (= 3,000 cells).

    .venv/bin/python bench/noise_bench.py
    .venv/bin/python bench/noise_bench.py --cells 3000 --repeat 5
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa

from sandbox.query.disclosure import ENTITIES, DisclosureParams, StatColumn, disclose
from sandbox.query.noise import NoiseSource, seeded_noise, system_noise

SCALES = [Fraction(1), Fraction(25), Fraction(1000, 3), Fraction(10**8, 7), Fraction(0.3)]


def best_of(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def stats_table(groups: int) -> tuple[pa.Table, list[StatColumn]]:
    table = pa.table(
        {
            "__k0": [f"g{i}" for i in range(groups)],
            ENTITIES: pa.array([50 + i for i in range(groups)], pa.int64()),
            "__r1": pa.array([300 + i for i in range(groups)], pa.int64()),
            "__s2": [12_345.678 * (i + 1) for i in range(groups)],
            "__t3": pa.array([[400.0, 300.0]] * groups, pa.list_(pa.float64())),
            "__n4": pa.array([290 + i for i in range(groups)], pa.int64()),
            "__q5": [9_876_543.21 * (i + 1) for i in range(groups)],
        }
    )
    columns = [
        StatColumn(ENTITIES, "entities"),
        StatColumn("__r1", "rows"),
        StatColumn("__s2", "sum", 0.0, 200_000.0),
        StatColumn("__t3", "top2", 0.0, 200_000.0, of="__s2"),
        StatColumn("__n4", "count"),
        StatColumn("__q5", "sumsq", 0.0, 200_000.0),
    ]
    return table, columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    sources: list[tuple[str, NoiseSource]] = [
        ("system (OS pool)", system_noise()),
        ("seeded (tests)", seeded_noise(1)),
    ]
    print(f"discrete Laplace, {args.cells} cells, best of {args.repeat}:")
    for label, source in sources:
        for scale in SCALES:
            seconds = best_of(
                args.repeat, lambda s=source, b=scale: s.discrete_laplace(b, args.cells)
            )
            print(
                f"  {label:17} scale {float(scale):>14.4g}: {seconds * 1000:7.1f} ms"
                f"  {args.cells / seconds:>10,.0f} cells/s"
            )

    table, columns = stats_table(args.cells // 5)
    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=5, max_groups_per_entity=5)
    exact = best_of(args.repeat, lambda: disclose(table, columns, DisclosureParams(k=10)))
    noisy = best_of(args.repeat, lambda: disclose(table, columns, params))
    print(f"disclose, {table.num_rows} groups x 5 noised columns ({table.num_rows * 5} cells):")
    print(f"  without budget {exact * 1000:7.1f} ms")
    print(f"  with ε = 1     {noisy * 1000:7.1f} ms  (noise: {(noisy - exact) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
