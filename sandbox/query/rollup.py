"""Aggregates over an aggregating CTE or derived table, read as aggregates over its rows.

One of the equivalent forms of ``normalize.py``.  An outer SELECT that groups by some
of the keys of the aggregate it reads, and aggregates its outputs, is often the same
aggregate over the source rows, grouped coarser:

- a **rollup**: ``sum`` of a per-group ``count(*)``, ``count(x)`` or ``sum(x)`` is that
  count or sum by the outer keys; ``min`` of per-group ``min(x)`` (``max`` of ``max``)
  is ``min(x)`` (``max(x)``); ``min`` or ``max`` of a key is that of the key's column::

      WITH a AS (SELECT district, gender, count(*) AS n FROM t GROUP BY 1, 2)
      SELECT district, sum(n) FROM a GROUP BY district
      -- is SELECT district, count(*) FROM t GROUP BY district

- a **per-entity stage**: when the inner groups by the outer keys and one more column
  ``c`` (one row per value of ``c`` in each outer group), ``count(*)`` over its rows is
  ``count(DISTINCT c)``, ``avg`` of a per-``c`` ``sum(x)`` is ``sum(x) / count(DISTINCT
  c) FILTER (WHERE x IS NOT NULL)`` (a ``c`` whose values are all NULL has a NULL sum,
  which ``avg`` skips), ``avg`` of a per-``c`` count is that count over ``count(DISTINCT
  c)``::

      WITH p AS (SELECT person_id, district, sum(claim_amount) AS total FROM t
                 GROUP BY person_id, district)
      SELECT district, avg(total) FROM p GROUP BY district
      -- is SELECT district, sum(claim_amount) / count(DISTINCT person_id)
      --    FILTER (WHERE claim_amount IS NOT NULL) FROM t GROUP BY district

  The guard checks that ``count(DISTINCT c)`` as written there: on the entity key it
  counts entities (without a budget the rewrite counts a NULL entity as one entity, as
  the inner's NULL group is one row); on an identifier it is refused (a per-phone stage,
  ``guard.identifier``); on another column it counts the stage's rows, its NULL group
  one of them (``STAGE`` marks it for the rewrite: ``rewrite._Stats._values``).

The outer WHERE and FILTERs may name only the inner's keys (a filter on a key is the
same filter on the rows).  Anything else (an inner HAVING, an outer filter on an
aggregate, ``avg`` of averages, ``max`` of sums) is left as written, and the guard
refuses it (``advice.py`` says how to write it).  The guard checks the rewritten query
as any other: k counts the entities of each outer group, sums are clamped and checked
for dominance.  Pure functions; the query is rewritten in place or left as written.
"""

from __future__ import annotations

from sqlglot import exp

from sandbox.query.measure_terms import not_null
from sandbox.query.merge_source import (
    _aliases,
    _explicit_group,
    _inner_of,
    _install,
    _only,
    _outputs,
)

__all__ = ["STAGE", "rollup", "stage_note"]

#: Meta of a ``count(DISTINCT c)`` this module made: (the CTE's name, c), as written.
STAGE = "sbx_stage"

#: The clauses an outer SELECT may have to be read over the inner's rows.
_OUTER = frozenset(
    {"expressions", "from_", "where", "group", "having", "order", "limit", "offset", "with_"}
)
#: The clauses the inner aggregate may have (no HAVING: it would drop groups first).
_INNER = frozenset({"expressions", "from_", "joins", "where", "group"})


class _Left(Exception):
    """The shape is not one of this module's: leave the query as written."""


def _agg_parts(value: exp.Expr) -> tuple[exp.AggFunc, exp.Expr | None] | None:
    """An inner output that is one aggregate (with its FILTER condition), or None."""
    condition = None
    if isinstance(value, exp.Filter) and isinstance(value.expression, exp.Where):
        condition = value.expression.this
        value = value.this
    if not isinstance(value, exp.AggFunc) or value.args.get("expressions"):
        return None
    return value, condition


#: Arithmetic whose value is NULL exactly where one of its columns is (DuckDB's x / 0 is
#: inf or nan, not NULL).
_ARITHMETIC = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Neg,
    exp.Paren,
)


def _has_value(value: exp.Expr) -> exp.Expr:
    """``value IS NOT NULL``; for arithmetic of columns and numbers, each column's, so a
    generalised column (an age in bands) is tested as itself, not through an expression
    its bands do not keep (``sum(claim_amount - age)`` per person was refused for a
    FILTER the analyst never wrote; review, December 2026)."""
    columns = {c.sql(): c for c in value.find_all(exp.Column)}
    arithmetic = all(isinstance(n, _ARITHMETIC) for n in value.walk())
    if isinstance(value, exp.Column) or not columns or not arithmetic:
        return not_null(value)
    return exp.and_(*(not_null(c) for c in columns.values()))


