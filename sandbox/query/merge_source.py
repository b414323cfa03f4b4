"""A derived table or CTE and the one SELECT that reads it, merged into one SELECT.

Two of the equivalent forms of ``normalize.py``.  ``aggregate_source``: ``SELECT d, n
FROM (SELECT district AS d, count(*) AS n FROM t GROUP BY 1) x WHERE n > 5 ORDER BY n``
is one aggregating SELECT, which the guard's rules read (they refuse aggregation inside
a derived table).  ``projecting_source``: ``WITH t AS (SELECT a - b AS d FROM t) SELECT
avg(d) FROM t`` is ``SELECT avg(a - b) FROM t``, an aggregate of the expression itself.
Pure functions; the query is rewritten in place or left as written.
"""

from __future__ import annotations

from sqlglot import exp

from sandbox.query.nodes import QUANTILES, VALUE_AGGREGATES

__all__ = ["aggregate_source", "projecting_source"]


#: The clauses an outer SELECT may have to be merged into the aggregate it reads.
_OUTER_ARGS = frozenset({"expressions", "from_", "where", "order", "limit", "offset", "with_"})
#: The clauses the aggregating inner SELECT may have.
_INNER_ARGS = frozenset({"expressions", "from_", "joins", "where", "group", "having"})


def _only(node: exp.Expr, allowed: frozenset[str]) -> bool:
    return all(not value or key in allowed for key, value in node.args.items())


def _inner_of(select: exp.Select) -> tuple[exp.Select, str] | None:
    """The SELECT the outer reads (a derived table or its one CTE), and its name there."""
    from_ = select.args.get("from_")
    source = from_.this if from_ is not None else None
    with_ = select.args.get("with_")
    if isinstance(source, exp.Subquery) and with_ is None:
        if not _only(source, frozenset({"this", "alias"})):
            return None
        inner = source.this
        name = source.alias_or_name.lower()
    elif isinstance(source, exp.Table) and with_ is not None:
        if not _only(source, frozenset({"this", "alias"})) or not isinstance(
            source.this, exp.Identifier
        ):
            return None
        if with_.args.get("recursive") or len(with_.expressions) != 1:
            return None
        (cte,) = with_.expressions
        if cte.alias_or_name.lower() != source.name.lower() or not _only(
            cte, frozenset({"this", "alias"})
        ):
            return None
        inner = cte.this
        name = source.alias_or_name.lower()
    else:
        return None
    if not isinstance(inner, exp.Select) or not _only(inner, _INNER_ARGS):
        return None
    return inner, name


def _aggregating(inner: exp.Select) -> bool:
    return bool(inner.args.get("group")) or any(p.find(exp.AggFunc) for p in inner.expressions)


def _outputs(inner: exp.Select) -> dict[str, exp.Expr] | None:
    """The inner's outputs by name (lowercase), or None if one has no name or two one."""
    outputs: dict[str, exp.Expr] = {}
    for projection in inner.expressions:
        name = projection.alias_or_name.lower()
        value = projection.unalias()
        star = isinstance(value, exp.Star) or (
            isinstance(value, exp.Column) and isinstance(value.this, exp.Star)
        )
        if not name or name in outputs or star:
            return None
        outputs[name] = value
    return outputs


def _aliases(outputs: dict[str, exp.Expr]) -> set[str]:
    """Output names that stand for something other than a column of that name."""
    return {
        name
        for name, value in outputs.items()
        if not (isinstance(value, exp.Column) and value.name.lower() == name)
    }


def _explicit_group(inner: exp.Select) -> exp.Group | None:
    """The inner's GROUP BY with positions and ALL spelled out (None: not mergeable)."""
    group = inner.args.get("group")
    if group is None:
        return None if inner.args.get("having") is None else exp.Group(expressions=[])
    if not _only(group, frozenset({"expressions", "all"})):
        return None
    values = [p.unalias() for p in inner.expressions]
    if group.args.get("all"):
        if group.expressions:
            return None
        keys = [v.copy() for v in values if not v.find(exp.AggFunc)]
        return exp.Group(expressions=keys)
    keys = []
    for key in group.expressions:
        if isinstance(key, exp.Literal):
            if not key.is_int or not 1 <= int(key.name) <= len(values):
                return None
            key = values[int(key.name) - 1]
        keys.append(key.copy())
    return exp.Group(expressions=keys)


