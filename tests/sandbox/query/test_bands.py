"""Declared generalisations hold in every clause (sandbox/query/bands.py, band_math.py).

Cases as data (``guard_cases/bands.jsonl``: answered and refused, on the demo
classifications), brute force over a range of ages for random comparisons (an
accepted predicate selects whole bands; for an INTEGER age, every predicate that
does is accepted), and DuckDB itself checking that an accepted predicate answers
the same on the raw column and on the band it is evaluated on.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Level, parse_classification
from sandbox.core.errors import QueryRefused
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec
from sandbox.query import band_math
from sandbox.query.guard import check_query
from sandbox.query.parse import parse_query
from sandbox.query.rewrite import ContributionBounds, build_plan
from tests.sandbox.query.test_guard import GROUPABLE, access, guard

CASES = Path(__file__).parent / "guard_cases" / "bands.jsonl"
AGES = range(-60, 260)  # brute-force domain: well beyond every constant drawn below

# A dataset of our own for the forms the demo does not declare: a fractional band, a
# DATE truncated to the month, a prefix.
VISITS = parse_classification(
    """
[dataset]
id = "health.visits"
entity_key = "person_id"

[columns.person_id]
level = "L3"
role = "identifier"
type = "VARCHAR"

[columns.weight]
level = "L2"
role = "quasi"
type = "DOUBLE"
generalize = { band = 5 }

[columns.visit_day]
level = "L2"
role = "quasi"
type = "DATE"
generalize = { truncate = "month" }

[columns.postcode]
level = "L2"
role = "quasi"
type = "VARCHAR"
generalize = { prefix = 3 }

