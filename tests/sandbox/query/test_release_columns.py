"""Outputs that are released statistics as they are skip the release database.

Where the release SQL is a plain projection (``Plan.release_columns``), ``release`` takes
the columns from the released stats table itself.  Over every query of the utility corpus
the guard answers, exact and with a budget (seeded noise), the table must equal, in
values and Arrow types, what the release SQL computes in DuckDB.
"""

from __future__ import annotations

import dataclasses

import duckdb
import pyarrow as pa
import pytest

from sandbox.core.errors import SandboxError
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.noise import seeded_noise
from sandbox.query.release import Prepared, execute, prepare, release, release_database
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access
from tests.utility.enclave import load_corpus

CORPUS = load_corpus()
PARAMS = {
    "exact": DisclosureParams(k=5),
    "dp": DisclosureParams(k=5, epsilon=1.0, max_rows_per_entity=2, max_groups_per_entity=2),
}


class _Engine:
    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def run(self, query: object, *, max_rows: int | None, before: object = None) -> pa.Table:
        assert isinstance(query, str)
        if callable(before):
            before()
        return self.con.sql(query).to_arrow_table()

    def close(self) -> None:
        pass


def _through_sql(prepared: Prepared) -> Prepared:
    """The same query with the release SQL always run (no plain projection)."""
    plan = dataclasses.replace(prepared.plan, release_columns=None)
    parts = tuple(_through_sql(p) for p in getattr(prepared, "parts", ()))
    changes: dict[str, object] = {"plan": plan}
    if parts:
        changes["parts"] = parts
    return dataclasses.replace(prepared, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", sorted(PARAMS))
def test_plain_projections_equal_the_release_sql(
    raw_demo: duckdb.DuckDBPyConnection, mode: str
) -> None:
    grants = access()
    engine = _Engine(raw_demo)
    database = release_database()
    plain = 0
    for line in CORPUS:
        try:
            prepared = prepare(line["sql"], grants, PARAMS[mode], max_sql_length=MAX_SQL_LENGTH)
        except SandboxError:
            continue  # refused here (its grant differs): the guard's tests cover it
        stats = execute(engine, prepared)  # type: ignore[arg-type]
        fast = release(stats, prepared, noise=seeded_noise(7), database=database)
        slow = release(stats, _through_sql(prepared), noise=seeded_noise(7), database=database)
        assert fast.table.schema == slow.table.schema, line["id"]
        assert fast.table.to_pylist() == slow.table.to_pylist(), line["id"]
        plain += prepared.plan.release_columns is not None
    assert plain >= 20  # the fast path is taken often enough to be tested
