"""The negative list under the guard fuzzers, with ``health.claims.claim_amount`` prohibited.

- Queries assembled from the demo classifications' pieces (``test_fuzz_guard.queries``,
  about a quarter answered): one the guard answers without the list is refused with it
  (``negative.prohibited``) exactly when it names the column; every other is answered.
- Random ASTs from sqlglot's whole expression set in every clause
  (``test_fuzz_grammar.cases``): whatever is accepted never reads the column, not in the
  columns it touched, not in the SQL that would run in the enclave (of the query and of
  each total).

The guard and the rewrite only (``prepare``), no server: each example costs milliseconds.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Level
from sandbox.core.data_controls import DatasetControls
from sandbox.core.errors import QueryRefused, SandboxError
from sandbox.core.settings import SETTINGS_BY_NAME
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.release import Prepared, prepare
from tests.security.test_fuzz_grammar import Case, cases
from tests.security.test_fuzz_guard import fuzz_settings, queries

MAX_SQL_LENGTH: int = SETTINGS_BY_NAME["max_sql_length"].default
GROUPABLE = frozenset({"age", "gender", "diagnosis_code", "board_time"})
PLAIN = {d: DatasetAccess(demo_spec(d), Level.L3, None, GROUPABLE) for d in DEMO_DATASETS}
LISTED = {
    **PLAIN,
    "health.claims": replace(
        PLAIN["health.claims"], controls=DatasetControls(prohibited=frozenset({"claim_amount"}))
    ),
}
PARAMS = DisclosureParams(k=10)


def prepared(sql: str, access: dict[str, DatasetAccess]) -> Prepared:
    return prepare(sql, access, PARAMS, max_sql_length=MAX_SQL_LENGTH)


@fuzz_settings(100)
@given(sql=queries())
def test_refused_exactly_when_it_names_the_column(sql: str) -> None:
    try:
        prepared(sql, PLAIN)
    except SandboxError:
        return  # refused without the list: nothing to compare
    if "claim_amount" in sql.lower():
        with pytest.raises(QueryRefused) as info:
            prepared(sql, LISTED)
        assert info.value.rule == "negative.prohibited", sql
    else:
        prepared(sql, LISTED)


@fuzz_settings(100)
@given(case=cases())
def test_an_accepted_query_never_reads_a_prohibited_column(case: Case) -> None:
    try:
        found = prepared(case.sql, LISTED)
    except SandboxError as exc:
        assert exc.rule, case.sql
        return
    touched = [c for c in found.touched if c.endswith(".claim_amount")]
    assert not touched, f"accepted {touched[0]} in {case.position}: {case.sql}"
    for part in (found, *getattr(found, "parts", ())):
        assert "claim_amount" not in part.plan.stats_sql.lower(), case.sql
