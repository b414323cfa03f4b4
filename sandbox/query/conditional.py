"""Conditional aggregates read as their ``FILTER`` form, where exactly equal.

Analysts count and share rows under a condition in several spellings:
``sum(CASE WHEN c THEN 1 ELSE 0 END)``, ``count_if(c)``, ``avg(CASE WHEN c THEN 1.0
ELSE 0.0 END)``, ``avg((c)::INT)``.  The guard's rules and the rewrite know one form,
``agg(x) FILTER (WHERE c)`` (a FILTERed cell is a finer group, withheld below k), so
each spelling is rewritten into it, in place, where the meaning is the same, and left
as written otherwise (the guard then refuses it by its own rule).  Called by
``dialects.respell`` before the rest of the normalisation.  Pure functions.
"""

from __future__ import annotations

from sqlglot import exp

from sandbox.query.nodes import AGGREGATES, in_window, own_filter

__all__ = ["as_filters", "number_is"]


def as_filters(root: exp.Expr) -> None:
    """Every conditional aggregate under ``root`` as its FILTER form, in place."""
    for agg in list(root.find_all(*_CONDITIONAL)):
        _case_to_filter(agg)
    for agg in list(root.find_all(exp.Sum, exp.Avg)):
        _cast_condition(agg)
    for counted in list(root.find_all(exp.CountIf)):
        _count_if_to_filter(counted)


#: Aggregates whose ``agg(CASE WHEN c THEN x END)`` is ``agg(x) FILTER (WHERE c)``: they
#: skip NULLs, and a row that fails c gives NULL.
_CONDITIONAL: tuple[type[exp.Expr], ...] = AGGREGATES


def _when(node: exp.Expr) -> tuple[exp.Expr, exp.Expr, exp.Expr | None] | None:
    """(condition, value, else) of a one-branch ``CASE WHEN`` or ``if(c, x, y)``."""
    if isinstance(node, exp.Case) and node.this is None and len(node.args["ifs"]) == 1:
        (branch,) = node.args["ifs"]
        return branch.this, branch.args["true"], node.args.get("default")
    if isinstance(node, exp.If) and not isinstance(node.parent, exp.Case):
        return node.this, node.args["true"], node.args.get("false")
    return None


def _case_to_filter(agg: exp.Expr) -> None:
    """``sum(CASE WHEN c THEN x END)`` as ``sum(x) FILTER (WHERE c)``, where exactly equal.

    Equal when the CASE has one branch and no ELSE (or ELSE NULL): the aggregate skips
    the NULL rows the condition rejects.  Also ``sum(CASE WHEN c THEN 1 ELSE 0 END)`` and
    ``count(CASE WHEN c THEN 1 END)``, the counting idioms, as ``count(*) FILTER (WHERE c)``,
    and ``sum(CASE WHEN c THEN x ELSE 0 END)`` as ``sum(x) FILTER (WHERE c)`` (equal
    wherever a row matches; NULL, not 0, where none does); ``avg(CASE WHEN c THEN 1 ELSE
    0 END)``, a share of rows, as ``count(*) FILTER (WHERE c) / count(*)`` (``_share``).
    Numbers by value: ``1.0`` and ``0.0`` as ``1`` and ``0``.
    The FILTER form is the one the guard's rules and the rewrite know (a FILTERed cell
    is a finer group, suppressed below k).
    """
    arg = agg.this
    if in_window(agg):
        return  # a window's function over released rows: written as it is
    distinct = isinstance(arg, exp.Distinct) and len(arg.expressions) == 1
    inner = arg.expressions[0] if distinct else arg
    parts = _when(inner) if isinstance(inner, exp.Expr) else None
    if parts is None or agg.args.get("expressions"):
        return
    condition, value, otherwise = parts
    no_else = otherwise is None or isinstance(otherwise, exp.Null)
    one, zero = number_is(value, 1), number_is(otherwise, 0)
    constant = isinstance(value, exp.Literal | exp.Boolean)
    if isinstance(agg, exp.Avg) and not distinct and one and zero:
        _share(agg, condition.copy())
        return
    if isinstance(agg, exp.Count) and not distinct and no_else and constant:
        new: exp.Expr = exp.Count(this=exp.Star())
    elif isinstance(agg, exp.Sum) and not distinct and one and zero:
        new = exp.Count(this=exp.Star())
    elif (no_else or (isinstance(agg, exp.Sum) and zero)) and not isinstance(value, exp.Null):
        # (a sum's ELSE 0 adds nothing, but where no row matches it says 0: the FILTER
        # form says NULL, as it says for a cell of fewer than k entities, withheld)
        body = exp.Distinct(expressions=[value.copy()]) if distinct else value.copy()
        new = type(agg)(this=body)
    else:
        return
    _filtered(agg, new, condition.copy())


