"""Refusals name the function or operator as the analyst wrote it, in SQL terms."""

from __future__ import annotations

import pytest

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Level
from sandbox.core.errors import QueryRefused
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec
from sandbox.query.guard import check_query
from sandbox.query.parse import parse_query
from sandbox.query.rewrite import build_plan

GROUPABLE = frozenset({"age", "gender", "diagnosis_code"})


def refusal(sql: str) -> QueryRefused:
    access = {d: DatasetAccess(demo_spec(d), Level.L3, None, GROUPABLE) for d in DEMO_DATASETS}
    with pytest.raises(QueryRefused) as info:  # the guard, then the plan's own refusals
        build_plan(check_query(parse_query(sql, max_length=20_000), access), access)
    return info.value


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("age >> 1", "right shift `>>`"),  # `//` is banding now (sandbox/query/bands.py)
        ("age & 3", "bitwise AND `&`"),
        ("age << 1", "left shift `<<`"),
        ("xor(age, 3)", "function xor()"),
        ("[age, 1]", "list literals `[...]`"),
        ("district ~ 'D0.'", "regular-expression matching (`~`, `regexp_matches`)"),
        ("regexp_matches(district, 'D0.')", "function regexp_matches()"),
        ("district SIMILAR TO 'D0.'", "the operator `SIMILAR TO`"),
    ],
)
def test_syntax_off_the_allowlist_is_named_as_written(expression: str, named: str) -> None:
    exc = refusal(f"SELECT {expression} AS x, count(*) FROM health.claims GROUP BY 1")
    assert exc.rule in ("guard.syntax_element", "guard.function")
    assert exc.message == f"{named} is not on the allowlist"
    assert "syntax" not in exc.message.lower() or "SIMILAR" in expression


@pytest.mark.parametrize(
    ("written", "args"),
    [
        ("quantile_cont", "claim_amount, 0.5"),
        ("median", "claim_amount"),
        ("list", "district"),
        ("string_agg", "district, ','"),
        ("max_by", "district, age"),
    ],
)
def test_an_unsupported_aggregate_is_named_as_written(written: str, args: str) -> None:
    exc = refusal(f"SELECT gender, {written}({args}) FROM health.claims GROUP BY 1")
    # Quantiles of a measure are answered under a budget only: refused here saying so.
    rules = ("guard.aggregate_unsupported", "guard.aggregate_record_value")
    assert exc.rule in (*rules, "guard.quantile_needs_budget")
    assert f"{written}()" in exc.message, exc.message
    assert "percentile_cont" not in exc.message and "array_agg" not in exc.message


@pytest.mark.parametrize(
    ("clause", "named"),
    [
        # (ascending, it is read as quantile_cont: sandbox/query/dialects.py)
        ("percentile_cont(0.5) WITHIN GROUP (ORDER BY claim_amount DESC)", "WITHIN GROUP"),
        ("count(*) FROM health.claims GROUP BY 1 QUALIFY count(*) > 1 --", "QUALIFY"),
        ("count(*) FROM health.claims USING SAMPLE 10% GROUP BY 1 --", "TABLESAMPLE"),
    ],
)
def test_clauses_off_the_allowlist_are_named_in_sql(clause: str, named: str) -> None:
    exc = refusal(f"SELECT gender, {clause} FROM health.claims GROUP BY 1")
    assert exc.message.startswith(named) and exc.message.endswith(" is not on the allowlist")