def _and(*conditions: exp.Expr | None) -> exp.Expr | None:
    kept = [exp.paren(c.copy()) if isinstance(c, exp.Or) else c.copy() for c in conditions if c]
    return exp.and_(*kept) if kept else None


def _filtered(agg: exp.Expr, condition: exp.Expr | None) -> exp.Expr:
    if condition is None:
        return agg
    return exp.Filter(this=agg, expression=exp.Where(this=condition))


class _Reader:
    """The inner's outputs, keys and extra key, and how to read the outer over its rows."""

    def __init__(self, inner: exp.Select, name: str, outer_keys: list[exp.Expr]) -> None:
        outputs = _outputs(inner)
        group = _explicit_group(inner)
        if outputs is None or group is None or not group.expressions:
            raise _Left
        self.name = name
        self.outputs = outputs
        self.keys = {k.sql() for k in group.expressions}
        self.key_names = {n for n, v in outputs.items() if v.sql() in self.keys}
        aggregates = {n for n in outputs if _agg_parts(outputs[n]) is not None}
        if len(self.key_names) + len(aggregates) != len(outputs):
            raise _Left  # an output that is neither a key nor one aggregate
        self.outer_keys = {self.column(k).sql() for k in outer_keys}
        if not self.outer_keys <= self.keys:
            raise _Left
        extra = [k for k in group.expressions if k.sql() not in self.outer_keys]
        self.extra = extra[0] if len(extra) == 1 and isinstance(extra[0], exp.Column) else None

    def column(self, node: exp.Expr) -> exp.Expr:
        """A column of the inner, as the expression it outputs (a key's expression only)."""
        if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
            raise _Left
        if node.args.get("db") or (node.table and node.table.lower() != self.name):
            raise _Left
        value = self.outputs.get(node.name.lower())
        if value is None:
            raise _Left
        return value

    def keys_only(self, node: exp.Expr) -> exp.Expr:
        """``node`` (no aggregate in it) with every key output replaced by its expression."""
        if node.find(exp.AggFunc):
            raise _Left

        def swap(n: exp.Expr) -> exp.Expr:
            if not isinstance(n, exp.Column):
                return n
            if n.name.lower() not in self.key_names:
                raise _Left
            value = self.column(n)
            return value.copy() if isinstance(value, exp.Column) else exp.paren(value.copy())

        return node.copy().transform(swap)

    def distinct(self, condition: exp.Expr | None) -> exp.Expr:
        """``count(DISTINCT c) [FILTER (WHERE condition)]``: the inner's rows per outer group."""
        if self.extra is None:
            raise _Left
        count = exp.Count(this=exp.Distinct(expressions=[self.extra.copy()]))
        count.meta[STAGE] = (self.name, self.extra.name)
        return _filtered(count, condition)

    def aggregate(self, node: exp.Expr) -> exp.Expr:
        """The aggregate over the inner's rows that ``node`` (over its outputs) equals."""
        outer_filter = None
        if isinstance(node, exp.Filter) and isinstance(node.expression, exp.Where):
            outer_filter = self.keys_only(node.expression.this)
            node = node.this
        if not isinstance(node, exp.AggFunc) or node.args.get("expressions"):
            raise _Left
        if isinstance(node, exp.Count) and isinstance(node.this, exp.Star):
            return self.distinct(outer_filter)
        arg = node.this
        if not isinstance(arg, exp.Column):
            raise _Left
        value = self.column(arg)
        if arg.name.lower() in self.key_names:
            if isinstance(node, exp.Min | exp.Max):
                return _filtered(type(node)(this=value.copy()), outer_filter)
            if isinstance(node, exp.Count):
                return self.distinct(_and(_has_value(value), outer_filter))
            raise _Left
        parts = _agg_parts(value)
        if parts is None:
            raise _Left
        inner, inner_filter = parts
        condition = _and(inner_filter, outer_filter)
        counts = isinstance(inner, exp.Count) and not isinstance(inner.this, exp.Distinct)
        same = _filtered(inner.copy(), condition)
        if isinstance(node, exp.Sum) and (counts or isinstance(inner, exp.Sum)):
            return same
        if isinstance(node, exp.Min | exp.Max) and type(node) is type(inner):
            return same
        if not (counts or isinstance(inner, exp.Sum)):
            raise _Left
        if isinstance(inner, exp.Sum):
            # A per-c sum is NULL where none of c's values is: count and avg skip it.
            rows = self.distinct(_and(_has_value(inner.this), inner_filter, outer_filter))
        else:
            rows = self.distinct(outer_filter)  # a per-c count is never NULL
        if isinstance(node, exp.Count):
            return rows
        if isinstance(node, exp.Avg):
            return exp.paren(exp.Div(this=same, expression=rows))
        raise _Left

    def expression(self, node: exp.Expr) -> exp.Expr:
        """An outer expression with its aggregates and key columns read over the rows."""

        def swap(n: exp.Expr) -> exp.Expr:
            if isinstance(n, exp.Filter | exp.AggFunc):
                return self.aggregate(n)
            if isinstance(n, exp.Column):
                if n.name.lower() not in self.key_names:
                    raise _Left  # an aggregate's output outside an aggregate
                value = self.column(n)
                return value.copy() if isinstance(value, exp.Column) else exp.paren(value.copy())
            return n

        if node.find(exp.Window, exp.Subquery):
            raise _Left
        return node.copy().transform(swap)


