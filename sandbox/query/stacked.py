"""Totals stacked with UNION ALL, read as the one grouped query they mean.

Analysts write a breakdown as one aggregated SELECT per value, stacked::

    SELECT 'F' AS gender, count(*) AS n FROM health.claims WHERE gender = 'F'
    UNION ALL
    SELECT 'M', count(*) FROM health.claims WHERE gender = 'M'

Each branch would be a release of its own; together they are exactly::

    SELECT gender AS gender, count(*) AS n FROM health.claims
    WHERE gender IN ('F', 'M') GROUP BY gender

which the guard then checks like any grouped query (the column's role, its grant, k
per group).  Read so only when every branch is the same SELECT but for one
``column = constant`` condition whose constant the branch also outputs, in the same
place; anything else stays a UNION ALL (and ``advice.py`` says what to write).  One
difference: a value no row has gives no row, where its branch would give a count of
0 (a group the k rule withholds anyway).  Pure functions.
"""

from __future__ import annotations

from sqlglot import exp

__all__ = ["stacked_as_grouped"]

#: What a stacked branch may hold besides its projections, FROM and WHERE.
_PLAIN = frozenset({"expressions", "from_", "where"})


def _branches(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.Union) and not node.args.get("distinct"):
        if node.args.get("by_name") or any(
            node.args.get(a) for a in ("order", "limit", "offset", "with_")
        ):
            return [node]
        return [*_branches(node.this), *_branches(node.expression)]
    return [node]


def _conjuncts(where: exp.Expr) -> list[exp.Expr]:
    return list(where.flatten()) if isinstance(where, exp.And) else [where]


def _equalities(select: exp.Select) -> list[tuple[exp.Expr, exp.Column, exp.Literal]]:
    """Each ``column = constant`` conjunct of the branch's WHERE, with the conjunct."""
    where = select.args.get("where")
    found = []
    for conjunct in _conjuncts(where.this) if where is not None else []:
        inner = conjunct.unnest()
        if (
            isinstance(inner, exp.EQ)
            and isinstance(inner.this, exp.Column)
            and isinstance(inner.expression, exp.Literal)
        ):
            found.append((conjunct, inner.this, inner.expression))
    return found


def _split(select: exp.Select, column: str, position: int) -> tuple[exp.Literal, list[str]] | None:
    """The branch's constant for ``column`` (also its output at ``position``), and the
    text of its other conjuncts, sorted; None if the branch is not of that form."""
    keyed = [(c, v) for c, col, v in _equalities(select) if col.sql() == column]
    if len(keyed) != 1:
        return None
    conjunct, value = keyed[0]
    if position >= len(select.expressions) or not _same_literal(
        select.expressions[position].unalias(), value
    ):
        return None
    where = select.args["where"].this
    rest = sorted(c.sql(dialect="duckdb") for c in _conjuncts(where) if c is not conjunct)
    return value, rest


def _same_literal(a: exp.Expr, b: exp.Literal) -> bool:
    return isinstance(a, exp.Literal) and a.is_string == b.is_string and a.name == b.name


def stacked_as_grouped(root: exp.Expr) -> exp.Select | None:
    """The grouped SELECT a stack of per-value totals means, or None if it is not one."""
    branches = _branches(root)
    if len(branches) < 2 or not all(isinstance(b, exp.Select) for b in branches):
        return None
    selects = [b for b in branches if isinstance(b, exp.Select)]
    if any(set(k for k, v in s.args.items() if v) - _PLAIN for s in selects):
        return None  # GROUP BY, HAVING, joins, DISTINCT, ORDER or LIMIT in a branch
    first = selects[0]
    keys = [
        (column, i)
        for _, column, value in _equalities(first)
        for i, p in enumerate(first.expressions)
        if _same_literal(p.unalias(), value)
    ]
    if len(keys) != 1:
        return None
    column, position = keys[0]
    split = [_split(s, column.sql(), position) for s in selects]
    width = len(first.expressions)
    values: list[exp.Literal] = []
    for select, part in zip(selects, split, strict=True):
        if part is None:
            return None
        value, rest = part
        if (
            rest != split[0][1]  # type: ignore[index]
            or len(select.expressions) != width
            or select.args["from_"].sql() != first.args["from_"].sql()
            or any(_same_literal(v, value) for v in values)
        ):
            return None
        for i, projection in enumerate(select.expressions):
            if i != position and projection.unalias().sql() != first.expressions[i].unalias().sql():
                return None
        values.append(value)
    if any(not p.find(exp.AggFunc) for i, p in enumerate(first.expressions) if i != position):
        return None  # every other output must be an aggregate for the branches to stack
    chosen = first.expressions[position]
    key_name = chosen.alias if isinstance(chosen, exp.Alias) else column.name
    projections = [
        exp.alias_(column.copy(), key_name, quoted=True) if i == position else p.copy()
        for i, p in enumerate(first.expressions)
    ]
    condition: exp.Expr = exp.In(this=column.copy(), expressions=[v.copy() for v in values])
    kept = split[0][1]  # type: ignore[index]
    for conjunct in _conjuncts(first.args["where"].this):
        if conjunct.sql(dialect="duckdb") in kept and not (
            isinstance(conjunct.unnest(), exp.EQ) and conjunct.unnest().this.sql() == column.sql()
        ):
            condition = exp.and_(condition, conjunct.copy())
    return exp.Select(
        expressions=projections,
        from_=first.args["from_"].copy(),
        where=exp.Where(this=condition),
        group=exp.Group(expressions=[column.copy()]),
    )
