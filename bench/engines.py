"""The two engines side by side: W1-W3 of ``bench/query_overhead.py`` on DuckDB and on Spark,
then how Spark's time grows with the rows (issue 20).

Usage: python bench/engines.py [--scale 10] [--repeat 5] [--scaling 1,10,50]
                               [--scaling-repeat 3] [--driver-memory 4g] [--no-compare]

Part 1 (``--scale``, demo scale 1 = 1 M claim rows): two homes built by
``query_overhead.setup`` from the same deterministic demo data, one with the datasets in
the DuckDB enclave, one with them in the Parquet warehouse (``--engine spark``), queried
by Spark on ``spark_master`` (``local[2]`` unless ``SANDBOX_SPARK_MASTER`` says otherwise).
For each workload and engine: *raw* (the workload's SQL run directly: a DuckDB cursor on
the enclave; on Spark the same SQL transpiled by sqlglot over views of the same Parquet
files, ``toArrow()``), *governed* (``QueryService.run_job`` as
``bench-plain``: the exact path, computed and held for review) and *dp* (as ``bench-dp``:
noised).  Median and min-max of ``--repeat`` runs after one warm-up; every governed run
is a distinct normalized query (a no-op HAVING), so the release cache never answers.

Part 2 (``--scaling``): Spark alone, raw and governed, at each demo scale (the home of
part 1 is reused at its scale), median of ``--scaling-repeat`` runs, with the rows the
workload reads (the catalog's row counts of its datasets) per second.

Spark runs in this process's JVM (local mode): ``--driver-memory`` sizes its heap
(``PYSPARK_SUBMIT_ARGS``; Spark's own default is 1g).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlglot
from sqlglot import exp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from query_overhead import WORKLOADS, setup

from policies import Actor
from sandbox.enclave.warehouse import dataset_dir
from sandbox.engines.spark import spark_session
from sandbox.platform import Platform
from sandbox.query.service import QueryService

Runs = list[float]


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _times(fn: Callable[[int], object], repeat: int) -> Runs:
    fn(-1)  # warm: plans, views, the JVM's code
    runs = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        runs.append(time.perf_counter() - start)
    return runs


def _fmt(runs: Runs) -> str:
    return f"{statistics.median(runs):8.3f} {min(runs):7.3f}-{max(runs):<7.3f}"


def _datasets(sql: str) -> list[str]:
    tree = sqlglot.parse_one(sql, read="duckdb")
    return sorted({f"{t.db}.{t.name}" for t in tree.find_all(exp.Table) if t.db})


def rows_read(platform: Platform, sql: str) -> int:
    """The rows the workload scans: its datasets' row counts in the catalog."""
    return sum(platform.catalog.get(d).row_count for d in _datasets(sql))


class SparkRaw:
    """The workloads' own SQL on Spark, over views of the warehouse's Parquet files."""

    def __init__(self, platform: Platform) -> None:
        self.session = spark_session(platform.settings.spark_master)
        self.views: dict[str, str] = {}
        tag = os.urandom(4).hex()
        for record in platform.catalog.list():
            path = dataset_dir(platform.settings.warehouse_dir, record.id, record.version)
            name = f"raw_{record.id.replace('.', '_')}_{tag}"
            self.session.read.parquet(str(path)).createOrReplaceTempView(name)
            self.views[record.id] = name

    def sql(self, workload: str) -> str:
        """The workload in Spark SQL: sqlglot's transpile with each dataset replaced by its
        view (``to_spark`` would refuse ``avg``, which the guard rewrites away)."""
        tree = sqlglot.parse_one(workload, read="duckdb")
        for table in list(tree.find_all(exp.Table)):
            alias = table.alias or table.name
            view = self.views[f"{table.db}.{table.name}"]
            table.replace(exp.to_table(view, alias=exp.to_identifier(alias)))
        return tree.sql(dialect="spark", unsupported_level=sqlglot.ErrorLevel.RAISE)

    def run(self, spark_sql: str) -> None:
        self.session.sql(spark_sql).toArrow()

    def close(self) -> None:
        for name in self.views.values():
            self.session.catalog.dropTempView(name)


def _raw_duckdb(platform: Platform, sql: str) -> Callable[[int], object]:
    def run(_i: int) -> None:
        with platform.enclave.cursor() as cur:
            cur.sql(sql).to_arrow_table()

    return run


def _governed(service: QueryService, actor: Actor, sql: str) -> Callable[[int], object]:
    counter = iter(range(10**9))

    def run(_i: int) -> None:
        # run_job: a reviewed grant's result is computed and held (no release).
        service.run_job(actor, f"{sql} HAVING count(*) > -{next(counter)}")

    return run


def _spark_raw(raw: SparkRaw, sql: str) -> Callable[[int], object]:
    spark_sql = raw.sql(sql)  # transpiled once, outside the timing
    return lambda _i: raw.run(spark_sql)


