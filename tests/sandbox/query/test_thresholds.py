"""Thresholds: a WHERE that compares with a total (``x > (SELECT avg(x) FROM t)``).

The total is released first, as the query of its own it is (k, dominance, noise); the
query then runs with the released value in its place (``parts.split_thresholds``,
``release.run_thresholds``), so only released values reach the enclave's second query.
Where nothing is withheld or noised the answer is raw DuckDB's on the clamped data; ε
is split over the threshold and the query; what is not a threshold stays refused.
"""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal
from typing import Any

import duckdb
import pytest
import sqlglot
from hypothesis import given
from hypothesis import strategies as st

from sandbox.core.errors import EnclaveError, QueryRefused
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.noise import seeded_noise
from sandbox.query.parse import parse_query
from sandbox.query.parts import THRESHOLD, bind_thresholds, split_thresholds
from sandbox.query.release import (
    Prepared,
    PreparedWithThresholds,
    execute,
    prepare,
    release,
    run_thresholds,
    with_thresholds,
)
from sandbox.query.service import QueryService
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access
from tests.sandbox.query.test_totals import EXACT, _rounded
from tests.sandbox.query.test_totals import clamped as clamped  # the module's fixture

BUDGET = DisclosureParams(
    k=1, epsilon=1.0, max_rows_per_entity=9, max_groups_per_entity=4, dominance_p=None
)
ABOVE_MEAN = (
    "SELECT count(*) AS n FROM health.claims "
    "WHERE claim_amount > (SELECT avg(claim_amount) FROM health.claims)"
)
ANSWERED = [
    ABOVE_MEAN,
    # grouped, an expression around the subquery, another condition beside it
    "SELECT district, count(*) AS n, avg(claim_amount) AS mean FROM health.claims "
    "WHERE claim_amount > 1.5 * (SELECT avg(claim_amount) FROM health.claims) "
    "AND gender = 'F' GROUP BY district",
    # the threshold with a filter of its own, compared the other way round
    "SELECT gender, count(*) AS n FROM health.claims WHERE (SELECT avg(claim_amount) "
    "FROM health.claims WHERE gender = 'M') <= claim_amount GROUP BY gender",
    # in a group key: above and below the mean (by position, by expression, GROUP BY ALL)
    "SELECT claim_amount > (SELECT avg(claim_amount) FROM health.claims) AS high, "
    "count(*) AS n FROM health.claims GROUP BY 1",
    "SELECT count(*) AS n FROM health.claims "
    "GROUP BY claim_amount > (SELECT avg(claim_amount) FROM health.claims)",
    "SELECT gender, claim_amount > (SELECT avg(claim_amount) FROM health.claims) AS high, "
    "count(*) AS n FROM health.claims GROUP BY ALL",
    # a ratio as the threshold: used unrounded (the grant rounds what it shows only)
    "SELECT count(*) AS n FROM health.claims WHERE claim_amount > "
    "100000 * (SELECT avg(claim_amount) / 100000 FROM health.claims)",
    # two thresholds (one twice), a CTE read by the threshold
    "WITH f AS (SELECT claim_amount FROM health.claims WHERE gender = 'F') "
    "SELECT count(*) AS n FROM health.claims WHERE claim_amount > (SELECT avg(claim_amount) "
    "FROM f) AND claim_amount < (SELECT avg(claim_amount) FROM f) + (SELECT "
    "stddev(claim_amount) FROM health.claims)",
]


def _prepared(sql: str, params: DisclosureParams = EXACT) -> PreparedWithThresholds:
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    assert isinstance(prepared, PreparedWithThresholds)
    return prepared


def _run(platform: Any, prepared: PreparedWithThresholds, noise: Any = None) -> Any:
    run, parts = run_thresholds(platform.enclave, prepared, noise=noise)
    released = release(execute(platform.enclave, run), run, noise=noise)
    return run, with_thresholds(released, parts)


# -- splitting and binding (pure) ---------------------------------------------------------


