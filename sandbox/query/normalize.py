# Over 400 lines: each equivalent form the guard reads, beside the others it must not disturb.
"""Equivalent forms of analyst queries the guard's rules read, made before the guard.

Shapes analysts write whose meaning is one the guard already accepts in
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
  expressions; the outer WHERE becomes HAVING): ``merge_source.py``;
- a **projecting derived table or CTE** whose computed column an outer aggregate reads:
  taken into the outer (``merge_source.projecting_source``), so the aggregate reads the
  expression in the forms below;
- ``sum``, ``avg``, ``count`` of ``coalesce(x, 0)`` as the aggregates of ``x``;
- ``sum`` and ``avg`` of ``a ± b`` (measures combined in a row, scaled by numbers) as
  aggregates of each (``measure_terms.py``);
- ``sum`` and ``avg`` of a column times or divided by a nonzero number, as the column's
  aggregate scaled after (``scaled_measure``); of a column (or a column so scaled) plus
  or minus a number, as the column's aggregate shifted after (``shifted_measure``);
- a cast of a bare column to a float inside a sum, mean, variance or quantile, as the
  column (``float_cast``); ``SELECT DISTINCT`` of plain outputs as a ``GROUP BY`` of
  them (``distinct_as_groups``);
- a comma join with a one-row aggregate (``FROM a, b`` where ``b`` totals ``a``): each
  ``b.x`` as a scalar subquery, a total ``parts.py`` releases on its own (``totals.py``);
- aggregates over an aggregating CTE or derived table, as aggregates over its rows
  grouped coarser (a rollup, or a per-entity stage): ``rollup.py``.

The guard checks the rewritten query, so the privacy rules hold whatever the
rewrite produces; the conditions here keep its answer the analyst's.  Pure functions.
"""

from __future__ import annotations

from sqlglot import exp

from sandbox.query.advice import advise
from sandbox.query.comoments import FLOAT_CASTS
from sandbox.query.measure_terms import linear_measures
from sandbox.query.merge_source import aggregate_source, projecting_source
from sandbox.query.nodes import (
    QUANTILES,
    VALUE_AGGREGATES,
    in_window,
    literal_number,
    own_filter,
    with_filter,
)
from sandbox.query.rollup import rollup
from sandbox.query.totals import cross_joined_totals

__all__ = [
    "MAX_OFFSET",
    "aggregate_source",
    "coalesce_zero",
    "implicit_joins",
    "normalize",
    "offset_into_limit",
    "scaled_measure",
    "shifted_measure",
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
    for ignore in list(root.find_all(exp.IgnoreNulls)):
        if isinstance(ignore.this, exp.AnyValue):
            # sqlglot reads DuckDB's any_value(x) as IGNORE NULLS(any_value(x)); DuckDB's
            # any_value already skips NULLs, so the bare call means the same.
            ignore.replace(ignore.this)
    projecting_source(root)
    distinct_as_groups(root)
    cross_joined_totals(root)
    rollup(root)
    aggregate_source(root)
    implicit_joins(root)
    offset_into_limit(root)
    for agg in list(root.find_all(exp.Sum, exp.Avg, exp.Count)):
        coalesce_zero(agg)
    for agg in list(root.find_all(exp.Sum, exp.Avg)):
        linear_measures(agg)
    for agg in list(root.find_all(exp.Sum, exp.Avg)):
        shifted_measure(agg)
    for agg in list(root.find_all(exp.Sum, exp.Avg)):
        scaled_measure(agg)
    for measured in list(root.find_all(*VALUE_AGGREGATES, *QUANTILES)):
        float_cast(measured)
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
        earlier = set(names[:i])
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
    return literal_number(node) == 0


def coalesce_zero(agg: exp.Expr) -> None:
    """``sum``, ``avg`` and ``count`` of ``coalesce(x, 0)`` (and of ``coalesce(x, c)``,
    :func:`_coalesce_constant`), in the forms the rewrite knows.

    ``count(coalesce(x, c))`` (a constant c) is ``count(*) FILTER (WHERE coalesce(x, c)
    IS NOT NULL)``, so x is still checked as a filter; ``sum(coalesce(x, 0))``
    is ``sum(x)``; ``avg(coalesce(x, 0))`` is ``sum(x) / count(*)`` (the NULLs count as
    zeros).  Equal wherever a row has a value; NULL rather than 0 where every value of
    the group is NULL (as ``sum(CASE … ELSE 0 END)`` in dialects.py).  A ``FILTER``
    stays on each aggregate made.  Other arguments are left as written.
    """
    arg = agg.this
    if isinstance(arg, exp.Case):
        arg = _null_filled(arg) or arg
    if not isinstance(arg, exp.Coalesce) or agg.args.get("expressions"):
        return
    if len(arg.expressions) != 1:
        return
    (fallback,) = arg.expressions
    if isinstance(agg, exp.Count):
        if not isinstance(fallback, exp.Literal | exp.Boolean):
            return
        # count(coalesce(x, c)) counts the rows where coalesce(x, c) is not NULL: written
        # so, as a FILTER, the guard still checks x (an identifier or an L4 column named
        # here is refused, not rewritten away).
        outer = agg.parent
        present = exp.Not(this=exp.Is(this=arg.copy(), expression=exp.Null()))
        if isinstance(outer, exp.Filter) and isinstance(outer.expression, exp.Where):
            outer.expression.set("this", exp.and_(outer.expression.this.copy(), present))
            agg.replace(exp.Count(this=exp.Star()))
            return
        agg.replace(exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=present)))
        return
    value = arg.this.copy()
    if not _zero(fallback):
        _coalesce_constant(agg, value, fallback)
        return
    if isinstance(agg, exp.Sum):
        agg.set("this", value)
        return
    where, target = own_filter(agg)
    ratio = exp.Div(
        this=with_filter(exp.Sum(this=value), where),
        expression=with_filter(exp.Count(this=exp.Star()), where),
    )
    target.replace(exp.paren(ratio))


