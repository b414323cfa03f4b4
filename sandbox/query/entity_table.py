"""Per-entity tables: a derived table or CTE grouped by its dataset's entity key.

``SELECT n, count(*) FROM (SELECT person_id, count(*) AS n FROM health.claims GROUP BY
person_id) GROUP BY n`` (how many persons made one claim, two, ...) aggregates twice.
The inner SELECT makes one row per entity, each computed from that entity's rows
alone; the outer one is then an ordinary query over a table of one row per entity.
This module reads such an inner SELECT as that table: a dataset of its own, the
*per-entity table*, with the entity key and one column per aggregate
(:func:`lift`).  The outer query is checked, rewritten and released as any query over
a dataset whose every row is a distinct entity (``DatasetAccess.entity_is_row``), with
C = G = 1: adding or removing one entity adds or removes one row of the table, so a
count's sensitivity is 1 and a sum's the width of its column's bounds.

Closed by construction (``entity_shape.py``): an inner SELECT is read so only when it
reads one dataset (no join, no subquery in FROM), groups by that dataset's entity key
and by columns declared one value per entity only, and projects only the keys and
named aggregates ``count(*)``, ``count(col)``, ``count(DISTINCT col)``, ``sum``,
``avg``, ``min`` or ``max`` of a column, each optionally under ``FILTER``; its
``HAVING`` compares those aggregates (any other shape grouped by the key is refused,
naming what is not supported).  Its key, ``WHERE``, FILTERs and each aggregate's
column are checked by the guard as the query ``SELECT count(DISTINCT key),
<aggregates> FROM <dataset> WHERE …`` would be (``sum(col)`` standing for ``sum``,
``min`` and ``max`` of a measure, ``avg(col)`` for its ``avg``: a measure use).  The
outer query must read per-entity tables only.  The table's SELECT is built as a tree
(no name is pasted into SQL text) from the guard's qualified reading of the probe.

Each row's value is clamped to its column's bounds ``[lo, hi]`` before it is
aggregated, as in every release.  The table's columns then have bounds of their own
(the outer query clamps each entity's value to them): under a budget a count's
``[0, T]`` (T: the dataset's rows per entity over all groups, else C·G), an average's,
minimum's and maximum's ``[lo, hi]``, a sum's ``[min(0, T·lo), max(0, T·hi)]``;
without a budget none that data reaches (``UNBOUNDED_ROWS`` in place of T).  A count
is a dimension (a key: the true count, released where enough entities share it); a
value keeps its column's role, level, generalisation and groupable.  A key declared one
value per entity is copied with its classification.  The enclave computes the table
with its ``WHERE`` and FILTERs under ``TRY`` as it does every predicate
(``rewrite.contain_errors``) and drops rows without an entity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import cast

import sqlglot
from sqlglot import exp

from sandbox.core.access import DatasetAccess
from sandbox.core.classification import (
    INTEGER_TYPES,
    ColumnSpec,
    Contribution,
    DatasetSpec,
    Level,
    Role,
)
from sandbox.core.errors import QueryRefused
from sandbox.query.advice import aggregate_of_aggregates, mean_of_entity_sums
from sandbox.query.entity_caps import clamp
from sandbox.query.entity_shape import (
    EntityColumn,
    having_filter,
    is_source,
    per_entity,
    refuse,
    shape,
    why_not,
)
from sandbox.query.entity_words import TableName
from sandbox.query.grouping_sets import grouping_sets
from sandbox.query.guard import check_query
from sandbox.query.lineage import dataset_id
from sandbox.query.parse import Parsed, parse_query
from sandbox.query.rewrite import contain_errors

__all__ = ["UNBOUNDED_ROWS", "EntityTables", "lift"]

#: Without a budget, the bound of an entity's count (and, times a row's, of its total):
#: none that data reaches, so an exact release clamps no entity's value.
UNBOUNDED_ROWS = 10**12


@dataclass(frozen=True)
class EntityTables:
    """The query with its per-entity tables read as datasets of their own."""

    parsed: Parsed
    access: Mapping[str, DatasetAccess]
    #: how the analyst names each table, for refusals (``entity_words``)
    names: tuple[TableName, ...] = ()


def lift(
    parsed: Parsed,
    access: Mapping[str, DatasetAccess],
    *,
    rows_per_entity: int | None,
    max_sql_length: int,
) -> EntityTables | None:
    """``parsed`` with each per-entity table replaced by a dataset of its own, or None.

    None where the query has no SELECT grouped by its dataset's entity key inside a
    derived table or CTE, or where the outer query reads anything else as well (a
    registered dataset, a cohort of one): the guard then checks it as it is.
    ``rows_per_entity``: T (else C·G) of the query's budget, the bound of a count;
    None without a budget (a bound no count reaches: an exact release clamps rows to
    their measure bounds, as every release does, and no entity's count or total).
    """
    rows = UNBOUNDED_ROWS if rows_per_entity is None else rows_per_entity
    root = parsed.expression
    if not isinstance(root, exp.Select):
        return None
    inner = [s for s in root.find_all(exp.Select) if s is not root and is_source(s)]
    grouped = [s for s in inner if s.args.get("group")]
    found = [(s, per_entity(s, access)) for s in grouped]
    if not found:
        return None
    if any(key is None for _s, key in found):
        mean_of_entity_sums(root)  # avg(total) by another key: the one SELECT that gives it
        for select, key in found:
            reason = why_not(select, access) if key is None else None
            if reason is not None:
                raise QueryRefused(reason, rule="guard.inner_scope")
        aggregate_of_aggregates(root)  # the accepted way, where advice knows one
        return None
    names = [c.alias_or_name.lower() for c in root.find_all(exp.CTE)]
    if len(set(names)) != len(names):
        raise refuse("two CTEs of the query have one name: name each CTE once")
    root = root.copy()
    copies = [s for s in root.find_all(exp.Select) if s is not root and is_source(s)]
    by_position = dict(zip((id(s) for s in inner), copies, strict=True))
    new_access = dict(access)
    virtual: list[str] = []
    spoken: list[TableName] = []
    for select, key in found:
        assert key is not None
        dataset, entity, others = key
        name = _virtual_name(dataset, entity, new_access)
        table, derived, hidden = _table(
            by_position[id(select)],
            dataset,
            entity,
            others,
            access,
            name=name,
            rows_per_entity=rows,
            max_sql_length=max_sql_length,
        )
        new_access[name] = derived
        virtual.append(name)
        spoken.append(TableName(name, _label(select), entity, hidden))
        _replace(root, by_position[id(select)], table)
    remaining = {dataset_id(t) for t in root.find_all(exp.Table)} - {None}
    if remaining - set(virtual):
        aggregate_of_aggregates(cast(exp.Select, parsed.expression))
        return None  # a registered dataset beside them: checked as written
    ctes = frozenset(
        cte.alias_or_name.lower() for with_ in root.find_all(exp.With) for cte in with_.expressions
    )
    lifted = Parsed(root, tuple(virtual), ctes, parsed.sql, sets=grouping_sets(root))
    return EntityTables(lifted, new_access, tuple(spoken))


# -- the per-entity table as a dataset ----------------------------------------------------


def _label(select: exp.Select) -> str | None:
    """The name the analyst gave the table: its alias, or its CTE's name."""
    parent = select.parent
    if isinstance(parent, (exp.Subquery, exp.CTE)):
        return parent.alias or None
    return None


def _virtual_name(dataset: str, entity: str, taken: Mapping[str, DatasetAccess]) -> str:
    base = f"{dataset}_per_{entity}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def _table(
    select: exp.Select,
    dataset: str,
    entity: str,
    others: tuple[str, ...],
    access: Mapping[str, DatasetAccess],
    *,
    name: str,
    rows_per_entity: int,
    max_sql_length: int,
) -> tuple[exp.Expr, DatasetAccess, frozenset[str]]:
    """The source that replaces ``select``, the per-entity table's access and the names
    of the columns only its HAVING compares."""
    key_name, keys, columns = shape(select, dataset, entity, others)
    having = select.args.get("having")
    hidden: list[EntityColumn] = []
    condition: exp.Expr | None = None
    if having is not None:
        condition, hidden = having_filter(having.this, columns, select.args["from_"].this, keys)
    grant = access[dataset]
    spec = grant.spec
    source_table = select.args["from_"].this
    for table in select.find_all(exp.Table):
        if table is not source_table and dataset_id(table) not in access:
            raise refuse(
                "a per-entity table reads its dataset only: a cohort in its WHERE reads a "
                "dataset, not a CTE or another per-entity table"
            )
    # The guard checks what the table reads, as the query over its rows that reads it:
    # the entity key counted (its level, the column list, the data lists), each other
    # key as a key, each aggregated column in the use its aggregate makes of it.
    checks: list[exp.Expr] = [exp.Count(this=exp.Distinct(expressions=[exp.column(entity)]))]
    for i, column in enumerate([*columns, *hidden]):
        checks.append(exp.alias_(_check_form(column, spec), f"sbx_check_{i}"))
    probe = exp.select(*checks).from_(select.args["from_"].this.copy())
    if select.args.get("where"):
        probe.set("where", select.args["where"].copy())
    if others:
        probe = probe.group_by(*(exp.column(o) for o in others))
    probe_sql = probe.sql(dialect="duckdb")
    checked = check_query(
        parse_query(probe_sql, max_length=max(max_sql_length, len(probe_sql))), access
    )
    qualified = checked.root.copy()
    contain_errors(qualified, qualified, access)  # WHERE and FILTERs: TRY where they could fail
    source = qualified.args["from_"].this
    alias = source.alias_or_name
    checked_forms = {p.alias_or_name: p.unalias() for p in qualified.expressions}

    def col(column: str) -> exp.Column:
        return exp.column(column, table=alias, quoted=True)

    # Built as a tree: every name is an identifier, quoted by the writer (an alias is
    # never pasted into SQL text, where a quote in it would end the name).
    outputs: list[exp.Expr] = [exp.alias_(col(entity), key_name, quoted=True)]
    specs = [replace(spec.column(entity), name=key_name, joinable=())]
    for out, other in keys.items():
        outputs.append(exp.alias_(col(other), out, quoted=True))
        specs.append(replace(spec.column(other), name=out, joinable=()))
    for i, column in enumerate([*columns, *hidden]):
        value, column_spec = _computed(column, spec, col, rows_per_entity)
        if column.condition is not None:
            # the condition as the guard checked it and contain_errors made it safe
            checked_filter = checked_forms[f"sbx_check_{i}"]
            if not isinstance(checked_filter, exp.Filter):
                raise refuse("a FILTER of a per-entity table could not be read as written")
            value = exp.Filter(this=value, expression=checked_filter.expression.copy())
        outputs.append(exp.alias_(value, column.name, quoted=True))
        specs.append(column_spec)
    present = exp.Not(this=exp.Is(this=col(entity), expression=exp.Null()))
    where = qualified.args.get("where")
    kept = present if where is None else exp.and_(exp.Paren(this=where.this.copy()), present)
    derived_select = (
        exp.select(*outputs)
        .from_(source.copy())
        .where(kept)
        .group_by(col(entity), *(col(o) for o in others))
    )
    virtual = DatasetSpec(
        id=name,
        title=f"{spec.title}, one row per {entity}",
        entity_key=key_name,
        columns=tuple(specs),
        contribution=Contribution(1, 1),
        one_row_per_entity=True,
    )
    copied = {**keys, **{c.name: c.source for c in [*columns, *hidden] if c.source}}
    derived = DatasetAccess(
        spec=virtual,
        max_level=grant.max_level,
        groupable=frozenset(out for out, src in copied.items() if src in grant.groupable),
        # Grouped by the key alone, a row is an entity; with other keys, an entity the
        # declaration misdescribes has more than one, and the caps (C = G = 1) keep one.
        entity_is_row=not others,
        budgeted=grant.budgeted,
        derived_sql=derived_select.sql(dialect="duckdb"),
        derived_reads=frozenset(f"{b.dataset}.{b.column}" for b in checked.touched),
    )
    domain, table_name = name.split(".", 1)
    table = exp.table_(table_name, db=domain)
    shown = frozenset(c.name for c in hidden)
    if condition is None:
        return table, derived, shown
    visible = [c.name for c in columns] + [key_name, *keys]
    filtered = exp.select(*(exp.column(c, quoted=True) for c in visible)).from_(table)
    return filtered.where(condition), derived, shown