def test_each_threshold_is_a_query_of_its_own_and_a_marked_stand_in() -> None:
    split = split_thresholds(parse_query(ANSWERED[-1], max_length=MAX_SQL_LENGTH))
    assert split is not None
    assert len(split.totals) == 2  # the same subquery twice is one release
    first = split.totals[0].expression.sql(dialect="duckdb")
    assert first.startswith("WITH f AS") and "avg" in first.lower()
    marks = [
        lit.meta[THRESHOLD]
        for lit in split.main.expression.find_all(sqlglot.exp.Literal)
        if THRESHOLD in lit.meta
    ]
    assert sorted(marks) == [0, 0, 1]
    assert "SELECT" not in split.main.expression.sql().split("FROM", 1)[1]  # no subquery left


def test_a_query_without_one_is_left_alone() -> None:
    for sql in (
        "SELECT count(*) AS n FROM health.claims WHERE claim_amount > 100",
        "SELECT gender, count(*) * 1.0 / (SELECT count(*) FROM health.claims) AS share "
        "FROM health.claims GROUP BY gender",
    ):
        assert split_thresholds(parse_query(sql, max_length=MAX_SQL_LENGTH)) is None


@given(
    st.one_of(
        st.integers(-(10**12), 10**12),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.decimals(
            allow_nan=False, allow_infinity=False, places=4, min_value=-(10**9), max_value=10**9
        ),
    )
)
def test_a_released_value_is_bound_as_the_number_it_is(value: Any) -> None:
    split = split_thresholds(parse_query(ABOVE_MEAN, max_length=MAX_SQL_LENGTH))
    assert split is not None
    bound = bind_thresholds(split.main, (value,)).expression
    compared = bound.args["where"].this.expression
    ((got,),) = duckdb.sql(f"SELECT {compared.sql(dialect='duckdb')}").fetchall()
    if isinstance(value, Decimal):
        assert Decimal(got) == value
    else:
        assert float(got) == float(value)


def test_a_withheld_or_non_finite_value_keeps_no_row_and_a_non_number_is_refused() -> None:
    split = split_thresholds(parse_query(ABOVE_MEAN, max_length=MAX_SQL_LENGTH))
    assert split is not None
    for value in (None, float("nan"), float("inf")):
        bound = bind_thresholds(split.main, (value,)).expression.sql(dialect="duckdb")
        assert bound.endswith("claim_amount > CAST(NULL AS DOUBLE)")
    with pytest.raises(QueryRefused) as info:
        bind_thresholds(split.main, ("2024-01-01",))
    assert info.value.rule == "guard.subquery_predicate"


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        (
            "SELECT count(*) AS n FROM health.claims WHERE district > (SELECT min(district) "
            "FROM health.claims)",
            "guard.subquery_predicate",
        ),
        (
            "SELECT count(*) AS n FROM health.claims WHERE claim_date > (SELECT count(*) "
            "FROM health.claims)",
            "guard.output_types",
        ),
    ],
)
def test_a_threshold_of_the_wrong_type_is_refused_before_the_charge(
    demo_deployment: Any, sql: str, rule: str
) -> None:
    """Data-independent, so refused at explain (at run time the one failed at any released
    value and ran where the threshold was withheld: an oracle under review)."""
    platform, tokens = demo_deployment
    bank = platform.authority.authenticate(tokens["op-bank"])
    answer = QueryService(platform).explain(bank, sql)
    assert not answer["accepted"] and answer["rule"] == rule, answer


# -- preparing ----------------------------------------------------------------------------


def test_epsilon_is_split_over_the_threshold_and_the_query() -> None:
    prepared = _prepared(ABOVE_MEAN, BUDGET)
    (threshold,) = prepared.parts
    assert threshold.params.epsilon == prepared.params.epsilon == pytest.approx(0.5)
    assert prepared.epsilon == pytest.approx(threshold.epsilon + Prepared.epsilon.fget(prepared))  # type: ignore[attr-defined]
    assert prepared.epsilon <= 1.0 + 1e-9
    assert prepared.touched == ["health.claims.claim_amount"]


