# Over 400 lines: the query generators and the properties they feed are read together.
"""Fuzzing the guard and the pipeline with SQL built from the grammar's pieces.

Queries are assembled from the demo classifications (``sandbox/enclave/demo/*.toml``): columns
of every role, allowed and forbidden functions and aggregates, WHERE, GROUP BY (by
expression, position or ALL), HAVING, FILTER, CTEs and derived tables with renames,
joins on declared and undeclared keys, UNION, ORDER BY, LIMIT, CASE, CAST, subquery
predicates.  Most are refused; what matters is *how*:

(a) nothing crashes: the pipeline answers or raises a :class:`SandboxError` with a rule
    (a DuckDB error must come out as one too);
(b) whatever is released passes the identifier leak check, and every released distinct
    entity count, of a group or of a FILTERed cell, is at least k;
(c) an identifier mixed into any expression (but ``count(DISTINCT entity_key)`` and a
    declared join key) is always refused.

The guard is asked first (``explain``, cheap); only accepted queries run, in process,
through :class:`QueryService` as op-bank on a scale-0.01 demo deployment.  Examples per
property scale with ``hypothesis_scale()`` (20 times more under ``--hypothesis-profile=long``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.core.errors import SandboxError
from sandbox.query.service import QueryService
from tests.conftest import build_deployment, hypothesis_scale
from tests.security.conftest import LeakCheck, identifier_values

DEMO = Path(__file__).resolve().parents[2] / "sandbox" / "enclave" / "demo"
SPECS = {
    spec["dataset"]["id"]: spec
    for spec in (tomllib.loads(p.read_text()) for p in sorted(DEMO.glob("*.toml")))
}
GRANTED = ("health.claims", "market.enterprises", "hrss.social_insurance")
K = 10


@dataclass(frozen=True)
class Col:
    ref: str  # how the query names it
    role: str
    base: str  # dataset.column
    entity: bool


def columns_of(dataset: str, qualifier: str) -> list[Col]:
    spec = SPECS[dataset]
    key = spec["dataset"]["entity_key"]
    return [
        Col(f"{qualifier}.{name}", c["role"], f"{dataset}.{name}", name == key)
        for name, c in spec["columns"].items()
    ]


LITERALS = ("'D01'", "'F'", "'J06'", "10", "2020", "0.5", "NULL", "DATE '2024-01-01'", "'a%'")
SCALAR_OK = (
    "upper({})",
    "lower({})",
    "length({})",
    "abs({})",
    "round({}, 1)",
    "floor({} / 10) * 10",
    "coalesce({}, 0)",
    "CAST({} AS VARCHAR)",
    "TRY_CAST({} AS INTEGER)",
    "CASE WHEN {} IS NULL THEN 'none' ELSE 'some' END",
    "date_trunc('month', {})",
    "year({})",
    "{} || 'x'",
    "{} + 1",
    "substring({}, 1, 2)",
    "nullif({}, 0)",
    "greatest({}, 1)",
)
SCALAR_FORBIDDEN = (
    "md5({})",
    "hash({})",
    "regexp_extract({}, '.')",
    "error({})",
    "reverse({})",
    "list_value({})",
    "strftime({}, '%Y')",
    "current_setting('threads')",
    "{} OVER ()",
)
AGG_OK = (
    "sum({})",
    "avg({})",
    "stddev({})",
    "var_pop({})",
    "min({})",
    "max({})",
    "count({})",
)
AGG_FORBIDDEN = (
    "string_agg({}, ',')",
    "list({})",
    "mode({})",
    "median({})",
    "arg_max({0}, {0})",
    "first({})",
    "any_value({})",
    "approx_count_distinct({})",
    "quantile_cont({}, 0.5)",
    "count(DISTINCT {})",
)


GROUPABLE_ROLES = ("dimension", "quasi", "sensitive")


def clean_keys(cols: list[Col]) -> list[Col]:
    """Columns a grant lets op-bank group by (dimensions; health's groupable ones)."""
    return [c for c in cols if c.role in GROUPABLE_ROLES] or cols


@st.composite
def scalar(draw: st.DrawFn, cols: list[Col], clean: bool = False) -> str:
    if clean:
        return draw(st.sampled_from(clean_keys(cols))).ref
    col = draw(st.sampled_from(cols)).ref
    shape = draw(st.integers(0, 9))
    if shape < 4:
        return col
    if shape < 9:
        return draw(st.sampled_from(SCALAR_OK)).format(col)
    return draw(st.sampled_from(SCALAR_FORBIDDEN)).format(col)


@st.composite
def predicate(
    draw: st.DrawFn, cols: list[Col], source: str, depth: int = 0, clean: bool = False
) -> str:
    shape = draw(st.integers(0, 12 if depth < 2 and not clean else 7))
    value = draw(scalar(cols, clean))
    lit = draw(st.sampled_from(LITERALS))
    if shape == 0:
        return f"{value} = {lit}"
    if shape == 1:
        return f"{value} <> {lit}"
    if shape == 2:
        lits = draw(st.lists(st.sampled_from(LITERALS), min_size=1, max_size=3))
        return f"{value} IN ({', '.join(lits)})"
    if shape == 3:
        return f"{value} BETWEEN {lit} AND {draw(st.sampled_from(LITERALS))}"
    if shape == 4:
        return f"{value} IS NOT NULL"
    if shape == 5:
        return f"{value} LIKE {lit}"
    if shape == 6:
        return f"{value} >= {lit}"
    if shape == 7:
        return f"{value} < {lit}"
    if shape == 8:
        return f"NOT ({draw(predicate(cols, source, depth + 1))})"
    if shape == 9:
        a, b = draw(predicate(cols, source, depth + 1)), draw(predicate(cols, source, depth + 1))
        return f"({a} {draw(st.sampled_from(('AND', 'OR')))} {b})"
    if shape == 10:
        return f"{value} IN (SELECT {value.split('.')[-1]} FROM {source})"
    if shape == 11:
        return f"EXISTS (SELECT 1 FROM {source})"
    return f"{value} = (SELECT max({value.split('.')[-1]}) FROM {source})"


@st.composite
def aggregate(
    draw: st.DrawFn, cols: list[Col], source: str, index: int, clean: bool = False
) -> tuple[str, str]:
    """An aggregate expression and its alias (``ent*``: an unfiltered entity count)."""
    measures = [c for c in cols if c.role == "measure"] or cols
    entity = [c for c in cols if c.entity]
    shape = draw(st.integers(0, 5 if clean else 11))
    alias = f"a{index}"
    if shape == 0:
        expr = "count(*)"
    elif shape in (1, 2) and entity:
        expr = f"count(DISTINCT {draw(st.sampled_from(entity)).ref})"
        alias = f"ent{index}"
    elif shape in (3, 4, 5):
        fns = AGG_OK[:4] + AGG_OK[6:] if clean else AGG_OK
        expr = draw(st.sampled_from(fns)).format(draw(st.sampled_from(measures)).ref)
    elif shape in (6, 7):
        expr = draw(st.sampled_from(AGG_OK)).format(draw(scalar(cols)))
    elif shape == 8:
        expr = draw(st.sampled_from(AGG_FORBIDDEN)).format(draw(st.sampled_from(cols)).ref)
    elif shape == 9:
        inner = draw(st.sampled_from(AGG_OK)).format(draw(st.sampled_from(measures)).ref)
        expr = f"round({inner}, 1) + count(*)"
    elif shape == 10:
        expr = f"sum(count({draw(st.sampled_from(cols)).ref}))"
    else:
        expr = "count(*)"
    if draw(st.integers(0, 5)) == 0:
        expr = f"{expr} FILTER (WHERE {draw(predicate(cols, source, 1, clean))})"
        if alias.startswith("ent"):
            alias = f"fent{index}"
    return expr, alias


@st.composite
def source(draw: st.DrawFn) -> tuple[str, str, list[Col], str]:
    """``(with_clause, from_clause, columns, a dataset name for subqueries)``."""
    shape = draw(st.integers(0, 9))
    dataset = draw(st.sampled_from(GRANTED + ("transport.trips",) * (shape == 9)))
    if shape <= 3:
        return "", f"{dataset} AS t", columns_of(dataset, "t"), dataset
    if shape <= 5:
        base = columns_of(dataset, "t")
        kept = draw(st.lists(st.sampled_from(base), min_size=1, max_size=6, unique=True))
        renames, cols = [], []
        for i, col in enumerate(kept):
            name = col.ref.split(".")[1]
            new = name if draw(st.booleans()) else f"r{i}_{name}"
            renames.append(f"{col.ref} AS {new}" if new != name else col.ref)
            cols.append(Col(f"x.{new}", col.role, col.base, col.entity))
        where = f" WHERE {draw(predicate(base, dataset, 1))}" if draw(st.booleans()) else ""
        inner = f"SELECT {', '.join(renames)} FROM {dataset} AS t{where}"
        if shape == 4:
            return f"WITH x AS ({inner}) ", "x", cols, dataset
        return "", f"({inner}) AS x", cols, dataset
    if shape <= 7:
        left = columns_of("market.enterprises", "e")
        right = columns_of("hrss.social_insurance", "s")
        on = draw(
            st.sampled_from(
                (
                    "e.credit_code = s.credit_code",
                    "e.credit_code = s.credit_code",
                    "e.district = s.month",
                    "e.name = s.credit_code",
                    "e.credit_code <> s.credit_code",
                    "e.credit_code = s.credit_code AND s.employees > 3",
                )
            )
        )
        join = draw(st.sampled_from(("JOIN", "LEFT JOIN", "JOIN", "CROSS JOIN")))
        cond = "" if join == "CROSS JOIN" else f" ON {on}"
        return (
            "",
            f"market.enterprises AS e {join} hrss.social_insurance AS s{cond}",
            left + right,
            "market.enterprises",
        )
    if shape == 8:
        left = columns_of("health.claims", "h")
        right = columns_of("market.enterprises", "e")
        return (
            "",
            "health.claims AS h JOIN market.enterprises AS e ON h.district = e.district",
            left + right,
            "health.claims",
        )
    return "", f"{dataset} AS t", columns_of(dataset, "t"), dataset


@st.composite
def queries(draw: st.DrawFn) -> str:
    """One SELECT (or a UNION of two) from the grammar's pieces."""
    with_clause, from_clause, cols, dataset = draw(source())
    clean = draw(st.booleans())  # half the time from the allowed pieces only
    keys = draw(st.lists(scalar(cols, clean), max_size=2, unique=True))
    aggs = [draw(aggregate(cols, dataset, i, clean)) for i in range(draw(st.integers(1, 3)))]
    items = [f"{k} AS k{i}" if draw(st.booleans()) else k for i, k in enumerate(keys)]
    items += [f"{e} AS {a}" for e, a in aggs]
    items = draw(st.permutations(items))
    distinct = "DISTINCT " if not clean and draw(st.integers(0, 15)) == 0 else ""
    sql = f"{with_clause}SELECT {distinct}{', '.join(items)} FROM {from_clause}"
    if draw(st.booleans()):
        sql += f" WHERE {draw(predicate(cols, dataset, clean=clean))}"
    group_style = draw(st.integers(0, 3 if clean else 5))
    if keys or group_style == 5:
        if group_style <= 1:
            positions = [
                str(items.index(i) + 1)
                for i in items
                if not i.startswith(tuple(e for e, _ in aggs))
            ]
            sql += f" GROUP BY {', '.join(positions) or '1'}"
        elif group_style <= 3:
            sql += f" GROUP BY {', '.join(keys) or draw(scalar(cols))}"
        elif group_style == 4:
            sql += " GROUP BY ALL"
        else:
            sql += f" GROUP BY {draw(scalar(cols))}"
    if draw(st.integers(0, 3)) == 0:
        agg = draw(aggregate(cols, dataset, 9))[0]
        sql += f" HAVING {agg} > {draw(st.sampled_from(('0', '10', '1000.5')))}"
    if draw(st.integers(0, 2)) == 0:
        sql += f" ORDER BY {draw(st.sampled_from(('1', '1 DESC', aggs[0][1], aggs[0][0])))}"
    if draw(st.integers(0, 3)) == 0:
        limit = draw(st.sampled_from(("5", "0", "'x'", "1 + 1")))
        sql += f" LIMIT {limit}"
    if not clean and draw(st.integers(0, 12)) == 0:
        sql = f"{sql} UNION ALL {sql}"
    return sql


# -- identifiers mixed in ----------------------------------------------------------------

IDENTIFIERS = {
    "health.claims": ("person_id", "claim_id", "name", "id_number"),
    "market.enterprises": ("credit_code", "name"),
}
BASES = {
    "health.claims": ("district", "gender", "diagnosis_code", "claim_amount"),
    "market.enterprises": ("district", "industry", "status", "registered_capital"),
}
ENTITY = {"health.claims": "person_id", "market.enterprises": "credit_code"}
#: Every identifier column as explain names the columns a query touches; and those
#: that are not their dataset's entity key (which count(DISTINCT …) may touch).
IDENTIFIER_COLUMNS = frozenset(
    f"{dataset}.{name}"
    for dataset, spec in SPECS.items()
    for name, column in spec["columns"].items()
    if column["role"] == "identifier"
)
NON_ENTITY_IDENTIFIERS = IDENTIFIER_COLUMNS - {
    f"{dataset}.{spec['dataset']['entity_key']}" for dataset, spec in SPECS.items()
}
SNEAKS = (
    "SELECT {f} AS district, count(*) AS n FROM {d} GROUP BY 1",
    "SELECT district, count(*) AS n FROM {d} WHERE {f} = 'x' GROUP BY 1",
    "SELECT district, count(*) AS n FROM {d} WHERE {f} IS NOT NULL GROUP BY 1",
    "SELECT district, count(*) AS n FROM {d} GROUP BY 1 HAVING min({f}) < '5'",
    "SELECT district, count({f}) AS n FROM {d} GROUP BY 1",
    "SELECT district, max({f}) AS n FROM {d} GROUP BY 1",
    "SELECT district, count(*) FILTER (WHERE {f} LIKE '1%') AS n FROM {d} GROUP BY 1",
    "SELECT district, count(*) AS n FROM {d} GROUP BY 1 ORDER BY min({f})",
    "SELECT CASE WHEN {f} > '5' THEN 'a' ELSE 'b' END AS g, count(*) AS n FROM {d} GROUP BY 1",
    "WITH x AS (SELECT {i} AS district FROM {d}) SELECT district, count(*) AS n FROM x GROUP BY 1",
    "SELECT z.k, count(*) AS n FROM (SELECT {f} AS k FROM {d}) AS z GROUP BY 1",
    "SELECT district, count(DISTINCT {f}) AS n FROM {d} GROUP BY 1",
    "SELECT district, count(*) AS n FROM {d} WHERE district IN (SELECT {i} FROM {d}) GROUP BY 1",
    "SELECT a.district, count(*) AS n FROM {d} AS a JOIN {d} AS b ON a.{i} = b.{i} GROUP BY 1",
    "SELECT district, sum(length({f})) AS n FROM {d} GROUP BY 1",
    "SELECT coalesce({f}, district) AS g, count(*) AS n FROM {d} GROUP BY 1",
)


@st.composite
def identifier_queries(draw: st.DrawFn) -> str:
    dataset = draw(st.sampled_from(sorted(IDENTIFIERS)))
    ident = draw(st.sampled_from(IDENTIFIERS[dataset]))
    template = draw(st.sampled_from(SNEAKS))
    if "count(DISTINCT {f})" in template and ident == ENTITY[dataset]:
        ident = draw(st.sampled_from([i for i in IDENTIFIERS[dataset] if i != ENTITY[dataset]]))
    wrapped = draw(st.sampled_from(("{}", *SCALAR_OK[:12]))).format(ident)
    if "{i}" in template and "JOIN" not in template and "IN (SELECT" not in template:
        wrapped = ident if draw(st.booleans()) else wrapped
    if "count({f})" in template and wrapped == ident == ENTITY[dataset]:
        # count(<entity key>) counts the rows that have an entity: accepted (bbc16a2)
        others = [i for i in IDENTIFIERS[dataset] if i != ident]
        ident = wrapped = draw(st.sampled_from(others))
    return template.format(d=dataset, f=wrapped, i=ident)


# -- fixtures and properties -------------------------------------------------------------


@dataclass(repr=False)
class Target:
    service: QueryService
    bank: Any
    leaks: LeakCheck
    executed: int = 0
    accepted: int = 0
    planner: Any = None  # op-planner, for transport.trips

    def __repr__(self) -> str:
        # Hypothesis prints a failing example's arguments: not thousands of identifiers.
        return f"Target(accepted={self.accepted}, executed={self.executed})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis's pretty-printer lists a dataclass's fields unless told otherwise.
        printer.text(repr(self))


def build_target(home: Path) -> Iterator[Target]:
    """A demo deployment of its own in ``home``; op-bank gets a quota-free twin of its
    health grant (``reviewed``, as the demo's: results are held, and what the reviewer
    would release is what is checked); op-planner's grant is made ``reviewed`` too.  A
    generator: the deployment closes when it resumes."""
    from policies.accounts import require_account
    from policies.actors import Actor
    from policies.admin import Administration
    from policies.grant_terms import GrantTerms, ReleaseMode
    from sandbox.core.classification import Level

    platform, tokens = build_deployment(home)
    admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
    with platform.engine.connect() as conn:
        bureau = Actor.of(require_account(conn, "bureau-health"))
    now = datetime.now(UTC)
    admin.issue_grant(
        bureau,
        "health.claims",
        "op-bank",
        GrantTerms(
            purpose_code="fuzzing",
            purpose_text="no daily quota: the long profile runs thousands of queries",
            valid_from=now - timedelta(minutes=1),
            valid_until=now + timedelta(days=1),
            max_level=Level.L3,
            groupable=frozenset({"age", "gender", "diagnosis_code"}),
            k=K,
            release_mode=ReleaseMode.REVIEWED,
        ),
        reason="fuzzing",
    )
    # op-planner's (dp by default) too: answers are compared exactly (the band twin).
    with platform.engine.connect() as conn:
        transport = Actor.of(require_account(conn, "bureau-transport"))
    for grant in admin.list_grants(transport):
        if grant.operator == "op-planner":
            admin.set_release_mode(
                transport, grant.id, ReleaseMode.REVIEWED, reason="fuzzing: exact answers"
            )
    leaks = LeakCheck.of(identifier_values(platform))
    bank = platform.authority.authenticate(tokens["op-bank"])
    planner = platform.authority.authenticate(tokens["op-planner"])
    try:
        yield Target(QueryService(platform), bank, leaks, planner=planner)
    finally:
        platform.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    yield from build_target(tmp_path_factory.mktemp("fuzz") / "home")


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=examples * hypothesis_scale(),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )


