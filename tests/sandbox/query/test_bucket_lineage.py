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

from sandbox.core.errors import QueryRefused
from sandbox.query.nodes import comparison_operands
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


SPLIT_FORMS = (*FORMS, "{} / 2", "round({})", "-{}", "{} % 7", "floor({} / 4) % 2")


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(SPLIT_FORMS),
    st.sampled_from(COLUMNS),
    st.sampled_from(OPERATORS),
    st.sampled_from(("1000", "1", "'A'")),
)
def test_computing_an_operand_in_a_cte_never_loosens(
    form: str, column: str, op: str, c: str
) -> None:
    """``f(x) op c`` with ``f(x)`` computed in a CTE and compared outside: never answered
    where the same comparison in place is refused (the outer column is not ``x``'s own
    values; a second attack pass split ``floor(x / 2) % 2`` from ``= 1`` this way)."""
    value = form.format(column)
    direct = _verdict(f"SELECT {value} {op} {c} AS k, count(*) AS n FROM health.claims GROUP BY 1")
    split = _verdict(
        f"WITH t AS (SELECT {value} AS v FROM health.claims) "
        f"SELECT v {op} {c} AS k, count(*) AS n FROM t GROUP BY 1"
    )
    if direct != "answered":
        assert split != "answered", (value, op, c, direct)


@pytest.mark.parametrize(
    ("expression", "columns"),
    [
        ("a < 1", ["a"]),
        ("(a) > (1)", ["a"]),
        ("a > 10 * 100", ["a"]),
        ("a BETWEEN 1 AND 2", ["a"]),
        ("a IN (1, 2)", ["a"]),
        ("a IS NULL", ["a"]),
        ("a = b", None),  # two columns: floor(a / 2) * 2 <> floor(a) is a's parity
        ("floor(a / 2) * 2 <> floor(a)", None),
        ("a BETWEEN b AND 3", None),
        ("a IN (1, b)", None),
        # Order-keeping steps: one cut of a each.
        ("a / 1000 >= 5", ["a"]),
        ("CAST(a AS DOUBLE) > 1", ["a"]),
        ("round(a, 2) > 1", ["a"]),
        ("coalesce(a, 0) + 1 > 1", ["a"]),
        ("-a < 3", ["a"]),
        # Not a cut of a's range: None.
        ("floor(a / 2) % 2 = 1", None),
        ("abs(a) > 1", None),
        ("CAST(a AS VARCHAR) = '1'", None),
        ("CAST(a AS BIT) > '1'::BIT", None),
        ("CAST(a AS INT DEFAULT b ON CONVERSION ERROR) > 5", None),
        ("a + b > 1", None),
        ("1 / a > 1", None),
        ("a LIKE '1%'", None),
        ("coalesce(a, b) > 1", None),
    ],
)
def test_comparison_operands(expression: str, columns: list[str] | None) -> None:
    root = parse_query(f"SELECT {expression} FROM health.claims", max_length=MAX_SQL_LENGTH)
    node = root.expression.expressions[0]
    found = comparison_operands(node)
    assert (None if found is None else [c.name for c in found]) == columns