[columns.score]
level = "L2"
role = "quasi"
type = "INTEGER"
generalize = { band = 10 }
"""
)


def _visits_guard(where: str) -> exp.Expression:
    groupable = frozenset({"weight", "visit_day", "postcode", "score"})
    access = {"health.visits": DatasetAccess(VISITS, Level.L3, None, groupable)}
    sql = f"SELECT count(*) FROM health.visits WHERE {where}"
    checked = check_query(parse_query(sql, max_length=10_000), access)
    return checked.root.args["where"].this


def _load() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text("utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("case", _load(), ids=lambda c: c["sql"][:70])
def test_band_case(case: dict) -> None:
    if case["expect"] == "answer":
        plan = guard(case["sql"])
        assert "__entities" in plan.stats_sql
        return
    with pytest.raises(QueryRefused) as info:
        guard(case["sql"])
    assert info.value.rule == case["rule"], info.value.message
    if case["rule"] == "guard.generalisation":
        assert case["subject"] in info.value.message
        assert " is released " in info.value.message  # names the declared form
        assert "use " in info.value.message  # and the accepted one


def test_the_refusal_names_the_accepted_form_and_no_constant() -> None:
    with pytest.raises(QueryRefused) as info:
        guard("SELECT count(*) FILTER (WHERE age = 37) AS n FROM health.claims")
    message = info.value.message
    assert message.startswith("health.claims.age is released in bands of 10 (in SELECT FILTER)")
    assert "use floor(age / 10) * 10, or compare with multiples of 10" in message
    assert "37" not in message


# -- brute force: random comparisons on an INTEGER age in bands of 10 ----------------------

OPS = {
    "=": lambda a, c: a == c,
    "<>": lambda a, c: a != c,
    "<": lambda a, c: a < c,
    "<=": lambda a, c: a <= c,
    ">": lambda a, c: a > c,
    ">=": lambda a, c: a >= c,
}


def _whole_bands(selected: set[int], width: int = 10) -> bool:
    return all((a in selected) == (a - a % width in selected) for a in AGES)


def _accepted(where: str) -> bool:
    try:
        guard(f"SELECT count(*) AS n FROM health.claims WHERE {where}")
    except QueryRefused as exc:
        assert exc.rule == "guard.generalisation", exc.message
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(op=st.sampled_from(sorted(OPS)), c=st.integers(-40, 160), flip=st.booleans())
def test_an_accepted_comparison_selects_whole_bands(op: str, c: int, flip: bool) -> None:
    selected = {a for a in AGES if OPS[op](a, c)}
    where = f"{c} {band_math.FLIPPED[op]} age" if flip else f"age {op} {c}"
    accepted = _accepted(where)
    # Sound (accepted => whole bands) and, on an integer column, not over-refusing.
    assert accepted == _whole_bands(selected), (where, accepted)


@settings(max_examples=100, deadline=None)
@given(low=st.integers(-30, 150), high=st.integers(-30, 150))
def test_between_is_accepted_exactly_when_it_selects_whole_bands(low: int, high: int) -> None:
    selected = {a for a in AGES if low <= a <= high}
    assert _accepted(f"age BETWEEN {low} AND {high}") == _whole_bands(selected)


@settings(max_examples=100, deadline=None)
@given(values=st.sets(st.integers(0, 59), min_size=1, max_size=25), full=st.integers(0, 5))
def test_in_is_accepted_exactly_when_it_lists_whole_bands(values: set[int], full: int) -> None:
    values |= set(range(10 * full, 10 * full + 10))  # often one whole band at least
    listed = ", ".join(str(v) for v in sorted(values))
    assert _accepted(f"age IN ({listed})") == _whole_bands(values)


@settings(max_examples=60, deadline=None)
@given(
    op=st.sampled_from(sorted(OPS)),
    c=st.fractions(min_value=-20, max_value=120, max_denominator=4),
    width=st.sampled_from([Fraction(10), Fraction(5, 2), Fraction(1), Fraction(7)]),
    integral=st.booleans(),
)
def test_band_math_never_accepts_a_cut_band(
    op: str, c: Fraction, width: Fraction, integral: bool
) -> None:
    """Any width, integer or fractional column: an accepted cut is a band boundary."""
    step = Fraction(1) if integral else Fraction(1, 8)
    grid = [Fraction(-40) + i * step for i in range(int(Fraction(200) / step))]
    if not band_math.band_selects_whole(op, c, width, integral=integral):
        return
    verdicts: dict[int, set[bool]] = {}
    for x in grid:
        verdicts.setdefault(math.floor(x / width), set()).add(OPS[op](x, c))
    cut = [band for band, seen in verdicts.items() if len(seen) > 1]
    assert not cut, (op, c, width, cut)


# -- evaluated on the band: the same answer as on the raw column ---------------------------


@settings(max_examples=60, deadline=None)
@given(
    op=st.sampled_from(sorted(OPS)),
    c=st.integers(-20, 130).map(lambda v: v - v % 10),
    bump=st.sampled_from([0, -1]),
)
def test_an_accepted_predicate_answers_the_same_on_the_band(op: str, c: int, bump: int) -> None:
    where = f"score {op} {c + bump}"
    try:
        checked = _visits_guard(where)
    except QueryRefused:
        return
    rewritten = checked.sql(dialect="duckdb").replace('"visits"."score"', "score")
    assert "FLOOR" in rewritten.upper() or "//" in rewritten  # it runs on the band
    con = duckdb.connect()
    raw = con.sql(f"SELECT count(*) FROM range(-60, 260) t(score) WHERE {where}").fetchall()
    banded = con.sql(f"SELECT count(*) FROM range(-60, 260) t(score) WHERE {rewritten}").fetchall()
    assert raw == banded, (where, rewritten)


def test_integer_division_runs_on_the_band_even_for_negative_values() -> None:
    """DuckDB's ``//`` truncates: -5 // 10 is 0 with 5 // 10. On the band it floors."""
    groupable = frozenset({"score"})
    access = {"health.visits": DatasetAccess(VISITS, Level.L3, None, groupable)}
    sql = "SELECT score // 10 AS d, count(*) FROM health.visits GROUP BY 1"
    checked = check_query(parse_query(sql, max_length=10_000), access)
    key = checked.keys[0].sql(dialect="duckdb").replace('"visits"."score"', "score")
    rows = duckdb.sql(f"SELECT score, {key} FROM range(-20, 20) t(score)").fetchall()
    for score, band in rows:
        assert band == math.floor(score / 10), (score, band)


