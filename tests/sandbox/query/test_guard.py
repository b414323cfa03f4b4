"""The guard: rule cases as data, the shared attack samples, lineage, and generated attacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Level
from sandbox.core.errors import QueryRefused
from sandbox.core.settings import SETTINGS_BY_NAME
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec
from sandbox.query.guard import check_query
from sandbox.query.parse import parse_query
from sandbox.query.rewrite import build_plan

CASES = Path(__file__).parent / "guard_cases"
# The attack samples we were given, vendored (see shared_attacks/SOURCE.md): never skipped.
SHARED_ATTACKS = Path(__file__).parent / "shared_attacks" / "samples.jsonl"
GROUPABLE = frozenset({"age", "gender", "diagnosis_code", "board_time"})
MAX_SQL_LENGTH: int = SETTINGS_BY_NAME["max_sql_length"].default


def access(groupable: frozenset[str] = GROUPABLE, max_level: Level = Level.L3):
    return {d: DatasetAccess(demo_spec(d), max_level, None, groupable) for d in DEMO_DATASETS}


def guard(sql: str, grants=None):
    grants = access() if grants is None else grants
    parsed = parse_query(sql, max_length=MAX_SQL_LENGTH)
    unknown = [d for d in parsed.datasets if d not in DEMO_DATASETS]
    if unknown:
        raise QueryRefused(f"{unknown[0]} is not registered", rule="unknown_dataset")
    checked = check_query(parsed, grants)
    return build_plan(checked, grants)


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (CASES / name).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("case", _load("refuse.jsonl"), ids=lambda c: c["sql"][:60])
def test_refused_with_rule(case: dict) -> None:
    with pytest.raises(QueryRefused) as info:
        guard(case["sql"])
    assert info.value.rule == case["rule"], info.value.message
    assert case.get("says", "") in info.value.message  # where a case names the words


@pytest.mark.parametrize("case", _load("answer.jsonl"), ids=lambda c: c["sql"][:60])
def test_legitimate_queries_are_accepted(case: dict) -> None:
    plan = guard(case["sql"])
    assert "__entities" in plan.stats_sql
    assert plan.release_sql.startswith("SELECT")


def _shared_samples() -> list[dict]:
    samples = [json.loads(line) for line in SHARED_ATTACKS.read_text().splitlines() if line]
    assert len(samples) >= 25 and {s["expect"] for s in samples} == {"refuse", "answer"}
    return samples


def test_shared_attack_samples_at_the_guard() -> None:
    for sample in _shared_samples():
        if sample["expect"] == "refuse":
            with pytest.raises(QueryRefused):
                guard(sample["sql"])
        else:
            guard(sample["sql"])


def test_refusals_name_the_column_and_never_a_value() -> None:
    with pytest.raises(QueryRefused) as info:
        guard("SELECT count(*) FROM health.claims WHERE id_number = '110101199003071234'")
    assert "health.claims.id_number" in info.value.message
    assert "110101199003071234" not in info.value.message


def test_groupable_columns_come_from_the_grant() -> None:
    sql = "SELECT diagnosis_code, count(*) FROM health.claims GROUP BY 1"
    guard(sql)
    with pytest.raises(QueryRefused) as info:
        guard(sql, access(groupable=frozenset({"age"})))
    assert info.value.rule == "guard.sensitive"
    with pytest.raises(QueryRefused) as info:
        guard("SELECT count(*) FROM health.claims WHERE gender = 'F'", access(frozenset()))
    assert info.value.rule == "guard.quasi"


def test_column_ceiling_and_list() -> None:
    with pytest.raises(QueryRefused) as info:
        guard(
            "SELECT district, count(DISTINCT person_id) FROM health.claims GROUP BY 1",
            access(max_level=Level.L2),
        )
    assert info.value.rule == "grant.column_ceiling"
    grants = access()
    grants["health.claims"] = DatasetAccess(
        demo_spec("health.claims"), Level.L3, frozenset({"district", "person_id"}), GROUPABLE
    )
    guard("SELECT district, count(*) FROM health.claims GROUP BY 1", grants)
    with pytest.raises(QueryRefused) as info:
        guard("SELECT district, avg(claim_amount) FROM health.claims GROUP BY 1", grants)
    assert info.value.rule == "grant.column_list"


def test_missing_grant_on_one_side_of_a_join() -> None:
    grants = access()
    del grants["hrss.social_insurance"]
    with pytest.raises(QueryRefused) as info:
        guard(
            "SELECT e.district, count(*) FROM market.enterprises e JOIN hrss.social_insurance s"
            " ON s.credit_code = e.credit_code GROUP BY 1",
            grants,
        )
    assert info.value.rule == "grant.missing"


def test_quasi_column_is_rewritten_to_its_band() -> None:
    plan = guard("SELECT age, count(*) FROM health.claims GROUP BY age")
    assert "FLOOR" in plan.stats_sql.upper() and "/ 10" in plan.stats_sql
    plan = guard("SELECT board_time, count(*) FROM transport.trips GROUP BY 1")
    assert "DATE_TRUNC('HOUR'" in plan.stats_sql.upper()


def test_casts_are_made_safe() -> None:
    plan = guard("SELECT CAST(claim_date AS VARCHAR) AS d, count(*) FROM health.claims GROUP BY 1")
    assert "TRY_CAST" in plan.stats_sql.upper()


def test_entity_key_is_carried_through_derived_tables() -> None:
    plan = guard(
        "WITH c AS (SELECT district AS d FROM health.claims) "
        "SELECT d, count(*) FROM (SELECT d FROM c) t GROUP BY d"
    )
    assert plan.stats_sql.count("__sbx_e") >= 3
    assert plan.primary == "health.claims"


# -- generated attacks: an identifier mixed into any expression is always refused ----------

IDENTIFIERS = ["person_id", "name", "claim_id", "id_number"]
WRAPPERS = [
    "{c}",
    "upper({c})",
    "lower({c})",
    "length({c})",
    "substr({c}, 1, 2)",
    "left({c}, 3)",
    "{c} || 'x'",
    "coalesce({c}, 'x')",
    "CAST({c} AS VARCHAR)",
    "TRY_CAST({c} AS INTEGER)",
    "CASE WHEN {c} > 'M' THEN 1 ELSE 0 END",
    "nullif({c}, '')",
    "length({c}) % 2",
    "{c} IS NULL",
]
PLACES = [
    "SELECT {e} AS k, count(*) FROM health.claims GROUP BY 1",
    "SELECT count(*) FROM health.claims WHERE {e} = 'x'",
    "SELECT district, count(*) FROM health.claims GROUP BY 1 HAVING min({e}) IS NOT NULL",
    "SELECT district, count(*) FILTER (WHERE {e} IS NOT NULL) FROM health.claims GROUP BY 1",
    "SELECT district, sum({e}) FROM health.claims GROUP BY 1",
    "SELECT district, max({e}) FROM health.claims GROUP BY 1",
    "WITH t AS (SELECT {e} AS district FROM health.claims) "
    "SELECT district, count(*) FROM t GROUP BY 1",
    "SELECT k, count(*) FROM (SELECT {e} AS k FROM health.claims) s GROUP BY k",
    "SELECT district, count(*) FROM health.claims GROUP BY 1 ORDER BY max({e})",
    "SELECT district, count(DISTINCT {e}) FROM health.claims GROUP BY 1",
    "SELECT k, count(*) FROM (SELECT district AS k FROM health.claims "
    "UNION ALL SELECT {e} FROM health.claims) s GROUP BY k",
    "SELECT count(*) FROM (SELECT district, age FROM health.claims UNION ALL "
    "SELECT district, age FROM health.claims) s WHERE {e} IS NOT NULL",
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(IDENTIFIERS),
    st.lists(st.sampled_from(WRAPPERS), min_size=1, max_size=3),
    st.sampled_from(PLACES),
    st.sampled_from(["", "  ", "\n"]),
)
def test_identifiers_in_expressions_are_always_refused(ident, wrappers, place, space) -> None:
    expression = ident
    for wrapper in wrappers:
        expression = wrapper.format(c=expression)
    sql = place.format(e=expression) + space
    if expression == "person_id" and "count(DISTINCT" in place:
        return  # the one allowed use: counting entities
    with pytest.raises(QueryRefused) as info:
        guard(sql)
    assert "x'" not in info.value.message


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_arbitrary_text_never_crashes_the_guard(text: str) -> None:
    try:
        guard(text)
    except QueryRefused:
        pass


def test_a_list_of_quantiles_is_answered_one_output_each() -> None:
    with pytest.raises(QueryRefused) as info:
        guard("SELECT quantile_cont(claim_amount, [0.25, 0.75]) FROM health.claims")
    assert "write one output per quantile" in info.value.message


def test_an_extreme_of_a_column_with_a_measure_use_points_to_a_quantile() -> None:
    with pytest.raises(QueryRefused) as info:
        guard("SELECT min(age) FROM health.claims")  # quasi, banded, with a measure use
    assert info.value.rule == "guard.aggregate_record_value"
    assert "quantile_cont(age, 0.01)" in info.value.message
    with pytest.raises(QueryRefused) as info:
        guard("SELECT min(diagnosis_code) FROM health.claims")  # no measure use: no hint
    assert "quantile" not in info.value.message