def _substitute(
    node: exp.Expr,
    name: str,
    outputs: dict[str, exp.Expr],
    keep: dict[str, exp.Expr] | None = None,
) -> exp.Expr | None:
    """``node`` with every column of the inner replaced by its expression (None: not all are).

    ``keep`` (for ORDER BY): the merged SELECT's outputs by name.  A bare name of one
    stays (it names that output, as it did), and an inner expression carrying a bare
    column one of them would shadow is not mergeable.
    """
    missing = False
    keep = keep or {}

    def swap(n: exp.Expr) -> exp.Expr:
        nonlocal missing
        if not isinstance(n, exp.Column):
            return n
        if n.args.get("db") or n.args.get("catalog") or (n.table and n.table.lower() != name):
            missing = True
            return n
        written = n.name.lower()
        if not n.table and written in keep:
            return n  # an output of the outer SELECT, by name (ORDER BY)
        value = outputs.get(written)
        if value is None or isinstance(n.this, exp.Star):
            missing = True
            return n
        for column in value.find_all(exp.Column):
            shadow = keep.get(column.name.lower())
            if column.table or shadow is None:
                continue
            if not (isinstance(shadow, exp.Column) and shadow.name.lower() == column.name.lower()):
                missing = True
        if isinstance(value, exp.Column | exp.Func | exp.Literal | exp.Paren):
            return value.copy()
        return exp.paren(value.copy())

    new = node.copy().transform(swap)
    return None if missing else new


def aggregate_source(select: exp.Select) -> None:
    """Merge an outer SELECT that only projects, filters, orders and limits into its aggregate.

    ``SELECT d, n FROM (SELECT district AS d, count(*) AS n FROM t GROUP BY 1) x
    WHERE n > 5 ORDER BY n`` is ``SELECT district AS d, count(*) AS n FROM t GROUP BY
    district HAVING count(*) > 5 ORDER BY n``.  Left as written (and so refused by
    the guard) unless: the outer reads one derived table or its only CTE, with no
    join, aggregate, GROUP BY, HAVING, DISTINCT, window or subquery of its own; the
    inner aggregates, names every output once, and neither orders, limits nor refers
    to its own output names (whose meaning could change once the outputs change).
    """
    if not _only(select, _OUTER_ARGS):
        return
    found = _inner_of(select)
    if found is None:
        return
    inner, name = found
    if not _aggregating(inner) or inner.find(exp.Window, exp.Subquery):
        return
    outer_parts = [*select.expressions, select.args.get("where"), select.args.get("order")]
    for part in outer_parts:
        if part is not None and part.find(exp.AggFunc, exp.Window, exp.Subquery):
            return
    outputs = _outputs(inner)
    group = _explicit_group(inner)
    if outputs is None or (group is None and inner.args.get("group") is not None):
        return
    aliases = _aliases(outputs)
    for part in (inner.args.get(a) for a in ("where", "having", "joins")):
        for piece in part if isinstance(part, list) else [part]:
            if piece is None:
                continue
            for column in piece.find_all(exp.Column):
                if not column.table and column.name.lower() in aliases:
                    return
    for value in outputs.values():
        for column in value.find_all(exp.Column):
            if not column.table and column.name.lower() in aliases:
                return  # an output that reads another output (a lateral alias)
    if group is not None:
        for column in group.find_all(exp.Column):
            if not column.table and column.name.lower() in aliases:
                return

    projections: list[exp.Expr] = []
    for projection in select.expressions:
        if isinstance(projection, exp.Star):
            if len(select.expressions) != 1:
                return
            projections = [p.copy() for p in inner.expressions]
            break
        if isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
            return
        substituted = _substitute(projection.unalias(), name, outputs)
        if substituted is None:
            return
        projections.append(_named(projection, substituted))
    names = {p.alias_or_name.lower(): p.unalias() for p in projections}

    merged = inner.copy()
    merged.set("expressions", projections)
    merged.set("group", group if group is not None and group.expressions else None)
    where = select.args.get("where")
    if where is not None:
        condition = _substitute(where.this, name, outputs)
        if condition is None:
            return
        merged.set("having", exp.Having(this=_conjoined(merged.args.get("having"), condition)))
    order = select.args.get("order")
    if order is not None:
        new_order = _substitute(order, name, outputs, keep=names)
        if new_order is None:
            return
        merged.set("order", new_order)
    _install(select, merged)