def _condition(node: exp.Expr) -> exp.Expr | None:
    """``node`` without its parentheses, where it is written as a condition (a comparison,
    ``IN``, ``BETWEEN``, ``LIKE``, ``IS``, ``AND``, ``OR``, ``NOT``), else None."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Predicate | exp.Connector | exp.Not):
        return node
    return None


def _cast_condition(agg: exp.Expr) -> None:
    """``sum((c)::INT)`` and ``avg((c)::INT)`` (any numeric type, ``CAST`` or ``TRY_CAST``):
    a condition cast to a number is 1 where it holds, 0 where it fails and NULL where it
    is NULL.  So the sum counts the rows where ``c`` holds, ``count(*) FILTER (WHERE c)``
    (0 rather than NULL where ``c`` is NULL on every row of the group), and the mean is
    the share of them among the rows where ``c`` is not NULL, ``count(*) FILTER (WHERE c)
    / nullif(count(*) FILTER (WHERE (c) IS NOT NULL), 0)`` (exactly: a mean skips NULLs,
    and is NULL where ``c`` is NULL on every row).  An outer FILTER stays on each count.
    Other casts are left as written.
    """
    cast = agg.this
    if agg.args.get("expressions") or not isinstance(cast, exp.Cast):  # TryCast is a Cast
        return
    if in_window(agg):
        return  # a window's function over released rows: written as it is
    condition = _condition(cast.this)
    if condition is None or cast.to.this not in exp.DataType.NUMERIC_TYPES:
        return
    if isinstance(agg, exp.Sum):
        _filtered(agg, exp.Count(this=exp.Star()), condition.copy())
        return
    where, target = own_filter(agg)
    base = None if where is None else where.this
    known = exp.Not(this=exp.Is(this=exp.paren(condition.copy()), expression=exp.Null()))
    # NULL, as avg says, where c is NULL on every row (0 / 0 would be NaN)
    below = exp.Nullif(this=_rows_where(base, known), expression=exp.Literal.number(0))
    ratio = exp.Div(this=_rows_where(base, condition.copy()), expression=below)
    target.replace(exp.paren(ratio))


def number_is(node: exp.Expr | None, value: int) -> bool:
    """A numeric literal equal to ``value`` (``1``, ``1.0``, ``1e0``)."""
    if not isinstance(node, exp.Literal) or node.is_string:
        return False
    try:
        return float(node.name) == value
    except ValueError:
        return False


def _share(agg: exp.Expr, condition: exp.Expr) -> None:
    """``avg(CASE WHEN c THEN 1 ELSE 0 END)``, the share of rows where ``c`` holds, as
    ``count(*) FILTER (WHERE c) / count(*)``: the CASE is never NULL (a row where ``c``
    is NULL gives 0, as ``c`` is not true there), so the average is over every row; an
    outer FILTER stays on both counts."""
    where, target = own_filter(agg)
    base = None if where is None else where.this
    ratio = exp.Div(this=_rows_where(base, condition), expression=_rows_where(base, None))
    target.replace(exp.paren(ratio))


def _rows_where(base: exp.Expr | None, test: exp.Expr | None) -> exp.Expr:
    """``count(*) FILTER (WHERE base AND test)``, either condition optional (a copy)."""
    if base is not None and test is not None:
        condition: exp.Expr | None = exp.and_(exp.paren(base.copy()), exp.paren(test))
    else:
        condition = test if test is not None else base.copy() if base is not None else None
    rows = exp.Count(this=exp.Star())
    return (
        rows if condition is None else exp.Filter(this=rows, expression=exp.Where(this=condition))
    )


def _count_if_to_filter(node: exp.CountIf) -> None:
    """DuckDB's ``count_if(c)`` (also ``countif``) as ``count(*) FILTER (WHERE c)``: both
    count the rows where ``c`` is true (not false, not NULL); an outer FILTER is ANDed."""
    _filtered(node, exp.Count(this=exp.Star()), node.this.copy())


def _filtered(agg: exp.Expr, new: exp.Expr, condition: exp.Expr) -> None:
    """Replace ``agg`` by ``new FILTER (WHERE condition)``, ANDed with its own FILTER."""
    where, target = own_filter(agg)
    if where is not None:
        condition = exp.and_(exp.paren(where.this.copy()), exp.paren(condition))
    target.replace(exp.Filter(this=new, expression=exp.Where(this=condition)))
