"""A bucket computed in a CTE or derived table gets the verdict it gets written in place.

A measure is filtered on in a key only as the bare column compared with constants (or
another bare column): arithmetic inside a comparison is one truth value, but a key summing
``CAST(floor(x / 2^k) % 2 = 1 AS INTEGER) * 2^k`` over k spells x out bit by bit (an
outside attack pass found it; ``guard_cases/refuse.jsonl`` holds it).

Lineage records which dataset columns reach a CTE column only through predicates
(``ColumnInfo.filtered``): ``CASE WHEN claim_amount < 1000 THEN 'low' … END`` carries
truth values about the measure, never its value, so it may be a group key as the same
CASE may be in ``GROUP BY`` (``docs/guard.md``, ``guard.measure``).  The property: for
any CASE or comparison over these columns, the direct form and the CTE form, and the
derived-table form, are answered or refused alike, by the same rule.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from sandbox.core.errors import QueryRefused
from sandbox.query.lineage import in_predicate
from sandbox.query.parse import parse_query
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, guard

# A measure, a groupable dimension, a dimension the test grant does not group, a quasi.
COLUMNS = ("claim_amount", "district", "hospital_id", "gender")
OPERATORS = ("<", ">=", "=", "<>")

operands = st.one_of(st.sampled_from(COLUMNS), st.sampled_from(("1000", "'A'", "NULL")))
#: The column itself, or an expression of it: only a bare column is filtered on in a key.
FORMS = ("{}", "({})", "{} + 1", "floor({} / 2) % 2", "abs({})", "CAST({} AS VARCHAR)")
columns = st.builds(
    lambda form, c: form.format(c), st.sampled_from(FORMS), st.sampled_from(COLUMNS)
)
comparisons = st.one_of(
    st.builds(lambda a, op, b: f"{a} {op} {b}", columns, st.sampled_from(OPERATORS), operands),
    st.builds(lambda a: f"{a} LIKE '1%'", columns),
    st.builds(lambda a: f"{a} BETWEEN 1 AND 9", columns),
)
values = st.one_of(st.sampled_from(("'low'", "'high'", "1", "NULL")), st.sampled_from(COLUMNS))
cases = st.builds(
    lambda whens, default: (
        "CASE "
        + " ".join(f"WHEN {c} THEN {v}" for c, v in whens)
        + ("" if default is None else f" ELSE {default}")
        + " END"
    ),
    st.lists(st.tuples(comparisons, values), min_size=1, max_size=3),
    st.one_of(st.none(), values),
)
buckets = st.one_of(comparisons, cases, st.builds(lambda c: f"NOT ({c})", comparisons))


def _verdict(sql: str) -> str:
    try:
        guard(sql)
    except QueryRefused as exc:
        return exc.rule or "refused"
    return "answered"


@settings(max_examples=150, deadline=None)
@given(buckets)
def test_a_bucket_in_a_cte_is_judged_as_in_place(bucket: str) -> None:
    direct = _verdict(f"SELECT {bucket} AS k, count(*) AS n FROM health.claims GROUP BY 1")
    cte = _verdict(
        f"WITH t AS (SELECT {bucket} AS k FROM health.claims) "
        "SELECT k, count(*) AS n FROM t GROUP BY 1"
    )
    derived = _verdict(
        f"SELECT k, count(*) AS n FROM (SELECT {bucket} AS k FROM health.claims) GROUP BY 1"
    )
    assert direct == cte == derived, (bucket, direct, cte, derived)


@pytest.mark.parametrize(
    ("expression", "positions"),
    [
        ("CASE WHEN a < 1 THEN b ELSE c END", {"a": True, "b": False, "c": False}),
        ("CASE a WHEN 1 THEN 'x' END", {"a": False}),
        ("NOT (a = b)", {"a": True, "b": True}),
        ("coalesce(a > 1, b)", {"a": True, "b": False}),
        ("IF(a IS NULL, b, 0)", {"a": True, "b": False}),
        ("(a) > (1) AND b IN (1, 2)", {"a": True, "b": True}),
        ("a > 10 * 100", {"a": True}),
        # One bit each, but a key summing many spells the value out: not filtered on.
        ("floor(a / 2) % 2 = 1", {"a": False}),
        ("a + 0 > b", {"a": False, "b": False}),  # the comparison as a whole is not bare
        ("a LIKE '1%'", {"a": False}),
        ("CASE WHEN a THEN 1 END", {"a": False}),
    ],
)
def test_predicate_positions(expression: str, positions: dict[str, bool]) -> None:
    root = parse_query(f"SELECT {expression} FROM health.claims", max_length=MAX_SQL_LENGTH)
    select = root.expression.expressions[0]
    found = {col.name: in_predicate(col, select) for col in select.find_all(exp.Column)}
    assert found == positions