# -- other kinds: fractional bands, months of a DATE, prefixes ----------------------------

ACCEPTED = [
    "weight >= 55 AND weight < 60",
    "weight IS NULL",
    "floor(weight / 10) = 5",
    "visit_day >= DATE '2024-03-01' AND visit_day < DATE '2024-04-01'",
    "visit_day > DATE '2024-02-29' AND visit_day <= DATE '2024-03-31'",
    "visit_day BETWEEN DATE '2024-01-01' AND DATE '2024-03-31'",
    "year(visit_day) = 2024",
    "date_trunc('quarter', visit_day) = DATE '2024-01-01'",
    "extract(month FROM visit_day) = 3",
    "postcode LIKE '310%'",
    "postcode LIKE '31%'",
    "left(postcode, 2) = '31'",
    "substring(postcode, 1, 3) = '310'",
    "postcode = '31'",
    "postcode IN ('3', '31')",
    "score BETWEEN 30 AND 39",
]
REFUSED = [
    "weight > 55",
    "weight <= 59",
    "weight BETWEEN 55 AND 60",
    "weight = 55",
    "weight // 5 = 11",
    "visit_day = DATE '2024-03-15'",
    "visit_day >= DATE '2024-03-15'",
    "visit_day >= TIMESTAMP '2024-03-01 08:00'",
    "day(visit_day) = 15",
    "date_trunc('week', visit_day) = DATE '2024-03-04'",
    "CAST(visit_day AS DATE) = DATE '2024-03-15'",
    "postcode LIKE '3101%'",
    "postcode LIKE '3_0%'",
    "postcode LIKE '310'",
    "postcode = '310'",
    "left(postcode, 4) = '3101'",
    "substring(postcode, 2, 2) = '10'",
    "length(postcode) = 6",
    "score BETWEEN 30 AND 38",
    "score % 10 = 7",
]


@pytest.mark.parametrize("where", ACCEPTED)
def test_forms_that_keep_to_the_declared_generalisation(where: str) -> None:
    _visits_guard(where)


@pytest.mark.parametrize("where", REFUSED)
def test_forms_finer_than_declared_are_refused(where: str) -> None:
    with pytest.raises(QueryRefused) as info:
        _visits_guard(where)
    assert info.value.rule == "guard.generalisation"
    assert info.value.message.startswith("health.visits.")
    assert "use " in info.value.message


def test_a_time_constant_is_aligned_when_it_starts_its_period() -> None:
    monday = datetime(2024, 1, 1)
    assert band_math.instant_aligned(">=", monday, "week", dates=False)
    assert not band_math.instant_aligned(">=", datetime(2024, 1, 2), "week", dates=False)
    assert not band_math.instant_aligned(">", monday, "hour", dates=False)
    assert band_math.instant_aligned(">", datetime(2024, 1, 31), "month", dates=True)
    assert band_math.coarser_unit("week", "day") and not band_math.coarser_unit("week", "month")
    assert not band_math.coarser_unit("year", "week")


def test_demo_access_is_the_guard_tests_access() -> None:
    """The data cases run with the same grants as tests/sandbox/query/test_guard.py."""
    assert {"age", "board_time"} <= GROUPABLE and "health.claims" in DEMO_DATASETS
    assert demo_spec("health.claims").column("age").type == "INTEGER"


def test_a_value_aggregate_needs_a_declared_measure_use() -> None:
    """``score`` is banded without a measure use: avg() is refused; ``age`` declares one."""
    groupable = frozenset({"score"})
    access = {"health.visits": DatasetAccess(VISITS, Level.L3, None, groupable)}
    sql = "SELECT avg(score) AS mean FROM health.visits"
    with pytest.raises(QueryRefused) as info:
        check_query(parse_query(sql, max_length=10_000), access)
    assert info.value.rule == "guard.quasi"
    assert "declares no measure use" in info.value.message
    plan = guard("SELECT gender, avg(age) AS mean FROM health.claims GROUP BY 1")
    assert "GREATEST(0.0, LEAST(110.0, " in plan.stats_sql.upper()  # the declared bounds