def _named(projection: exp.Expr, value: exp.Expr) -> exp.Expr:
    """``value`` (the output substituted) under the name ``projection`` has in the outer
    SELECT: its alias, its column's name, or, as DuckDB names an output it is not told to
    name, its text with functions in lower case (``sum(w)``)."""
    if isinstance(projection, exp.Alias):
        output = projection.alias
    elif isinstance(projection, exp.Column):
        output = projection.name
    else:
        output = projection.sql(dialect="duckdb", normalize_functions="lower")
    same = isinstance(value, exp.Column) and value.name == output
    return value if same else exp.alias_(value.unnest(), output, quoted=True)


def _conjoined(clause: exp.Expr | None, condition: exp.Expr) -> exp.Expr:
    """The merged SELECT's WHERE or HAVING condition and the outer's, both to hold."""
    if clause is None:
        return condition
    return exp.and_(exp.paren(clause.this.copy()), exp.paren(condition))


def _install(select: exp.Select, merged: exp.Select) -> None:
    """Make ``select`` the merged query in place, keeping its own LIMIT and OFFSET."""
    for arg in ("limit", "offset"):
        clause = select.args.get(arg)
        merged.set(arg, clause.copy() if clause is not None else None)
    for key in list(select.args):
        select.set(key, None)
    for key, value in merged.args.items():
        select.set(key, value)


#: The clauses an aggregating outer SELECT may have to take in the projection it reads.
_AGGREGATING_OUTER = frozenset(
    {"expressions", "from_", "where", "group", "having", "order", "limit", "offset", "with_"}
)
#: The clauses the projecting inner SELECT may have.
_PROJECTING_INNER = frozenset({"expressions", "from_", "joins", "where"})


def _computed_argument(select: exp.Select, name: str, outputs: dict[str, exp.Expr]) -> bool:
    """Does a sum, mean, variance or quantile of the outer read an inner output that is
    computed, not a column?  The guard refuses that through a CTE (``column_rules``), so
    taking the inner in never refuses what was answered: ``count(f)`` of a computed
    ``CASE`` column is answered through it (lineage reads it as a filter)."""
    for agg in select.find_all(*VALUE_AGGREGATES, *QUANTILES):
        for column in agg.find_all(exp.Column):
            if column.table and column.table.lower() != name:
                continue
            value = outputs.get(column.name.lower())
            if value is not None and not isinstance(value, exp.Column):
                return True
    return False


def _reads_own_aliases(inner: exp.Select, outputs: dict[str, exp.Expr]) -> bool:
    """Does the inner's WHERE, a join or an output read one of its own output names (a
    lateral alias, ``… district AS a … WHERE a = 'D01'``)?"""
    aliases = _aliases(outputs)
    parts = [inner.args.get("where"), *(inner.args.get("joins") or []), *outputs.values()]
    return any(
        not column.table and column.name.lower() in aliases
        for part in parts
        if part is not None
        for column in part.find_all(exp.Column)
    )


