"""The ranked copy a registration writes (``sandbox/enclave/ranked_rows.py``), through the
platform's real registration on an enclave file: written with the version that declares
``caps_at = "registration"``, dropped by one that does not, never for Spark, and read by
a budgeted query's plan only while it holds the table's rows."""

from __future__ import annotations

from dataclasses import replace

from sandbox.enclave.demo_data import DemoSource, demo_spec
from sandbox.enclave.ranked_rows import RANK, ranked_name, ranked_rows_present

CLAIMS = "health.claims"


def _present(platform, spec) -> bool:  # type: ignore[no-untyped-def]
    with platform.enclave.cursor() as cursor:
        return ranked_rows_present(cursor, spec)


def test_registration_writes_replaces_and_drops_the_copy(platform) -> None:  # type: ignore[no-untyped-def]
    spec = demo_spec(CLAIMS)
    assert spec.contribution is not None and spec.contribution.ranked
    platform.register(spec, DemoSource(CLAIMS, 0.002), registered_by="test")
    assert _present(platform, spec)
    with platform.enclave.cursor() as cursor:
        rows, people, worst, keyed = cursor.execute(
            f"SELECT count(*), count(DISTINCT person_id), max({RANK}), "
            f"(SELECT count(person_id) FROM health.claims) FROM {ranked_name(spec)}"
        ).fetchone()
        bad = cursor.execute(
            f"SELECT count(*) FROM (SELECT person_id, list({RANK} ORDER BY {RANK}) AS r, "
            f"count(*) AS n FROM {ranked_name(spec)} GROUP BY 1) WHERE r <> range(1, n + 1)"
        ).fetchone()
    assert rows == keyed > people > 0 and worst > 1
    assert bad == (0,)  # each person's rows ranked 1..n

    unranked = replace(spec, contribution=replace(spec.contribution, ranked=False))
    platform.register(unranked, DemoSource(CLAIMS, 0.002), registered_by="test")
    assert not _present(platform, spec)
    with platform.enclave.cursor() as cursor:
        left = cursor.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = '__sbx_ranked'"
        ).fetchone()
    assert left == (0,)


def test_a_spark_dataset_has_no_copy(platform) -> None:  # type: ignore[no-untyped-def]
    spec = demo_spec(CLAIMS)
    platform.register(spec, DemoSource(CLAIMS, 0.002), registered_by="test")
    platform.register(spec, DemoSource(CLAIMS, 0.002), registered_by="test", engine="spark")
    assert not _present(platform, spec)


def test_the_demo_claims_w1_plan_reads_the_copy(demo_platform) -> None:  # type: ignore[no-untyped-def]
    """The demo home's claims (registered as `make demo` does) are ranked, and the
    service's access says so for that version."""
    from sandbox.query.service import QueryService

    spec = demo_spec(CLAIMS)
    assert _present(demo_platform, spec)
    record = demo_platform.catalog.get(CLAIMS)
    assert QueryService(demo_platform)._ranked(record)
