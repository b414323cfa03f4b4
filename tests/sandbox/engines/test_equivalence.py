"""Same released results on DuckDB and Spark: every bench workload and the utility corpus.

Two copies of each deployment (scale 0.01): one on DuckDB (the enclave file, caps by
the portable hash as Spark's are), one whose datasets were moved to the warehouse and
run on Spark ``local[2]`` (``spark_setup.move_to_warehouse``).  Each query runs through
the real :class:`QueryService` on both, as its operator: ``reviewed`` grants are
judged on the held exact table, ``dp`` grants on the released noisy one, with the same
seeded noise (``seeded_noise``) per query on both.  Results must be equal (counts
exactly, floats to a relative 1e-9) or refused by the same rule; a corpus line only
DuckDB answers must be refused ``engine.unsupported`` and listed, with its reason, in
``duckdb_only.txt``.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from bench.query_overhead import SMALL, WORKLOADS, setup
from policies import Actor
from sandbox.core.errors import SandboxError
from sandbox.platform import Platform
from sandbox.query.noise import seeded_noise
from sandbox.query.release import execute
from sandbox.query.service import QueryService
from tests.sandbox.engines.spark_setup import move_to_warehouse, require_spark
from tests.utility.enclave import UtilityEnclave, load_corpus

HERE = Path(__file__).parent
DUCKDB_ONLY = HERE / "duckdb_only.txt"
QUERIES = {**WORKLOADS, "small query": SMALL}
CORPUS = load_corpus()
#: Corpus lines per class compared in ``make test`` (all of them in ``make test-long``).
SAMPLED_PER_CLASS = 2


def duckdb_only() -> dict[str, str]:
    """Corpus ids only DuckDB answers, each with its reason (``id  # reason``)."""
    listed = {}
    for line in DUCKDB_ONLY.read_text(encoding="utf-8").splitlines():
        entry, _, reason = line.partition("#")
        if entry.strip():
            listed[entry.strip()] = reason.strip()
    return listed


def same_values(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    return bool(a == b)


def outcome(service: QueryService, actor: Actor, sql: str, *, hold: bool, seed: str) -> Any:
    """The released (or held) table as rows, or the rule that refused."""
    service.noise = seeded_noise(zlib.crc32(seed.encode()))
    try:
        if hold:
            result = service.run_job(actor, sql)
        else:
            result = service.run(actor, sql)
    except SandboxError as exc:
        return ("refused", exc.rule or exc.code)
    return (result.table.column_names, result.table.to_pylist())


@pytest.fixture(scope="module", autouse=True)
def spark_here() -> None:
    require_spark()


@pytest.fixture(scope="module")
def bench_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("bench-engines")
    duck, duck_actors = setup(home / "duckdb", 0.01)
    spark, spark_actors = setup(home / "spark", 0.01)
    move_to_warehouse(spark)
    yield {
        "duckdb": (QueryService(duck, portable_hash=True), duck_actors),
        "spark": (QueryService(spark), spark_actors),
    }
    duck.close()
    spark.close()


@pytest.fixture(scope="module")
def corpus_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, UtilityEnclave]]:
    home = tmp_path_factory.mktemp("corpus-engines")
    duck, spark = UtilityEnclave(home / "duckdb"), UtilityEnclave(home / "spark")
    duck.service.portable_hash = True
    move_to_warehouse(spark.platform)
    yield {"duckdb": duck, "spark": spark}
    duck.close()
    spark.close()


@pytest.mark.parametrize("mode", ["reviewed", "dp"])
@pytest.mark.parametrize("workload", list(QUERIES))
def test_workload_released_alike(bench_pair: dict[str, Any], workload: str, mode: str) -> None:
    who, hold = ("bench-plain", True) if mode == "reviewed" else ("bench-dp", False)
    sql = QUERIES[workload]
    results = {
        name: outcome(service, actors[who], sql, hold=hold, seed=workload)
        for name, (service, actors) in bench_pair.items()
    }
    assert results["spark"][0] != "refused", results["spark"]
    assert same_values(results["duckdb"], results["spark"]), results


@pytest.mark.parametrize("mode", ["reviewed", "dp"])
@pytest.mark.parametrize("workload", list(QUERIES))
def test_workload_stats_alike(bench_pair: dict[str, Any], workload: str, mode: str) -> None:
    """The statistics each engine computes (before disclosure), row for row: a released
    table emptied by the k threshold at this scale still compares every group here."""
    who = "bench-plain" if mode == "reviewed" else "bench-dp"
    tables: dict[str, pa.Table] = {}
    for name, (service, actors) in bench_pair.items():
        auth = service._authorize(actors[who], QUERIES[workload], "equivalence", None, None)
        platform: Platform = service.platform
        engine = platform.query_engine(name)
        stats = execute(engine, auth.prepared, max_groups=1_000_000)
        assert isinstance(stats, pa.Table)
        keys = [(k, "ascending") for k in auth.prepared.plan.keys]
        tables[name] = stats.sort_by(keys) if keys else stats
    assert tables["duckdb"].num_rows > 0
    assert tables["duckdb"].schema == tables["spark"].schema
    assert same_values(tables["duckdb"].to_pylist(), tables["spark"].to_pylist())


def corpus_params() -> list[Any]:
    """Every corpus line; in ``make test`` the first two of each class and every line of
    duckdb_only.txt (Spark takes about a second a query), the rest with ``make test-long``."""
    listed, seen, params = duckdb_only(), Counter[str](), []
    for line in CORPUS:
        seen[line["class"]] += 1
        sampled = seen[line["class"]] <= SAMPLED_PER_CLASS or line["id"] in listed
        marks = () if sampled else (pytest.mark.slow,)
        params.append(pytest.param(line, id=line["id"], marks=marks))
    return params


@pytest.mark.parametrize("line", corpus_params())
def test_corpus_line_alike(corpus_pair: dict[str, UtilityEnclave], line: dict[str, Any]) -> None:
    results = {}
    for name, enclave in corpus_pair.items():
        actor = enclave.actors[line["as"]]
        results[name] = outcome(enclave.service, actor, line["sql"], hold=True, seed=line["id"])
    listed = duckdb_only()
    if line["id"] in listed:
        assert results["spark"] == ("refused", "engine.unsupported"), results
        assert results["duckdb"][0] != "refused", "listed in duckdb_only.txt, refused on DuckDB"
        return
    assert same_values(results["duckdb"], results["spark"]), results


def test_the_list_names_corpus_lines_with_reasons() -> None:
    ids = {line["id"] for line in CORPUS}
    for ident, reason in duckdb_only().items():
        assert ident in ids
        assert reason
