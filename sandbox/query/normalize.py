"""Equivalent forms of analyst queries the guard's rules read, made before the guard.

Three shapes analysts write whose meaning is one the guard already accepts in
another spelling; each is rewritten, in place, only when the equivalence is exact,
and left as written otherwise (the guard then refuses it by its own rule):

- an **implicit join** ``FROM a x, b y WHERE x.k = y.k AND ...``: every comma-joined
  source needs an equality between its qualified column and one of a source before
  it among the WHERE's top-level conjuncts; those become the ``JOIN ... ON``
  condition (an inner join with its condition in WHERE is the same join);
- ``LIMIT n OFFSET m`` on the released SELECT (whole numbers): the offset moves into
  the LIMIT node, which the rewrite applies to the released, ordered rows;
- an **aggregating derived table or CTE** read by an outer SELECT that only
  projects, computes over its columns, filters, orders and limits: the outer is
  merged into the inner (the inner's outputs substituted into the outer's
  expressions; the outer WHERE becomes HAVING).

The guard checks the rewritten query, so the privacy rules hold whatever the
rewrite produces; the conditions here keep its answer the analyst's.  Pure functions.
"""

from __future__ import annotations

from sqlglot import exp

from sandbox.query.advice import advise

__all__ = [
    "MAX_OFFSET",
    "aggregate_source",
    "coalesce_zero",
    "implicit_joins",
    "normalize",
    "offset_into_limit",
]

#: Larger offsets mean nothing (results are bounded far below), as for LIMIT.
MAX_OFFSET = 1_000_000_000


def normalize(root: exp.Expr) -> None:
    """Apply every rewrite of this module to the outermost SELECT, in place.

    Then ``advice.py``: shapes left as written that it recognises are refused with the
    guard's rule and the accepted way.
    """
    if not isinstance(root, exp.Select):
        advise(root)
        return
    aggregate_source(root)
    implicit_joins(root)
    offset_into_limit(root)
    for agg in list(root.find_all(exp.Sum, exp.Avg, exp.Count)):
        coalesce_zero(agg)
    advise(root)


# -- implicit joins --------------------------------------------------------------------


def _source_name(source: exp.Expr) -> str | None:
    if isinstance(source, exp.Table | exp.Subquery):
        return source.alias_or_name.lower() or None
    return None


def _comma_join(join: exp.Join) -> bool:
    """``FROM a, b``: a join with no kind, side, condition or method."""
    return not any(join.args.get(a) for a in join.args if a != "this")


def _conjuncts(condition: exp.Expr) -> list[exp.Expr]:
    return list(condition.flatten()) if isinstance(condition, exp.And) else [condition]


def _joins_on(condition: exp.Expr, name: str, earlier: set[str]) -> bool:
    """``x.k = y.k`` between a column of ``name`` and one of a source in ``earlier``."""
    eq = condition.unnest()
    if not isinstance(eq, exp.EQ):
        return False
    sides = (eq.this, eq.expression)
    if not all(isinstance(s, exp.Column) and s.table and not s.args.get("db") for s in sides):
        return False
    tables = [s.table.lower() for s in sides]
    return (tables[0] == name and tables[1] in earlier) or (
        tables[1] == name and tables[0] in earlier
    )


def implicit_joins(select: exp.Select) -> None:
    """``FROM a x, b y WHERE x.k = y.k AND rest`` as ``FROM a x JOIN b y ON x.k = y.k WHERE rest``.

    Only when every join of the SELECT is a comma join and each one has at least one
    key equality with a source before it; otherwise left as written.
    """
    joins = select.args.get("joins") or []
    where = select.args.get("where")
    from_ = select.args.get("from_")
    if not joins or where is None or from_ is None or not all(map(_comma_join, joins)):
        return
    names = [_source_name(from_.this), *(_source_name(j.this) for j in joins)]
    if None in names or len(set(names)) != len(names):
        return
    conjuncts = _conjuncts(where.this)
    used: set[int] = set()
    conditions = []
    for i in range(1, len(names)):
        earlier = set(names[:i])  # type: ignore[arg-type]
        found = [
            c
            for c in conjuncts
            if id(c) not in used and _joins_on(c, names[i], earlier)  # type: ignore[arg-type]
        ]
        if not found:
            return
        used.update(id(c) for c in found)
        conditions.append(found)
    for join, found in zip(joins, conditions, strict=True):
        join.set("on", exp.and_(*(c.unnest().copy() for c in found)))
    rest = [c.copy() for c in conjuncts if id(c) not in used]
    select.set("where", exp.Where(this=exp.and_(*rest)) if rest else None)