def released_text(result: Any) -> str:
    return json.dumps(
        {
            "columns": result.table.column_names,
            "rows": result.table.to_pylist(),
            "meta": result.meta,
        },
        default=str,
        ensure_ascii=False,
    )


def refusal_ok(exc: SandboxError, sql: str, leaks: LeakCheck) -> None:
    assert exc.rule, f"{type(exc).__name__} without a rule for {sql!r}"
    leaks.assert_clean(f"{exc.code} {exc.rule} {exc.message}", sql)


@fuzz_settings(1000)
@given(sql=queries())
def test_pipeline_answers_or_refuses_with_a_rule(target: Target, sql: str) -> None:
    """(a) + (b): a rule or a release; a release leaks nothing and respects k."""
    verdict = target.service.explain(target.bank, sql)
    if not verdict["accepted"]:
        assert verdict["rule"], sql
        target.leaks.assert_clean(verdict["message"], sql)
        return
    target.accepted += 1
    try:
        result = target.service.run_job(target.bank, sql)
    except SandboxError as exc:
        refusal_ok(exc, sql, target.leaks)
        return
    target.executed += 1
    target.leaks.assert_clean(released_text(result), sql)
    for name in result.table.column_names:
        if name.startswith(("ent", "fent")):  # a group's entities, or a FILTERed cell's
            small = [v for v in result.table.column(name).to_pylist() if v is not None and v < K]
            assert not small, f"{name}: a released group of {small[0]} < k={K} entities: {sql}"


