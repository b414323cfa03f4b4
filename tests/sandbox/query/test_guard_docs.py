"""docs/guard.md: every allowed function and every rule documented, and the rule order and
the role-by-clause table exactly as the code generates them (and as the guard decides)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlglot import exp

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import Level, Role
from sandbox.core.errors import QueryRefused
from sandbox.enclave.demo_data import DEMO_DATASETS, demo_spec
from sandbox.query.guard import RULES, SCOPE_RULES, check_query
from sandbox.query.guard_doc import begin, end, sections, splice
from sandbox.query.parse import AGGREGATES, ALLOWED_NODES, RECORD_VALUE_AGGREGATES, parse_query
from sandbox.query.uses import USES, Context, Needs

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "guard.md").read_text().lower()


def test_every_allowed_function_is_documented() -> None:
    # Record-value aggregates are on the allowlist only to be refused with a precise rule.
    documented = (ALLOWED_NODES - set(RECORD_VALUE_AGGREGATES)) | set(AGGREGATES)
    for cls in sorted(documented, key=lambda c: c.__name__):
        if not issubclass(cls, exp.Func) or cls in (exp.DataType, exp.DataTypeParam):
            continue
        names = [n.lower() for n in cls.sql_names()]
        if cls is exp.TimestampTrunc:
            names = ["date_trunc"]
        if cls is exp.TimeToStr:
            names = ["strftime"]
        assert any(name in DOC for name in names), cls.__name__


def test_every_guard_rule_is_documented() -> None:
    rules = set()
    for path in (
        "sandbox/query/parse.py",
        "sandbox/query/guard.py",
        "sandbox/query/column_rules.py",
        "sandbox/query/scope_rules.py",
        "sandbox/query/join_rules.py",
        "sandbox/query/uses.py",
        "sandbox/query/nodes.py",
        "sandbox/query/closure.py",
        "sandbox/query/lineage.py",
    ):
        rules |= set(re.findall(r'"(guard\.[a-z_]+|grant\.[a-z_]+)"', (ROOT / path).read_text()))
    for rule in sorted(rules):
        assert f"`{rule}`" in DOC, rule


# -- the generated sections: the rules in order and the role-by-clause table ----------------

RAW_DOC = (ROOT / "docs" / "guard.md").read_text("utf-8")


@pytest.mark.parametrize("name", sorted(sections()))
def test_docs_hold_exactly_the_generated_section(name: str) -> None:
    """docs/guard.md's section is `python -m sandbox.query.guard_doc`, nothing added or lost."""
    assert RAW_DOC.count(begin(name)) == 1 and RAW_DOC.count(end(name)) == 1, name
    held = RAW_DOC.split(begin(name) + "\n", 1)[1].split(end(name), 1)[0]
    assert held == sections()[name]


def test_the_generator_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox.query.guard_doc"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert proc.stderr == ""
    for name, body in sections().items():
        assert f"{begin(name)}\n{body}{end(name)}" in proc.stdout
    assert "`closed`" in proc.stdout and "| `count(x)` | ✗ `guard.identifier` |" in proc.stdout
    assert splice(RAW_DOC) == RAW_DOC  # --write would change nothing


def test_the_rules_listed_are_the_rules_run() -> None:
    listed = re.findall(r"^\s*\d+\. `(\w+)`", sections()["rules"], re.M)
    assert listed == [
        name
        for rule in RULES
        for name in [rule.__name__]
        + ([step.__name__ for step in SCOPE_RULES] if rule.__name__ == "scopes" else [])
    ]
    assert all((rule.__doc__ or "").strip() for rule in (*RULES, *SCOPE_RULES))


def test_the_table_is_total() -> None:
    assert set(USES) == {(role, context) for role in Role for context in Context}
    for (role, _), use in USES.items():
        assert (use.needs is Needs.NOTHING) == (use.rule == ""), role
        if role is Role.IDENTIFIER:
            assert use.needs in (Needs.BARE, Needs.NEVER)


# -- the table is the behaviour: one query per (role, clause), with and without grouping ----

#: A health.claims column of each role (none with a declared generalisation, which its
#: own rule judges in every clause).
COLUMNS = {
    Role.IDENTIFIER: "name",
    Role.QUASI: "gender",
    Role.SENSITIVE: "diagnosis_code",
    Role.DIMENSION: "district",
    Role.MEASURE: "claim_amount",
}
#: A query placing ``{c}`` in the context, and the rule it gets when the role allows it.
QUERIES: dict[Context, tuple[str, str | None]] = {
    Context.OUTPUT: (
        "SELECT {c} AS v, count(*) FROM health.claims GROUP BY hospital_id",
        "guard.not_aggregated",
    ),
    Context.KEY: ("SELECT count(*) FROM health.claims GROUP BY {c}", None),
    Context.PREDICATE: ("SELECT count(*) FROM health.claims WHERE {c} IS NOT NULL", None),
    Context.PASSTHROUGH: (
        "SELECT count(*) FROM (SELECT {c} AS v, district FROM health.claims) t",
        None,
    ),
    Context.INNER_EXPRESSION: (
        "SELECT count(*) FROM (SELECT coalesce({c}, {c}) AS v, district FROM health.claims) t",
        None,
    ),
    Context.COUNT_ARGUMENT: ("SELECT count({c}) FROM health.claims", None),
    Context.VALUE_AGGREGATE: ("SELECT sum({c}) FROM health.claims", None),
    Context.RECORD_AGGREGATE: ("SELECT max({c}) FROM health.claims", None),
}
GRANTS = {"groupable": frozenset(COLUMNS.values()), "not groupable": frozenset()}


def _outcome(sql: str, groupable: frozenset[str]) -> str | None:
    grants = {d: DatasetAccess(demo_spec(d), Level.L3, None, groupable) for d in DEMO_DATASETS}
    try:
        check_query(parse_query(sql, max_length=100_000), grants)
    except QueryRefused as refused:
        return refused.rule
    return None


@pytest.mark.parametrize("grant", sorted(GRANTS))
@pytest.mark.parametrize("context", sorted(QUERIES))
@pytest.mark.parametrize("role", sorted(COLUMNS))
def test_the_guard_decides_as_the_table_says(role: Role, context: Context, grant: str) -> None:
    groupable = GRANTS[grant]
    column = COLUMNS[role]
    spec = demo_spec("health.claims").column(column)
    cell = USES[(role, context)]
    met = {
        Needs.NOTHING: True,
        Needs.BARE: True,  # every query above uses the bare column where the table asks
        Needs.GROUPABLE: column in groupable,
        Needs.MEASURE_USE: spec.bounds is not None,
        Needs.NEVER: False,
    }[cell.needs]
    template, allowed = QUERIES[context]
    assert _outcome(template.format(c=column), groupable) == (allowed if met else cell.rule)