# -- brute force for the other kinds: DATE months, timestamp hours, prefixes --------------

DAYS = [date(2023, 11, 1) + timedelta(days=i) for i in range(200)]


@settings(max_examples=120, deadline=None)
@given(
    op=st.sampled_from(sorted(OPS)),
    day=st.one_of(st.sampled_from([d for d in DAYS[10:190] if d.day == 1]), st.sampled_from(DAYS)),
    unit=st.sampled_from(["day", "week", "month", "quarter", "year"]),
)
def test_an_accepted_date_comparison_selects_whole_periods(op: str, day: date, unit: str) -> None:
    moment = datetime.combine(day, datetime.min.time())
    if not band_math.instant_aligned(op, moment, unit, dates=True):
        return
    periods: dict[datetime, set[bool]] = {}
    for d in DAYS:
        at = datetime.combine(d, datetime.min.time())
        periods.setdefault(band_math.truncate(at, unit), set()).add(OPS[op](d, day))
    assert all(len(seen) == 1 for seen in periods.values()), (op, day, unit)


@settings(max_examples=120, deadline=None)
@given(
    op=st.sampled_from(sorted(OPS)),
    minutes=st.one_of(st.integers(0, 48).map(lambda h: 60 * h), st.integers(0, 48 * 60)),
    unit=st.sampled_from(["minute", "hour", "day"]),
)
def test_an_accepted_time_comparison_selects_whole_periods(
    op: str, minutes: int, unit: str
) -> None:
    start = datetime(2025, 3, 1)
    c = start + timedelta(minutes=minutes)
    if not band_math.instant_aligned(op, c, unit, dates=False):
        return
    periods: dict[datetime, set[bool]] = {}
    for seconds in range(0, 3 * 86400, 30):  # a 30-second grid: finer than any unit tried
        t = start + timedelta(seconds=seconds)
        periods.setdefault(band_math.truncate(t, unit), set()).add(OPS[op](t, c))
    assert all(len(seen) == 1 for seen in periods.values()), (op, c, unit)


WORDS = ["", "3", "31", "310", "3101", "31012", "32", "320", "4"]


@settings(max_examples=80, deadline=None)
@given(constant=st.sampled_from(WORDS), negate=st.booleans())
def test_an_accepted_prefix_equality_selects_whole_prefix_classes(
    constant: str, negate: bool
) -> None:
    """``postcode`` is declared as its first 3 characters: ``=`` keeps classes whole."""
    op = "<>" if negate else "="
    try:
        _visits_guard(f"postcode {op} '{constant}'")
    except QueryRefused:
        assert len(constant) >= 3  # only constants shorter than n are whole classes
        return
    classes: dict[str, set[bool]] = {}
    for word in WORDS:
        classes.setdefault(word[:3], set()).add((word == constant) != negate)
    assert all(len(seen) == 1 for seen in classes.values()), constant


def test_a_measure_use_takes_the_dp_quantiles_under_a_budget_only() -> None:
    """median(age) is a measure's quantile: refused without a budget for that reason only."""
    sql = "SELECT gender, median(age) AS m FROM health.claims GROUP BY 1"
    with pytest.raises(QueryRefused) as info:
        guard(sql)
    assert info.value.rule == "guard.quantile_needs_budget"
    grants = access(GROUPABLE)
    checked = check_query(parse_query(sql, max_length=10_000), grants)
    plan = build_plan(checked, grants, bounds=ContributionBounds(5, 2))
    assert "__entities" in plan.stats_sql
    with pytest.raises(QueryRefused) as info:
        guard("SELECT gender, median(age // 10) AS m FROM health.claims GROUP BY 1")
    assert info.value.rule == "guard.aggregate_argument"  # the bare column only