def _null_filled(case: exp.Case) -> exp.Coalesce | None:
    """``coalesce(x, c)`` for ``CASE WHEN x IS NULL THEN c ELSE x END`` (x a column, c a
    constant), the same value written longhand; None for any other CASE."""
    ifs = case.args.get("ifs") or []
    default = case.args.get("default")
    if case.this is not None or len(ifs) != 1 or not isinstance(default, exp.Column):
        return None
    condition, then = ifs[0].this, ifs[0].args.get("true")
    if not (
        isinstance(condition, exp.Is)
        and isinstance(condition.expression, exp.Null)
        and condition.this == default
        and isinstance(then, exp.Literal | exp.Neg)
        and literal_number(then) is not None
    ):
        return None
    filled = exp.Coalesce(this=default.copy(), expressions=[then.copy()])
    case.replace(filled)
    return filled


def _coalesce_constant(agg: exp.Expr, value: exp.Expr, fallback: exp.Expr) -> None:
    """``sum(coalesce(x, c))`` and ``avg(coalesce(x, c))`` for a number ``c`` other than 0:
    ``sum(x) + c·(count(*) - count(x))`` (each NULL counted as ``c``), over ``count(*)``
    for the average; statistics the rewrite knows, combined after release.  NULL where
    every value of the group is NULL, as for ``c = 0``.  Anything else is left as written."""
    number = literal_number(fallback)
    if number is None or not isinstance(agg, exp.Sum | exp.Avg):
        return
    where, target = own_filter(agg)
    present = with_filter(exp.Count(this=value.copy()), where)
    rows = with_filter(exp.Count(this=exp.Star()), where)
    missing = exp.paren(exp.Sub(this=rows, expression=present))
    total = exp.Add(
        this=with_filter(exp.Sum(this=value), where),
        expression=exp.Mul(this=fallback.copy(), expression=missing),
    )
    if isinstance(agg, exp.Sum):
        target.replace(exp.paren(total))
        return
    rows = with_filter(exp.Count(this=exp.Star()), where)
    target.replace(exp.paren(exp.Div(this=exp.paren(total), expression=rows)))


def _factor(node: exp.Expr) -> bool:
    """A nonzero number written as a literal (a sign allowed)."""
    return bool(literal_number(node))


def _measured_column(node: exp.Expr) -> exp.Column | None:
    """The column of ``x``, ``c * x``, ``x * c`` or ``x / c`` (``c`` a nonzero number)."""
    if isinstance(node, exp.Column):
        return node
    if isinstance(node, exp.Mul | exp.Div):
        left, right = node.this, node.expression
        if isinstance(node, exp.Mul) and _factor(left) and isinstance(right, exp.Column):
            return right
        if _factor(right) and isinstance(left, exp.Column):
            return left
    return None


def scaled_measure(agg: exp.Expr) -> None:
    """``sum(c * x)``, ``sum(x * c)`` and ``sum(x / c)`` (``avg`` alike) as the aggregate
    of the bare column scaled after: ``c * sum(x)``, ``sum(x) / c``.

    Analysts scale units inside the aggregate (``sum(claim_amount / 10000)`` in 万元); a
    sum or mean is linear, so the value is the same for a nonzero constant ``c`` written
    as a number (the order of floating-point rounding aside), and the guard then reads
    the column's own aggregate (its bounds and noise as for ``sum(x)``).  A ``FILTER``
    stays on the aggregate.  Anything else (a column times a column, ``x + c``, ``c / x``,
    ``DISTINCT``) is left as written.
    """
    arg = agg.this
    if agg.args.get("expressions") or not isinstance(arg, exp.Mul | exp.Div):
        return
    if in_window(agg):
        return  # a window's function over released rows: written as it is
    column = _measured_column(arg)
    if column is None:
        return
    factor = arg.expression if column is arg.this else arg.this
    where, target = own_filter(agg)
    inner = with_filter(type(agg)(this=column.copy()), where)
    scaled = (
        exp.Div(this=inner, expression=factor.copy())
        if isinstance(arg, exp.Div)
        else exp.Mul(this=factor.copy(), expression=inner)
    )
    target.replace(exp.paren(scaled))