def _check_form(column: EntityColumn, spec: DatasetSpec) -> exp.Expr:
    """The aggregate the guard checks for ``column``: its own use of the column (a
    count of rows, for ``count(*)``), under its FILTER if it has one."""
    form: exp.Expr
    col = None if column.source is None else exp.column(column.source)
    if col is None:
        form = exp.Count(this=exp.Star())
    elif column.function == "count_distinct":
        form = exp.Count(this=exp.Distinct(expressions=[col]))
    elif column.function == "count":
        form = exp.Count(this=col)
    elif column.function in ("min", "max") and spec.column(str(column.source)).bounds is None:
        # the extreme of a column without a measure use: the guard's own rule for
        # extremes (a dimension's; refused for any other role)
        form = exp.Min(this=col) if column.function == "min" else exp.Max(this=col)
    else:
        # sum, avg, and the extremes of a measure: a measure use (an entity's own extreme
        # is one of its values, aggregated again by the outer query, never released)
        form = exp.Avg(this=col) if column.function == "avg" else exp.Sum(this=col)
    if column.condition is None:
        return form
    return exp.Filter(this=form, expression=exp.Where(this=column.condition.copy()))


def _computed(
    column: EntityColumn,
    spec: DatasetSpec,
    col: Callable[[str], exp.Column],
    rows: int,
) -> tuple[exp.Expr, ColumnSpec]:
    """The column's expression in the per-entity SELECT and its classification there.

    A value keeps its column's role, level and declared generalisation (a per-person
    ``min(age)`` is still an age, in bands of 10, groupable only if age is).
    """
    if column.function.startswith("count"):
        arg: exp.Expr = exp.Star() if column.source is None else col(column.source)
        if column.function == "count_distinct":
            arg = exp.Distinct(expressions=[arg])
        level = Level.L1 if column.source is None else spec.column(column.source).level
        return exp.Count(this=arg), ColumnSpec(
            column.name,
            level,
            Role.DIMENSION,
            type="BIGINT",
            bounds=(0.0, float(rows)),
            values_per_entity=1,
        )
    assert column.source is not None
    source = spec.column(column.source)
    kept = replace(source, name=column.name, joinable=(), values_per_entity=1)
    if source.bounds is None:  # an extreme of a dimension (_check_form): as it is
        function = exp.Min if column.function == "min" else exp.Max
        return function(this=col(column.source)), kept
    lo, hi = source.bounds
    cast = exp.TryCast(this=col(column.source), to=exp.DataType.build("DOUBLE"))
    value = sqlglot.parse_one(clamp(cast.sql(dialect="duckdb"), lo, hi), read="duckdb")
    aggregate = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}[column.function]
    bounds = (min(0.0, rows * lo), max(0.0, rows * hi)) if column.function == "sum" else (lo, hi)
    computed: exp.Expr = aggregate(this=value)
    whole = source.type is not None and INTEGER_TYPES.fullmatch(source.type)
    if column.function in ("min", "max") and whole and lo.is_integer() and hi.is_integer():
        # an extreme of whole numbers clamped to whole bounds is one: kept in its type
        # (a band's cut `a > 29` reads as on the dataset's own column)
        typed = exp.DataType.build(source.type or "BIGINT")
        return exp.Cast(this=computed, to=typed), replace(kept, bounds=bounds)
    return computed, replace(kept, type="DOUBLE", bounds=bounds)


def _replace(root: exp.Select, select: exp.Select, source: exp.Expr) -> None:
    """Put the per-entity table where ``select`` stood: a derived table, or each
    reference to the CTE whose body it was (the CTE itself is dropped)."""
    parent = select.parent
    if isinstance(parent, exp.Subquery):
        if isinstance(source, exp.Table):
            table = source.copy()
            alias = parent.args.get("alias")
            if alias is not None:
                table.set("alias", alias.copy())
            parent.replace(table)
        else:
            parent.set("this", source.copy())
        return
    assert isinstance(parent, exp.CTE)
    name = parent.alias_or_name.lower()
    with_ = parent.parent
    parent.pop()
    if isinstance(with_, exp.With) and not with_.expressions:
        with_.pop()
    for ref in list(root.find_all(exp.Table)):
        if ref.args.get("db") is not None or ref.name.lower() != name:
            continue
        alias = exp.TableAlias(this=exp.to_identifier(ref.alias_or_name))
        if isinstance(source, exp.Table):
            ref.replace(exp.table_(source.name, db=source.args["db"].name, alias=alias.this))
        else:
            ref.replace(exp.Subquery(this=source.copy(), alias=alias))
