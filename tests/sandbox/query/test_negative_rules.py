"""The negative list and important data in the guard: every clause kind, as data."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from sqlglot import exp

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Level
from sandbox.core.data_controls import WHOLE, DatasetControls
from sandbox.core.errors import QueryRefused
from sandbox.core.settings import SETTINGS_BY_NAME
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec
from sandbox.query.disclosure import DisclosureParams
from sandbox.query.guard import check_query
from sandbox.query.parse import parse_query
from sandbox.query.release import prepare

CASES = Path(__file__).parent / "guard_cases" / "negative_list.jsonl"
MAX_SQL_LENGTH: int = SETTINGS_BY_NAME["max_sql_length"].default
CONTROLS = {
    "health.claims": DatasetControls(prohibited=frozenset({"claim_amount"})),
    "transport.trips": DatasetControls(prohibited=frozenset({WHOLE})),
    "market.enterprises": DatasetControls(
        limited=frozenset({"registered_capital"}), important=frozenset({WHOLE})
    ),
}


def access() -> dict[str, DatasetAccess]:
    groupable = frozenset({"age", "gender", "diagnosis_code", "board_time"})
    return {
        d: DatasetAccess(
            demo_spec(d), Level.L3, None, groupable, CONTROLS.get(d, DatasetControls())
        )
        for d in DEMO_DATASETS
    }


def guard(sql: str, grants: dict[str, DatasetAccess] | None = None) -> None:
    check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants or access())


def _cases() -> list[dict[str, str]]:
    return [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["why"])
def test_refused_with_its_rule(case: dict[str, str]) -> None:
    with pytest.raises(QueryRefused) as info:
        guard(case["sql"])
    assert info.value.rule == case["rule"], info.value.message


def test_other_columns_of_the_dataset_stay_usable() -> None:
    guard("SELECT district, count(*) FROM health.claims GROUP BY district")
    guard("SELECT industry, count(*) FROM market.enterprises GROUP BY industry")


def test_the_message_names_the_item_and_star() -> None:
    with pytest.raises(QueryRefused) as info:
        guard("WITH t AS (SELECT * FROM health.claims) SELECT district, count(*) FROM t GROUP BY 1")
    assert "health.claims.claim_amount" in info.value.message
    assert "*" in info.value.message


def test_limited_column_needs_both_the_listing_and_the_co_approval() -> None:
    sql = "SELECT industry, sum(registered_capital) FROM market.enterprises GROUP BY 1"
    grants = access()
    market = grants["market.enterprises"]
    approved = market.controls.with_approved({"registered_capital"})
    # Co-approved but not named by the grant (a grant of every column up to its ceiling).
    grants["market.enterprises"] = replace(market, controls=approved)
    with pytest.raises(QueryRefused, match="strictly limited"):
        guard(sql, grants)
    listed = frozenset({"industry", "registered_capital"})
    grants["market.enterprises"] = replace(market, columns=listed)
    with pytest.raises(QueryRefused, match="strictly limited"):
        guard(sql, grants)
    grants["market.enterprises"] = replace(market, columns=listed, controls=approved)
    guard(sql, grants)


def test_important_data_joins_within_its_domain_only() -> None:
    grants = access()
    grants["hrss.social_insurance"] = replace(
        grants["hrss.social_insurance"], controls=DatasetControls()
    )
    grants["market.enterprises"] = replace(grants["market.enterprises"], controls=DatasetControls())
    sql = (
        "SELECT m.industry, sum(h.employees) FROM market.enterprises m "
        "JOIN hrss.social_insurance h ON m.credit_code = h.credit_code GROUP BY 1"
    )
    guard(sql, grants)  # neither is important: the join is the guard's as before
    important = DatasetControls(important=frozenset({"employees"}))
    grants["hrss.social_insurance"] = replace(grants["hrss.social_insurance"], controls=important)
    with pytest.raises(QueryRefused) as info:
        guard(sql, grants)
    assert info.value.rule == "important.cross_domain"
    assert "hrss.social_insurance" in info.value.message


ANSWERED = (
    Path(__file__).parent / "guard_cases" / "answer.jsonl",
    Path(__file__).parents[2] / "utility" / "queries.jsonl",  # what analysts really ask
)
READ_CLAIMS = sorted(
    {
        json.loads(line)["sql"]
        for path in ANSWERED
        for line in path.read_text("utf-8").splitlines()
        if "health.claims" in line
    }
)


@pytest.mark.parametrize("sql", READ_CLAIMS)
def test_an_answered_query_is_refused_exactly_when_it_reads_the_item(sql: str) -> None:
    """Every query the guard answers, with health.claims.claim_amount prohibited: refused
    (negative.prohibited) if it reads the column, by name or through ``*``; else as before."""
    groupable = frozenset({"age", "gender", "diagnosis_code", "board_time"})
    prohibited = DatasetControls(prohibited=frozenset({"claim_amount"}))
    grants = {d: DatasetAccess(demo_spec(d), Level.L3, None, groupable) for d in DEMO_DATASETS}
    # The guard alone, or the service's whole preparation for totals (released apart).
    try:
        guard(sql, grants)
        check = guard
    except QueryRefused:
        params = DisclosureParams(k=10, epsilon=1.0)
        prepare(sql, grants, params, max_sql_length=MAX_SQL_LENGTH)
        check = partial(prepare, params=params, max_sql_length=MAX_SQL_LENGTH)

    def prepared(grants: dict[str, DatasetAccess]) -> None:
        check(sql, grants)

    grants["health.claims"] = replace(grants["health.claims"], controls=prohibited)
    text = sql.lower()
    stars = parse_query(sql, max_length=MAX_SQL_LENGTH).expression.find_all(exp.Star)
    star = any(not isinstance(s.parent, exp.Count) for s in stars)
    patterns = re.findall(r"columns\('([^']*)'\)", text)  # COLUMNS('regex') picks by name
    reads = (
        "claim_amount" in text
        or (star and "health.claims" in text)
        or any(re.search(p, "claim_amount") for p in patterns)
    )
    if reads:
        with pytest.raises(QueryRefused) as info:
            prepared(grants)
        assert info.value.rule == "negative.prohibited"
    else:
        prepared(grants)