def stage_note(count: exp.Expr) -> str:
    """For a ``count(DISTINCT c)`` read here, why the query counts c (for a refusal), or "".

    Names only (the CTE's and the column's, as the analyst wrote them).
    """
    stage = count.meta.get(STAGE)
    if not isinstance(stage, tuple) or len(stage) != 2:
        return ""
    name, column = stage
    if not (isinstance(name, str) and isinstance(column, str)):
        return ""
    return (
        f"the rows of {name} are one per {column} in each group, so counting or averaging "
        f"over them is count(DISTINCT {column}), and "
    )


def _outer_keys(select: exp.Select) -> list[exp.Expr]:
    group = select.args.get("group")
    if group is None:
        return []
    if not _only(group, frozenset({"expressions"})):
        raise _Left
    keys = []
    for key in group.expressions:
        if isinstance(key, exp.Literal):
            if not key.is_int or not 1 <= int(key.name) <= len(select.expressions):
                raise _Left
            key = select.expressions[int(key.name) - 1].unalias()
        keys.append(key)
    return keys


def rollup(select: exp.Select) -> None:
    """Read an outer SELECT's aggregates over an aggregating source as aggregates over its rows.

    Left as written unless every aggregate of the outer is one of the forms above and
    every other column it names is one of the inner's keys.
    """
    try:
        _rollup(select)
    except _Left:
        return


def _rollup(select: exp.Select) -> None:
    if not _only(select, _OUTER) or not any(p.find(exp.AggFunc) for p in select.expressions):
        return
    found = _inner_of(select)
    if found is None:
        return
    inner, name = found
    if not _only(inner, _INNER) or inner.find(exp.Window, exp.Subquery):
        return
    if not inner.args.get("group"):
        return
    outputs = _outputs(inner)
    if outputs is None:
        return
    aliases = _aliases(outputs)
    for part in [inner.args.get("where"), inner.args.get("group"), *inner.expressions]:
        for column in part.find_all(exp.Column) if part is not None else []:
            if not column.table and column.name.lower() in aliases:
                return  # the inner refers to its own output names
    reader = _Reader(inner, name, _outer_keys(select))

    projections = []
    for projection in select.expressions:
        if isinstance(projection, exp.Star):
            return
        value = reader.expression(projection.unalias())
        output = projection.alias_or_name or projection.sql(dialect="duckdb")
        same = isinstance(value, exp.Column) and value.name == output
        projections.append(value if same else exp.alias_(value.unnest(), output, quoted=True))
    names = {p.alias_or_name.lower() for p in projections}
    group = [reader.keys_only(k) for k in _outer_keys(select)]
    where = select.args.get("where")
    condition = reader.keys_only(where.this) if where is not None else None
    having = select.args.get("having")
    new_having = reader.expression(having.this) if having is not None else None
    order = select.args.get("order")
    new_order = None
    if order is not None:
        new_order = order.copy()
        for ordered in new_order.expressions:
            target = ordered.this
            if isinstance(target, exp.Column) and not target.table and target.name.lower() in names:
                continue  # an output of the outer SELECT, by name
            if isinstance(target, exp.Literal):
                continue  # a position among the outputs, which keep their places
            ordered.set("this", reader.expression(target))

    merged = inner.copy()
    merged.set("expressions", projections)
    merged.set("group", exp.Group(expressions=group) if group else None)
    inner_where = inner.args.get("where")
    both = _and(inner_where.this if inner_where is not None else None, condition)
    merged.set("where", exp.Where(this=both) if both is not None else None)
    merged.set("having", exp.Having(this=new_having) if new_having is not None else None)
    merged.set("order", new_order)
    _install(select, merged)