def _plainly_named(projection: exp.Expr) -> bool:
    """An output whose name survives the merge as DuckDB gives it: aliased, a column, or
    one aggregate call of columns (``avg(m)``: DuckDB writes ``(avg(m) * 2)`` and FILTER
    clauses its own way)."""
    if isinstance(projection, exp.Alias | exp.Column):
        return True
    return isinstance(projection, exp.AggFunc) and all(
        isinstance(a, exp.Column | exp.Star) for a in projection.args.values() if a
    )


def projecting_source(select: exp.Select) -> None:
    """Take a projecting derived table or CTE into the aggregating SELECT that reads it,
    where an aggregate reads one of its computed columns.

    ``WITH t AS (SELECT coalesce(x, 120) AS m FROM d WHERE …) SELECT avg(m) FROM t`` is
    ``SELECT avg(coalesce(x, 120)) AS … FROM d WHERE …``: the aggregate then reads the
    expression itself, in the forms ``normalize.py`` and the guard know.  Left as written
    unless: the outer reads one derived table or its only CTE, with no join, window or
    subquery, and an aggregate of the outer reads an inner output that is not a bare
    column; the inner neither aggregates, groups, orders, limits nor deduplicates, has no
    window or subquery, names every output once and reads none of its own output names;
    each column the outer names is one of its outputs (an ORDER BY key may also name an
    outer output), and each outer output is aliased, a column or one aggregate call.
    The outer's WHERE is added to the inner's (both filter the same rows); its outputs
    keep their names; its GROUP BY, HAVING, ORDER BY and LIMIT stay (review, December
    2026: an outer alias in HAVING, or an inner WHERE reading an inner alias, rebound to
    another column once merged).
    """
    if not _only(select, _AGGREGATING_OUTER):
        return
    clauses = [select.args.get(c) for c in ("where", "group", "having", "order")]
    if any(
        p is not None and p.find(exp.Window, exp.Subquery) for p in [*select.expressions, *clauses]
    ):
        return
    found = _inner_of(select)
    if found is None:
        return
    inner, name = found
    if not _only(inner, _PROJECTING_INNER) or _aggregating(inner):
        return
    if inner.find(exp.Window, exp.Subquery, exp.AggFunc):
        return
    outputs = _outputs(inner)
    if outputs is None or not _computed_argument(select, name, outputs):
        return
    if _reads_own_aliases(inner, outputs):
        return  # DuckDB binds a WHERE's alias to the inner's output: a merge would rebind it
    projections: list[exp.Expr] = []
    for projection in select.expressions:
        value = _substitute(projection.unalias(), name, outputs)
        if value is None or not _plainly_named(projection):
            return
        projections.append(_named(projection, value))
    names = {p.alias_or_name.lower() for p in projections}
    merged = inner.copy()
    merged.set("expressions", projections)
    where = select.args.get("where")
    if where is not None:
        condition = _substitute(where.this, name, outputs)
        if condition is None:
            return
        merged.set("where", exp.Where(this=_conjoined(merged.args.get("where"), condition)))
    for clause in ("group", "having"):
        part = select.args.get(clause)
        if part is None:
            continue
        # Every name an inner output (an outer alias here could bind to a base column
        # of that name once merged: refused as written instead).
        new = _substitute(part, name, outputs)
        if new is None:
            return
        merged.set(clause, new)
    order = select.args.get("order")
    if order is not None:
        keys = []
        for key in order.expressions:
            column = key.this if isinstance(key, exp.Ordered) else None
            if isinstance(column, exp.Column) and not column.table and column.name.lower() in names:
                keys.append(key.copy())  # an output by its name, as it was
                continue
            new = _substitute(key, name, outputs)
            if new is None:
                return
            keys.append(new)
        merged.set("order", exp.Order(expressions=keys))
    for agg in merged.find_all(exp.AggFunc):
        if isinstance(agg.this, exp.Paren):  # sum((2 * x)): the argument as written inside
            agg.set("this", agg.this.this)
    _install(select, merged)
