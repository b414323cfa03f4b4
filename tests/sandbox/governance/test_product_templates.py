"""Product templates (pure): typed parameters, binding as literals, and recognising a binding.

The property that matters: no parameter value can change the query's shape.  Whatever
text or number is bound, the bound SQL parses back to the template's tree with only
literals in the placeholders' places, and :func:`match_binding` recovers exactly the
values bound.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import sqlglot
from hypothesis import given
from hypothesis import strategies as st
from sqlglot import exp

from sandbox.core.errors import InvalidInput, QueryRefused
from sandbox.governance.product_templates import (
    ParamSpec,
    Template,
    bind,
    from_text,
    literal_for,
    match_binding,
    parse_params,
    parse_template,
    samples,
)

SQL = (
    "SELECT district, count(*) AS n FROM health.claims "
    "WHERE gender = :g AND age >= :a AND claim_amount > :x AND claim_date >= :d "
    "AND hospital_id IN (:h, :h) GROUP BY district"
)
DECLARED = {
    "g": {"type": "string", "values": ["F", "M"]},
    "a": {"type": "int", "min": -100, "max": 100},
    "x": {"type": "float", "min": -1e6, "max": 1e6},
    "d": {"type": "date", "min": "2000-01-01", "max": "2030-12-31"},
    "h": {"type": "enum", "values": ["H01", 7, 2.5]},
}


def _template() -> Template:
    return parse_template(SQL, parse_params(DECLARED))


def _shape(sql: str) -> list[str]:
    """The tree's node kinds in order, every literal (and date cast) as one LITERAL."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    out: list[str] = []

    def walk(node: exp.Expression) -> None:
        if isinstance(node, exp.Literal | exp.Placeholder) or (
            isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal)
        ):
            out.append("LITERAL")
            return
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
            out.append("LITERAL")
            return
        out.append(type(node).__name__)
        for child in node.iter_expressions():
            walk(child)

    walk(tree)
    return out


# Any text at all, any finite number, any date: bound directly (below the domain checks).
TEXT = st.text(max_size=40)
NUMBER = st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False))
DAY = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))


@given(text=TEXT, number=NUMBER, day=DAY)
def test_no_value_changes_the_shape(text: str, number: float, day: date) -> None:
    template = _template()
    specs = {p.name: p for p in template.params}
    replaced = template.expression.copy().transform(
        lambda node: (
            literal_for(
                specs[node.name],
                {"g": text, "a": number, "x": number, "d": day, "h": text}[node.name],
            )
            if isinstance(node, exp.Placeholder)
            else node
        )
    )
    bound = replaced.sql(dialect="duckdb")
    assert _shape(bound) == _shape(SQL)
    # and each literal holds the value bound, whatever its characters
    strings = [
        n.this for n in sqlglot.parse_one(bound, read="duckdb").find_all(exp.Literal) if n.is_string
    ]
    assert strings.count(text) >= 3


@given(
    g=st.sampled_from(["F", "M"]),
    a=st.integers(-100, 100),
    x=st.floats(-1e6, 1e6, allow_nan=False),
    d=st.dates(date(2000, 1, 1), date(2030, 12, 31)),
    h=st.sampled_from(["H01", 7, 2.5]),
)
def test_a_binding_is_recognised_with_its_values(g: str, a: int, x: float, d: date, h: Any) -> None:
    template = _template()
    values = {"g": g, "a": a, "x": x, "d": d.isoformat(), "h": h}
    sql = bind(template, values)
    assert match_binding(template, sql) == {**values, "d": d}


@pytest.mark.parametrize(
    "sql",
    [
        SQL.replace(":g", "'F'")
        .replace(":a", "1 OR 1=1")
        .replace(":x", "0")
        .replace(":d", "CAST('2020-01-01' AS DATE)")
        .replace(":h", "'H01'"),
        SQL.replace(":g", "'X'")
        .replace(":a", "1")
        .replace(":x", "0")
        .replace(":d", "CAST('2020-01-01' AS DATE)")
        .replace(":h", "'H01'"),
        SQL.replace(":g", "gender")
        .replace(":a", "1")
        .replace(":x", "0")
        .replace(":d", "CAST('2020-01-01' AS DATE)")
        .replace(":h", "'H01'"),
        # the same placeholder bound to two different values
        SQL.replace(":g", "'F'")
        .replace(":a", "1")
        .replace(":x", "0")
        .replace(":d", "CAST('2020-01-01' AS DATE)")
        .replace("(:h, :h)", "('H01', 7)"),
        "SELECT count(*) FROM health.claims",
        "SELECT 1; SELECT 2",
    ],
)
def test_anything_but_a_binding_is_refused(sql: str) -> None:
    with pytest.raises(QueryRefused) as refused:
        match_binding(_template(), sql)
    assert refused.value.rule == "product.template"


@pytest.mark.parametrize(
    ("params", "rule"),
    [
        ({"a": {"type": "int", "min": 0}}, "product.params"),
        ({"a": {"type": "int", "min": 5, "max": 1}}, "product.params"),
        ({"a": {"type": "int", "min": 0.5, "max": 1}}, "product.params"),
        ({"a": {"type": "text"}}, "product.params"),
        ({"a": {"type": "enum", "values": []}}, "product.params"),
        ({"a": {"type": "enum", "values": [True]}}, "product.params"),
        ({"a": {"type": "string", "values": [1]}}, "product.params"),
        ({"a": {"type": "string", "domain": "x.y.z"}}, "product.param_domain"),
        ({"a": {"type": "date", "min": "2020-13-01", "max": "2021-01-01"}}, "product.params"),
        ({"A": {"type": "int", "min": 0, "max": 1}}, "product.params"),
        ({"a": {"type": "int", "min": 0, "max": 1, "step": 1}}, "product.params"),
    ],
)
def test_declarations_are_checked(params: dict[str, Any], rule: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_params(params)
    assert refused.value.rule == rule


def test_placeholders_and_declarations_match() -> None:
    one = parse_params({"a": {"type": "int", "min": 0, "max": 9}})
    for sql in ("SELECT :b FROM t", "SELECT 1 FROM t", "SELECT ? FROM t WHERE x = :a"):
        with pytest.raises(InvalidInput) as refused:
            parse_template(sql, one)
        assert refused.value.rule == "product.template"


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("a", "1", "product.param_type"),
        ("a", True, "product.param_type"),
        ("a", 101, "product.param_range"),
        ("x", float("inf"), "product.param_type"),
        ("d", "2020-1-1", "product.param_type"),
        ("d", "1999-12-31", "product.param_range"),
        ("g", "f", "product.param_value"),
        ("h", "7", "product.param_value"),  # 7 is listed as a number, not as text
    ],
)
def test_values_are_typed_listed_and_in_range(name: str, value: Any, rule: str) -> None:
    spec = _template().param(name)
    with pytest.raises(InvalidInput) as refused:
        spec.check(value)
    assert refused.value.rule == rule
    assert repr(value) not in refused.value.message  # a refusal never echoes the value


def test_samples_and_command_line_values() -> None:
    specs = {p.name: p for p in parse_params(DECLARED)}
    assert samples(specs["a"]) == [-100, 0, 100]
    assert samples(specs["d"]) == [date(2000, 1, 1), date(2015, 7, 2), date(2030, 12, 31)]
    assert samples(specs["h"]) == ["H01", 7, 2.5]
    assert from_text(specs["h"], "7") == 7 and from_text(specs["a"], "-3") == -3
    assert isinstance(ParamSpec("z", "enum", values=("a",)).check("a"), str)