def shifted_measure(agg: exp.Expr) -> None:
    """``avg(x + c)``, ``avg(x - c)``, ``avg(c + x)`` and ``avg(c - x)`` as ``avg(x) + c``,
    ``avg(x) - c``, ``c + avg(x)`` and ``c - avg(x)``; ``sum`` alike, with ``c`` times
    ``count(x)``, the rows the sum adds (``sum(x + c)`` is ``sum(x) + c * count(x)``).

    Analysts shift units inside the aggregate (``avg(2024 - birth_year)`` for an age,
    ``avg(score - 50)``); a mean and a sum are linear, so the value is the same for a
    number ``c`` written as a literal (the order of floating-point rounding aside), and
    the guard then reads the column's own aggregates.  ``x`` may itself be a column
    scaled by a number (``scaled_measure`` then reads it).  A ``FILTER`` stays on each
    aggregate made.  Anything else is left as written.
    """
    arg = agg.this
    if agg.args.get("expressions") or not isinstance(arg, exp.Add | exp.Sub):
        return
    if in_window(agg):
        return  # a window's function over released rows: written as it is
    left, right = arg.this, arg.expression
    if literal_number(right) is not None and _measured_column(left) is not None:
        value, shift, shift_first = left, right, False
    elif literal_number(left) is not None and _measured_column(right) is not None:
        value, shift, shift_first = right, left, True
    else:
        return
    column = _measured_column(value)
    assert column is not None
    where, target = own_filter(agg)
    measured = with_filter(type(agg)(this=value.copy()), where)
    offset: exp.Expr = shift.copy()
    if isinstance(agg, exp.Sum):
        counted = with_filter(exp.Count(this=column.copy()), where)
        offset = exp.Mul(this=shift.copy(), expression=counted)
    operator = type(arg)
    made = (
        operator(this=offset, expression=measured)
        if shift_first
        else operator(this=measured, expression=offset)
    )
    target.replace(exp.paren(made))


# -- casts to a float inside an aggregate, SELECT DISTINCT ----------------------------


def float_cast(agg: exp.Expr) -> None:
    """``avg(CAST(x AS DOUBLE))`` (``x::FLOAT``, ``TRY_CAST``) as ``avg(x)``, for a bare column.

    Analysts cast to avoid integer arithmetic; the rewrite reads every value of a sum,
    mean, variance or quantile as a DOUBLE already, so the cast changes nothing it
    computes.  Other casts (to an integer or a decimal, which round) are left as written.
    """
    cast = agg.this
    if not isinstance(cast, exp.Cast) or not isinstance(cast.this, exp.Column):
        return
    if cast.to.this not in FLOAT_CASTS or cast.to.expressions:
        return
    agg.set("this", cast.this.copy())


def _dataset(source: exp.Expr) -> bool:
    """A dataset's table (``domain.table``: a CTE's name is never qualified)."""
    return isinstance(source, exp.Table) and bool(source.args.get("db"))


def distinct_as_groups(select: exp.Select) -> None:
    """``SELECT DISTINCT a, b FROM …`` with no aggregate and no GROUP BY, over datasets'
    tables, as ``SELECT a, b FROM … GROUP BY a, b``: the same rows (each combination
    once), in the form the guard reads (each output a group key, the groups released as
    any query's)."""
    distinct = select.args.get("distinct")
    if not isinstance(distinct, exp.Distinct) or distinct.args.get("on"):
        return
    if select.args.get("group") or any(p.find(exp.AggFunc) for p in select.expressions):
        return
    if any(isinstance(p.unalias(), exp.Star) for p in select.expressions):
        return
    sources = [select.args.get("from_"), *select.args.get("joins", [])]
    if not all(s is not None and _dataset(s.this) for s in sources):
        return  # over a derived table or CTE its outputs may be aggregates: as written
    select.set("distinct", None)
    select.set("group", exp.Group(expressions=[p.unalias().copy() for p in select.expressions]))


# -- OFFSET ----------------------------------------------------------------------------


def _whole(value: exp.Expr | None, most: int) -> bool:
    return isinstance(value, exp.Literal) and value.is_int and 0 <= int(value.name) <= most


def offset_into_limit(select: exp.Select) -> None:
    """``LIMIT n OFFSET m`` (whole numbers) as one LIMIT node carrying its offset; ``OFFSET
    m`` alone as ``LIMIT`` :data:`MAX_OFFSET` with it.

    The rewrite applies both to the released rows, in their released order (an
    offset over released rows discloses nothing a LIMIT does not).
    """
    offset, limit = select.args.get("offset"), select.args.get("limit")
    if isinstance(offset, exp.Offset) and limit is None and _whole(offset.expression, MAX_OFFSET):
        # OFFSET m alone: every released row after the first m (no LIMIT is as large)
        limit = exp.Limit(expression=exp.Literal.number(MAX_OFFSET))
        select.set("limit", limit)
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