# -- coalesce(x, 0) inside an aggregate ------------------------------------------------


def _zero(node: exp.Expr) -> bool:
    if isinstance(node, exp.Neg):
        return _zero(node.this)
    if not (isinstance(node, exp.Literal) and not node.is_string):
        return False
    try:
        return float(node.name) == 0
    except ValueError:
        return False


def coalesce_zero(agg: exp.Expr) -> None:
    """``sum``, ``avg`` and ``count`` of ``coalesce(x, 0)``, in the forms the rewrite knows.

    ``count(coalesce(x, c))`` (a constant c) is ``count(*)``; ``sum(coalesce(x, 0))``
    is ``sum(x)``; ``avg(coalesce(x, 0))`` is ``sum(x) / count(*)`` (the NULLs count as
    zeros).  Equal wherever a row has a value; NULL rather than 0 where every value of
    the group is NULL (as ``sum(CASE … ELSE 0 END)`` in dialects.py).  A ``FILTER``
    stays on each aggregate made.  Other arguments are left as written.
    """
    arg = agg.this
    if not isinstance(arg, exp.Coalesce) or agg.args.get("expressions"):
        return
    if len(arg.expressions) != 1:
        return
    (fallback,) = arg.expressions
    if isinstance(agg, exp.Count):
        if not isinstance(fallback, exp.Literal | exp.Boolean):
            return
        agg.replace(exp.Count(this=exp.Star()))
        return
    if not _zero(fallback):
        return
    value = arg.this.copy()
    if isinstance(agg, exp.Sum):
        agg.set("this", value)
        return
    outer = agg.parent
    filtered = isinstance(outer, exp.Filter) and isinstance(outer.expression, exp.Where)

    def kept(new: exp.Expr) -> exp.Expr:
        if filtered:
            return exp.Filter(this=new, expression=outer.expression.copy())
        return new

    ratio = exp.Div(this=kept(exp.Sum(this=value)), expression=kept(exp.Count(this=exp.Star())))
    (outer if filtered else agg).replace(exp.paren(ratio))


# -- OFFSET ----------------------------------------------------------------------------


def _whole(value: exp.Expr | None, most: int) -> bool:
    return isinstance(value, exp.Literal) and value.is_int and 0 <= int(value.name) <= most


def offset_into_limit(select: exp.Select) -> None:
    """``LIMIT n OFFSET m`` (whole numbers) as one LIMIT node carrying its offset.

    The rewrite applies both to the released rows, in their released order (an
    offset over released rows discloses nothing a LIMIT does not).
    """
    offset, limit = select.args.get("offset"), select.args.get("limit")
    if not isinstance(offset, exp.Offset) or not isinstance(limit, exp.Limit):
        return
    if limit.args.get("offset") is not None or offset.args.get("expressions"):
        return
    if any(limit.args.get(a) for a in ("limit_options", "expressions", "this")):
        return
    if not _whole(offset.expression, MAX_OFFSET):
        return
    limit.set("offset", offset.expression.copy())
    select.set("offset", None)


# -- an aggregating derived table or CTE, merged into its outer SELECT -----------------

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
        column = n.name.lower()
        if not n.table and column in keep:
            return n  # an output of the outer SELECT, by name (ORDER BY)
        value = outputs.get(column)
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
        value = _substitute(projection.unalias(), name, outputs)
        if value is None:
            return
        output = projection.alias_or_name or projection.sql(dialect="duckdb")
        same = isinstance(value, exp.Column) and value.name == output
        projections.append(value if same else exp.alias_(value.unnest(), output, quoted=True))
    names = {p.alias_or_name.lower(): p.unalias() for p in projections}

    merged = inner.copy()
    merged.set("expressions", projections)
    merged.set("group", group if group is not None and group.expressions else None)
    where = select.args.get("where")
    if where is not None:
        condition = _substitute(where.this, name, outputs)
        if condition is None:
            return
        having = merged.args.get("having")
        both = (
            exp.and_(exp.paren(having.this.copy()), exp.paren(condition))
            if having is not None
            else condition
        )
        merged.set("having", exp.Having(this=both))
    order = select.args.get("order")
    if order is not None:
        new_order = _substitute(order, name, outputs, keep=names)
        if new_order is None:
            return
        merged.set("order", new_order)
    for arg in ("limit", "offset"):
        value = select.args.get(arg)
        merged.set(arg, value.copy() if value is not None else None)
    for key in list(select.args):
        select.set(key, None)
    for key, value in merged.args.items():
        select.set(key, value)