def test_the_stand_in_is_never_run() -> None:
    prepared = _prepared(ABOVE_MEAN)
    with pytest.raises(EnclaveError):
        execute(object(), prepared)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sql", "rule", "says"),
    [
        (
            "SELECT count(*) AS n FROM health.claims c WHERE claim_amount > (SELECT "
            "avg(claim_amount) FROM health.claims d WHERE d.district = c.district)",
            "guard.subquery_predicate",
            "a correlated subquery",
        ),
        (
            "SELECT count(*) AS n FROM health.claims WHERE claim_amount > (SELECT "
            "avg(claim_amount) FROM health.claims GROUP BY district)",
            "guard.subquery_predicate",
            "no GROUP BY",
        ),
        (
            "SELECT count(*) AS n, (SELECT count(*) FROM health.claims) AS total FROM "
            "health.claims WHERE claim_amount > (SELECT avg(claim_amount) FROM health.claims)",
            "guard.subquery_predicate",
            "run those as a query of their own",
        ),
        (
            "SELECT count(*) AS n FROM health.claims WHERE age > (SELECT avg(age) FROM "
            "health.claims)",
            "guard.generalisation",
            "bands of 10",
        ),
        # whether `age = v` selects nothing or cuts a band depends on v: refused for any v
        # (under review a refusal at run time told an exact count's parity)
        (
            "SELECT count(*) AS n FROM health.claims WHERE age = (SELECT count(*) / 2.0 "
            "FROM health.claims WHERE district = 'D01')",
            "guard.generalisation",
            "whose value decides",
        ),
        (
            "SELECT count(*) AS n FROM health.claims WHERE claim_amount > (SELECT "
            "max(claim_amount) FROM health.claims)",
            "guard.aggregate_record_value",
            "max()",
        ),
        (
            "SELECT count(*) AS n FROM health.claims WHERE person_id IN (SELECT "
            "count(*) FROM health.claims)",
            "guard.subquery_predicate",
            "cohort",
        ),
    ],
)
def test_what_is_not_a_threshold_stays_refused(sql: str, rule: str, says: str) -> None:
    for params in (EXACT, BUDGET):
        with pytest.raises(QueryRefused) as info:
            prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
        assert info.value.rule == rule, info.value.message
        assert says in info.value.message
        assert "1.0000000000001" not in info.value.message  # never the stand-in


def test_thresholds_are_listed_in_the_order_written() -> None:
    sql = (
        "SELECT count(*) AS n FROM health.claims WHERE claim_amount > (SELECT avg(claim_amount)"
        " FROM health.claims) AND claim_amount < (SELECT avg(claim_amount) FROM health.claims"
        " WHERE gender = 'F') AND age < (SELECT count(*) FROM health.claims)"
    )
    split = split_thresholds(parse_query(sql, max_length=MAX_SQL_LENGTH))
    assert split is not None
    texts = [t.expression.sql(dialect="duckdb") for t in split.totals]
    assert "gender" not in texts[0] and "gender" in texts[1] and "COUNT" in texts[2]


def test_a_threshold_is_used_unrounded_where_the_grant_rounds() -> None:
    rounded = replace(EXACT, round_digits=2)
    prepared = _prepared(ANSWERED[6], rounded)
    assert prepared.params.round_digits == 2  # the query's own outputs are rounded
    assert all(part.params.round_digits is None for part in prepared.parts)


# -- running ------------------------------------------------------------------------------


@pytest.mark.parametrize("sql", ANSWERED)
def test_without_withholding_the_release_is_duckdbs_answer(
    demo_platform: Any, clamped: Any, sql: str
) -> None:
    _, released = _run(demo_platform, _prepared(sql))
    rows = sorted((_rounded(r) for r in released.table.to_pylist()), key=repr)
    expected = sorted((_rounded(r) for r in clamped.sql(sql).fetchall()), key=repr)
    assert rows and rows == expected
    assert released.thresholds and all(isinstance(v, float) for v in released.thresholds)


def test_under_a_budget_the_query_reads_the_released_threshold_only(demo_platform: Any) -> None:
    prepared = _prepared(ABOVE_MEAN, BUDGET)
    run, released = _run(demo_platform, prepared, noise=seeded_noise(11))
    (value,) = released.thresholds
    with demo_platform.enclave.cursor() as cur:
        truth = cur.sql("SELECT avg(least(claim_amount, 13000)) FROM health.claims").fetchall()[0][
            0
        ]
    assert value != truth  # noised
    literal = re.search(r"claim_amount\"? > (?:TRY_CAST\()?([-\d.e+]+)", run.plan.stats_sql)
    assert literal is not None and float(literal.group(1)) == value
    assert str(truth) not in run.plan.stats_sql
    assert released.epsilon_spent == pytest.approx(prepared.epsilon)
    # the count is noised too, and about right
    (row,) = released.table.to_pylist()
    with demo_platform.enclave.cursor() as cur:
        exact = cur.sql(
            f"SELECT count(*) FROM health.claims WHERE claim_amount > {value!r}"
        ).fetchall()[0][0]
    assert abs(row["n"] - exact) < 0.05 * exact


