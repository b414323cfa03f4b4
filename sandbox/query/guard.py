"""The query guard: analysis once, then an ordered tuple of rules, then the transforms.

As in sqlglot's optimizer, ``RULES`` is an ordered tuple of small functions over one
query, here an :class:`Analysed` one (qualified against the granted schemas, its
scopes listed innermost first by ``analyse``). Each rule refuses with its own rule
name; the transforms (``generalise_keys``, ``safe_casts``, and the band evaluation
inside ``bands.Tracker.check``) are named steps that say what they rewrite. The
rules themselves live in one module per concept:

- ``sandbox/query/column_rules.py``: each column use by its role where it stands
  (the role-by-clause table of ``sandbox/query/uses.py``), aggregates and their
  arguments;
- ``sandbox/query/scope_rules.py``: derived tables row-level, ``UNION ALL`` only,
  the released SELECT aggregated;
- ``sandbox/query/join_rules.py``: equalities of declared joinable pairs only;
- ``sandbox/query/bands.py``: declared generalisations in every clause;
- ``sandbox/query/closure.py``: every node known, every argument written;
- ``sandbox/query/negative_rules.py``: the negative list and important data.

``python -m sandbox.query.guard_doc`` prints the tables ``docs/guard.md`` holds.
The result is a :class:`Checked` query the rewrite turns into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, ScopeType, traverse_scope

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import ColumnSpec
from sandbox.query import bands
from sandbox.query.closure import check_closed, check_writable
from sandbox.query.cohort_rules import check_cohorts
from sandbox.query.cohorts import COHORT, mark_cohorts
from sandbox.query.column_rules import ColumnRules, quantile_of, refuse
from sandbox.query.columns_expr import expand_columns
from sandbox.query.filter_names import filters_read_columns
from sandbox.query.join_rules import ENTITY_JOIN, check_joins, datasets_reached
from sandbox.query.lineage import BaseColumn, Lineage
from sandbox.query.negative_rules import base_columns, check_controls, wrote_star
from sandbox.query.nodes import QUANTILES
from sandbox.query.parse import Parsed
from sandbox.query.scope_rules import (
    check_final,
    check_inner,
    check_output,
    check_set_operation,
    replace_everywhere,
)

__all__ = [
    "ENTITY_JOIN",
    "QUANTILES",
    "RULES",
    "SCOPE_RULES",
    "Analysed",
    "Checked",
    "DatasetAccess",
    "check_query",
    "datasets_reached",
    "entity_dataset",
    "first_source",
    "quantile_of",
]

#: The old names tests/sandbox/query/test_closure.py imports.
_Rules = ColumnRules
_check_output = check_output


@dataclass
class Checked:
    """A query that passed every rule, qualified, with its generalisations applied."""

    parsed: Parsed
    root: exp.Select
    final_scope: Scope
    lineage: Lineage
    keys: list[exp.Expression]
    primary: str
    touched: set[BaseColumn] = field(default_factory=set)


def _spec_of(access: Mapping[str, DatasetAccess], base: BaseColumn) -> ColumnSpec | None:
    grant = access.get(base.dataset)
    try:
        return None if grant is None else grant.spec.column(base.column)
    except KeyError:
        return None


def _schema(access: Mapping[str, DatasetAccess]) -> dict[str, dict[str, dict[str, str]]]:
    schema: dict[str, dict[str, dict[str, str]]] = {}
    for dataset_id, grant in access.items():
        domain, table = dataset_id.split(".", 1)
        schema.setdefault(domain, {})[table] = {
            c.name.lower(): (c.type or "VARCHAR") for c in grant.spec.columns
        }
    return schema


@dataclass
class Analysed:
    """One query analysed once, before any rule: qualified, its scopes listed innermost first.

    ``rules`` holds the lineage, recorded scope by scope as the scope rules climb (a
    scope's rules need the lineage of the scopes below it); ``keys`` and ``generalise``
    are what the released SELECT's rule found, for the transforms.
    """

    parsed: Parsed
    access: Mapping[str, DatasetAccess]
    schema: dict[str, dict[str, dict[str, str]]]
    root: exp.Select
    scopes: list[Scope]
    rules: ColumnRules
    banded: bands.Tracker
    keys: list[exp.Expression] = field(default_factory=list)
    #: GROUP BY keys that are a bare generalised column, with its spec (``generalise_keys``).
    generalise: list[tuple[exp.Expression, ColumnSpec]] = field(default_factory=list)

    @property
    def final(self) -> Scope:
        return self.scopes[-1]


def analyse(parsed: Parsed, access: Mapping[str, DatasetAccess]) -> Analysed:
    """Qualify the query against the granted schemas and list its scopes (no rule yet).

    Refuses what cannot be analysed: a dataset without a grant (``grant.missing``), a
    column that does not resolve (``guard.resolve``), a set operation as the root.
    """
    missing = [d for d in parsed.datasets if d not in access]
    if missing:
        raise refuse("grant.missing", f"no live grant covers dataset {missing[0]}")
    for join in parsed.expression.find_all(exp.Join):
        if str(join.args.get("method") or "").upper() == "NATURAL":
            raise refuse(
                "guard.join",
                "NATURAL JOIN joins on every column the two sides share: write JOIN ... ON "
                "a key both classifications declare joinable",
            )
    schema = _schema(access)
    expression = parsed.expression.copy()
    filters_read_columns(expression, schema)
    try:
        root: exp.Expr = qualify(
            expression,
            schema=cast("dict[str, object]", schema),
            dialect="duckdb",
            validate_qualify_columns=True,
            quote_identifiers=True,
            identify=True,
        )
    except OptimizeError as exc:
        raise refuse("guard.resolve", unresolved_message(str(exc), parsed.datasets)) from None
    if not isinstance(root, exp.Select):
        raise refuse(
            "guard.set_operation",
            "the released SELECT cannot be a set operation (each aggregated SELECT is its "
            "own release: run them separately); UNION ALL is allowed inside a CTE or "
            "derived table",
        )
    mark_cohorts(root)  # the one form of subquery in WHERE (cohorts.py), its shape only
    scopes = list(traverse_scope(root))
    if expand_columns(scopes[-1], schema):
        scopes = list(traverse_scope(root))
    return Analysed(
        parsed,
        access,
        schema,
        root,
        scopes,
        ColumnRules(parsed, access),
        bands.Tracker(partial(_spec_of, access), parsed.written),
    )


Step = Callable[[Analysed], None]
ScopeStep = Callable[[Analysed, Scope], None]


def data_lists(a: Analysed) -> None:
    """The negative list and important data (negative_rules.py), first: every dataset
    column any scope reads, wherever it stands (``*`` expanded)."""
    star = wrote_star(a.parsed.expression)
    check_controls(a.parsed.datasets, base_columns(a.scopes), a.access, star=star)


def touched_controls(a: Analysed) -> None:
    """The same rules again over every column the other rules resolved (defence in depth)."""
    check_controls(a.parsed.datasets, a.rules.touched, a.access)


def closed(a: Analysed) -> None:
    """Every node of the qualified query has a kind in the node-kind table (closure.py)."""
    check_closed(a.root, a.parsed.sql)


def scope_placement(a: Analysed, scope: Scope) -> None:
    """Subqueries only in FROM, totals and thresholds aside (each released on its own)
    and cohorts (a WHERE's ``key IN (SELECT key …)``, cohorts.py); no table functions."""
    if scope.scope_type is ScopeType.SUBQUERY and scope.expression.meta.get(COHORT):
        return  # its keys are checked with the scope it filters (``cohorts``)
    if scope.scope_type in (ScopeType.SUBQUERY,):
        raise refuse(
            "guard.subquery_predicate",
            "subqueries are allowed only in FROM, and as a total (SELECT agg(x) FROM … with "
            "no GROUP BY) in the SELECT list, HAVING or ORDER BY, or compared with in WHERE",
        )
    if scope.scope_type is ScopeType.UDTF:
        raise refuse("guard.table_function", "table functions are not allowed")


def set_operation(a: Analysed, scope: Scope) -> None:
    """Only UNION ALL of row-level branches; records its lineage and bands (analysis)."""
    if isinstance(scope.expression, exp.SetOperation):
        check_set_operation(scope)
        a.rules.lineage.record_set_outputs(scope)
        a.banded.record_set(scope)


def joins(a: Analysed, scope: Scope) -> None:
    """Joins only on equalities of declared joinable pairs (with consent), each dataset once."""
    if not isinstance(scope.expression, exp.SetOperation):
        check_joins(a.rules, scope)


def cohorts(a: Analysed, scope: Scope) -> None:
    """Cohort subqueries in WHERE (cohorts.py): entity keys of one entity, uncorrelated."""
    check_cohorts(a.rules, scope)


def released_select(a: Analysed, scope: Scope) -> None:
    """The outermost SELECT: aggregated; outputs, keys, WHERE, HAVING, ORDER BY, LIMIT."""
    if scope is a.final:
        a.keys = check_final(a.rules, scope, a.generalise)


def derived_scope(a: Analysed, scope: Scope) -> None:
    """CTEs and derived tables are row-level; records their outputs' lineage (analysis)."""
    if scope is not a.final and not isinstance(scope.expression, exp.SetOperation):
        check_inner(a.rules, scope)
        a.rules.lineage.record_outputs(scope)


def generalise_keys(a: Analysed, scope: Scope) -> None:
    """Transform: a bare generalised GROUP BY key becomes its declared generalisation.

    In the column's own type where that is whole numbers (``bands.key_generalisation``).

    Rewrites the released SELECT's keys, outputs, HAVING and ORDER BY (outside
    aggregates) before ``bands`` inspects that scope, which then sees the declared form.
    """
    if scope is not a.final:
        return
    for key, spec in a.generalise:
        rewritten = bands.key_generalisation(spec, key)
        replace_everywhere(scope.expression, key, rewritten)
        a.keys = [rewritten if k is key else k for k in a.keys]


def generalisations(a: Analysed, scope: Scope) -> None:
    """Declared generalisations hold in every clause (bands.py).

    Also a transform: ``bands.Tracker.check`` replaces each accepted occurrence by its
    value computed on the band, after judging all of the scope's occurrences.
    """
    if not isinstance(scope.expression, exp.SetOperation):
        a.banded.check(scope, final=scope is a.final)


#: Run on each scope in turn, innermost first.
SCOPE_RULES: tuple[ScopeStep, ...] = (
    scope_placement,
    set_operation,
    joins,
    cohorts,
    released_select,
    derived_scope,
    generalise_keys,
    generalisations,
)


def scopes(a: Analysed) -> None:
    """Every scope, innermost first, through ``SCOPE_RULES`` in order."""
    for scope in a.scopes:
        for step in SCOPE_RULES:
            step(a, scope)


def safe_casts(a: Analysed) -> None:
    """Transform: every CAST runs as TRY_CAST (a failing cast would quote its value)."""
    replaced: dict[int, exp.Expression] = {}
    for node in list(a.root.find_all(exp.Cast)):
        if type(node) is exp.Cast:
            safe = exp.TryCast(this=node.this, to=node.args["to"])
            node.replace(safe)
            replaced[id(node)] = safe
    a.keys = [replaced.get(id(key), key) for key in a.keys]


def writable(a: Analysed) -> None:
    """No node carries an argument sqlglot's DuckDB writer would drop (closure.py)."""
    check_writable(a.root)


#: The guard, in order, over one analysed query.
RULES: tuple[Step, ...] = (data_lists, closed, scopes, touched_controls, safe_casts, writable)


def check_query(parsed: Parsed, access: Mapping[str, DatasetAccess]) -> Checked:
    """Analyse, apply every rule in ``RULES``; return the checked query or raise QueryRefused."""
    if parsed.sets:  # each grouping set is checked as the query of its own it is
        raise refuse(
            "guard.grouping_sets",
            "ROLLUP, CUBE and GROUPING SETS are answered as one query per grouping set "
            "(release.prepare), not checked as one query here",
        )
    a = analyse(parsed, access)
    for rule in RULES:
        rule(a)
    primary = entity_dataset(a.final)
    # A table the query defines (a per-entity table) touches the columns it reads.
    touched = {b for b in a.rules.touched if access[b.dataset].derived_sql is None}
    for dataset in parsed.datasets:
        for column in access[dataset].derived_reads:
            touched.add(BaseColumn(*column.rsplit(".", 1)))
    return Checked(parsed, a.root, a.final, a.rules.lineage, a.keys, primary, touched)


def first_source(scope: Scope) -> tuple[str, exp.Table | Scope]:
    """A SELECT scope's first FROM source (its alias and the table or derived scope)."""
    from_ = scope.expression.args.get("from_")
    alias = from_.this.alias_or_name if from_ else ""
    source = scope.sources.get(alias) if from_ else None
    if not isinstance(source, exp.Table | Scope):
        raise refuse("guard.lineage", "the query's first FROM source is not a dataset")
    return alias, source


def entity_dataset(scope: Scope) -> str:
    """The dataset whose entities are counted: follow the first FROM source down.

    Through a ``UNION ALL`` every branch must lead to the same dataset, so one entity
    key identifies a contributor whichever branch its rows came from.
    """
    if isinstance(scope.expression, exp.SetOperation):
        found = {entity_dataset(branch) for branch in scope.set_operation_scopes}
        if len(found) != 1:
            raise refuse(
                "guard.set_operation",
                "every branch of a UNION ALL must read the same dataset first "
                "(its entities are the ones counted)",
            )
        return found.pop()
    _, source = first_source(scope)
    if isinstance(source, exp.Table):
        return f"{source.args['db'].name.lower()}.{source.name.lower()}"
    return entity_dataset(source)


_UNRESOLVED = (
    re.compile(r"Column '([^']+)' could not be resolved"),
    re.compile(r"Unknown column: (\S+)"),
)


def unresolved_message(error: str, datasets: tuple[str, ...]) -> str:
    """sqlglot's resolution error in the analyst's words: the column as written, no positions.

    The name comes from the query's own text (sqlglot quotes what it could not find), so
    nothing from the data is echoed.
    """
    names = ", ".join(datasets)
    for pattern in _UNRESOLVED:
        found = pattern.search(error)
        if found:
            return (
                f"{found.group(1)} is not a column of {names} "
                "(GET /v1/datasets lists the columns you may use)"
            )
    return f"a column of the query is not a column of {names} (GET /v1/datasets lists them)"