@fuzz_settings(500)
@given(sql=identifier_queries())
def test_identifier_in_any_expression_is_refused(target: Target, sql: str) -> None:
    """(c): an identifier outside count(DISTINCT entity) and declared joins never passes,
    unless the guard's normalisation provably removed it: then the query it accepted
    touches no identifier column."""
    verdict = target.service.explain(target.bank, sql)
    if verdict["accepted"]:
        used = sorted(set(verdict["columns"]) & IDENTIFIER_COLUMNS)
        assert not used, f"accepted an identifier ({used[0]}) in an expression: {sql}"
        return
    assert verdict["rule"], sql
    target.leaks.assert_clean(verdict["message"], sql)


def test_the_generators_reach_acceptance(target: Target) -> None:
    """Sanity: the query generator is not all refusals (else (b) checks nothing)."""
    verdicts: list[bool] = []

    @settings(max_examples=80, deadline=None, database=None, derandomize=True)
    @given(sql=queries())
    def sample(sql: str) -> None:
        verdicts.append(target.service.explain(target.bank, sql)["accepted"])

    sample()
    assert sum(verdicts) >= len(verdicts) // 10, f"{sum(verdicts)} of {len(verdicts)} accepted"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT district, count(DISTINCT person_id) FILTER (WHERE gender = 'F' AND age >= 80) "
        "AS fent FROM health.claims GROUP BY 1",
        "SELECT district, count(*) FILTER (WHERE gender = 'F' AND age >= 90) AS n "
        "FROM health.claims GROUP BY 1",
        "SELECT hospital_id, count(claim_amount) FILTER (WHERE diagnosis_code = 'F32') AS n "
        "FROM health.claims GROUP BY 1",
    ],
)
def test_filtered_counts_respect_k(target: Target, sql: str) -> None:
    """A FILTERed count is a cell of its own: fewer than k persons must not be released."""
    result = target.service.run_job(target.bank, sql)
    values = [v for v in result.table.column(1).to_pylist() if v is not None]
    assert all(v == 0 or v >= K for v in values), f"cells below k released: {sorted(values)[:5]}"