def test_at_a_huge_budget_the_release_is_the_clamped_answer(
    demo_platform: Any, clamped: Any
) -> None:
    prepared = _prepared(ANSWERED[1], replace(BUDGET, epsilon=1e9))
    _, released = _run(demo_platform, prepared, noise=seeded_noise(12))
    # The threshold: the average with each person's mean clamped, at most C = 9 claims a
    # person (entity_caps.mean_clamped), as any sum under a budget.
    (threshold,) = released.thresholds
    c = BUDGET.max_rows_per_entity
    with demo_platform.enclave.cursor() as cur:
        ((want,),) = cur.sql(
            f"SELECT sum(least(13000, greatest(0, s / n)) * least(n, {c})) / sum(least(n, {c})) "
            "FROM (SELECT person_id, sum(claim_amount::DOUBLE) AS s, count(claim_amount) AS n "
            "FROM health.claims GROUP BY person_id)"
        ).fetchall()
    assert threshold == pytest.approx(want, rel=1e-3)  # the grid; each value clamped: 1.5% less
    # the rows: the clamped table's, compared with that threshold
    sql = ANSWERED[1].replace("(SELECT avg(claim_amount) FROM health.claims)", repr(threshold))
    expected = {r[0]: r[1] for r in clamped.sql(sql).fetchall()}
    got = {r["district"]: r["n"] for r in released.table.to_pylist()}
    assert got and all(abs(got[d] - expected[d]) <= 1 for d in got)


# -- through the service ------------------------------------------------------------------


def test_noised_with_its_threshold_shown_on_dp_exact_and_held_on_reviewed(
    demo_deployment: Any,
) -> None:
    platform, tokens = demo_deployment
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    explained = service.explain(insurer, ABOVE_MEAN)
    assert explained["accepted"], explained
    assert explained["columns"] == ["health.claims.claim_amount"]
    (before,) = explained["thresholds"]  # the average's accuracy, before anything is spent
    assert before["kind"] == "average" and before["sum_half_width"] > 0
    result = service.run(insurer, ABOVE_MEAN)
    assert result.meta["epsilon_spent"] == pytest.approx(explained["epsilon"])
    (threshold,) = result.meta["thresholds"]
    with platform.enclave.cursor() as cur:
        truth = cur.sql("SELECT avg(least(claim_amount, 13000)) FROM health.claims").fetchall()[0][
            0
        ]
    assert isinstance(threshold, float) and threshold != truth
    bank = platform.authority.authenticate(tokens["op-bank"])
    held = service.run_job(bank, ABOVE_MEAN)
    assert type(held).__name__ == "Held"
    assert "thresholds" not in held.meta
    assert "thresholds" not in service.explain(bank, ABOVE_MEAN)  # exact: no noise to state
    with platform.enclave.cursor() as cur:
        exact = cur.sql(ABOVE_MEAN.replace("avg(claim_amount)", "avg(least(claim_amount, 13000))"))
        assert held.table.to_pylist() == [{"n": exact.fetchall()[0][0]}]


def test_a_refusal_at_the_released_values_is_a_failure_a_review_holds(
    demo_platform: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepted at every probe, a query refused at its released values fails as
    ``release.threshold``, which a reviewed grant holds like any failure on the data."""
    from sandbox.query.held_failure import DATA_FAILURES

    def refused(self: Any, values: Any) -> Any:
        raise QueryRefused("cuts inside a band", rule="guard.generalisation")

    prepared = _prepared(ABOVE_MEAN)
    monkeypatch.setattr(PreparedWithThresholds, "at", refused)
    with pytest.raises(EnclaveError) as info:
        run_thresholds(demo_platform.enclave, prepared)
    assert info.value.rule == "release.threshold" and info.value.rule in DATA_FAILURES
    assert "band" not in info.value.message