def compare(tmp: Path, scale: float, repeat: int) -> tuple[Platform, dict[str, Actor]]:
    """Part 1; returns the Spark home for part 2."""
    homes = {}
    for engine in ("duckdb", "spark"):
        started = time.perf_counter()
        homes[engine] = setup(tmp / f"{engine}-{scale:g}", scale, engine)
        print(f"  {engine} home ready in {time.perf_counter() - started:.1f} s", flush=True)
    duck, duck_actors = homes["duckdb"]
    spark, spark_actors = homes["spark"]
    duck.enclave.query("SELECT 1")
    raw = SparkRaw(spark)
    print(
        f"\nW1-W3 at --scale {scale:g}, median and min-max of {repeat} runs (s); "
        f"spark_master={spark.settings.spark_master}; load average before: {_load()}"
    )
    print(
        f"{'workload':<36} {'engine':<7} {'rows read':>11} "
        f"{'raw':>8} {'min-max':>15} {'governed':>8} {'min-max':>15} {'x raw':>6} "
        f"{'dp':>8} {'min-max':>15} {'x raw':>6}"
    )
    for label, sql in WORKLOADS.items():
        for engine, platform, actors, raw_fn in (
            ("duckdb", duck, duck_actors, _raw_duckdb(duck, sql)),
            ("spark", spark, spark_actors, _spark_raw(raw, sql)),
        ):
            service = QueryService(platform)
            base = _times(raw_fn, repeat)
            plain = _times(_governed(service, actors["bench-plain"], sql), repeat)
            dp = _times(_governed(service, actors["bench-dp"], sql), repeat)
            b, p, d = (statistics.median(r) for r in (base, plain, dp))
            print(
                f"{label:<36} {engine:<7} {rows_read(platform, sql):>11,} "
                f"{_fmt(base)} {_fmt(plain)} {p / b:6.2f} {_fmt(dp)} {d / b:6.2f}",
                flush=True,
            )
    print(f"load average after: {_load()}")
    raw.close()
    duck.close()
    return spark, spark_actors


def scaling(
    tmp: Path,
    scales: list[float],
    repeat: int,
    reuse: tuple[float, Platform, dict[str, Actor]] | None,
) -> None:
    """Part 2: Spark's raw and governed time per workload at each scale."""
    print(f"\nSpark scaling, median of {repeat} runs; load average before: {_load()}")
    print(
        f"{'workload':<36} {'scale':>6} {'rows read':>12} {'raw s':>8} {'rows/s':>12} "
        f"{'governed s':>10} {'rows/s':>12} {'x raw':>6}"
    )
    for scale in scales:
        if reuse is not None and reuse[0] == scale:
            platform, actors = reuse[1], reuse[2]
        else:
            started = time.perf_counter()
            platform, actors = setup(tmp / f"spark-{scale:g}", scale, "spark")
            print(
                f"  spark home at --scale {scale:g} ready in {time.perf_counter() - started:.1f} s"
            )
        raw = SparkRaw(platform)
        service = QueryService(platform)
        for label, sql in WORKLOADS.items():
            rows = rows_read(platform, sql)
            base = statistics.median(_times(_spark_raw(raw, sql), repeat))
            gov = statistics.median(_times(_governed(service, actors["bench-plain"], sql), repeat))
            line = (
                f"{label:<36} {scale:>6g} {rows:>12,} {base:8.3f} {rows / base:>12,.0f} "
                f"{gov:10.3f} {rows / gov:>12,.0f} {gov / base:6.2f}"
            )
            print(line, flush=True)
        raw.close()
        platform.close()
    print(f"load average after: {_load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scaling", default="1,10,50", help="Demo scales for part 2 ('' skips).")
    parser.add_argument("--scaling-repeat", type=int, default=3)
    parser.add_argument("--driver-memory", default="4g", help="Spark driver heap (local mode).")
    parser.add_argument("--no-compare", action="store_true", help="Part 2 only.")
    args = parser.parse_args()
    os.environ.setdefault(
        "PYSPARK_SUBMIT_ARGS", f"--driver-memory {args.driver_memory} pyspark-shell"
    )
    print(
        f"bench/engines.py: {os.cpu_count()} cores, PYSPARK_SUBMIT_ARGS="
        f"{os.environ['PYSPARK_SUBMIT_ARGS']!r}, load average {_load()}",
        flush=True,
    )
    scales = [float(s) for s in args.scaling.split(",") if s.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        reuse = None
        if not args.no_compare:
            spark, actors = compare(Path(tmp), args.scale, args.repeat)
            reuse = (args.scale, spark, actors)
        if scales:
            scaling(Path(tmp), scales, args.scaling_repeat, reuse)
        elif reuse is not None:
            reuse[1].close()


if __name__ == "__main__":
    main()
