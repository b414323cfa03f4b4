"""Sums and means of several measures in one row, read as aggregates of each measure.

Analysts combine measures row by row inside an aggregate: ``avg(loan_amount -
installment)``, ``sum(wage_total + bonus)``, ``sum(coalesce(joint_income, income))``.
The guard reads aggregates of one column; a sum is linear and a ``coalesce`` picks one
column per row, so each form is rewritten, in place, into aggregates of single columns
over the rows the original reads, combined after release:

- ``sum(a ± b ± …)`` (each term a column, or a column times or divided by a nonzero
  number) is ``sum(a) ± sum(b) ± …``, every sum ``FILTER (WHERE a IS NOT NULL AND b IS
  NOT NULL …)``: the row-level expression is NULL, and skipped, wherever one term is;
  ``avg`` is that over ``count(*)`` under the same FILTER.  One FILTER for every term,
  so the sums share one cell (``disclosure``'s cell test) and no row is read twice.
- ``sum(coalesce(x₁, x₂, …))`` (columns) adds ``sum(xᵢ) FILTER (WHERE x₁ … xᵢ₋₁ IS
  NULL)``, each row's first value; the whole is NULL only where every part is (no row
  has a value), as the original: ``coalesce(s₁ + coalesce(s₂, 0) + …, s₂ + …, …)``.
  ``avg`` divides by ``count(*) FILTER (WHERE x₁ IS NOT NULL OR x₂ IS NOT NULL …)``.

An aggregate's own ``FILTER`` is kept on every part.  Only plain column terms are read
(a constant term is ``shifted_measure``'s, a constant last ``coalesce`` argument
``normalize._coalesce_constant``'s); anything else is left as written, and the guard
judges it by its own rules.  The guard then checks every sum made (a sum of an
identifier or a dimension is refused as written by hand would be), so the rewrite
changes what is answered, never what may be.  Pure functions; called by ``normalize``.
"""

from __future__ import annotations

from sqlglot import exp

from sandbox.query.nodes import in_window, literal_number, own_filter, with_filter

__all__ = ["coalesced_measures", "linear_measures", "measured_column"]


def measured_column(term: exp.Expr) -> exp.Column | None:
    """The column of ``x``, ``c * x``, ``x * c`` or ``x / c`` (``c`` a nonzero number)."""
    if isinstance(term, exp.Paren):
        return measured_column(term.this)
    if isinstance(term, exp.Column):
        return term
    if isinstance(term, exp.Mul | exp.Div):
        left, right = term.this, term.expression
        if isinstance(term, exp.Mul) and literal_number(left) and isinstance(right, exp.Column):
            return right
        if literal_number(right) and isinstance(left, exp.Column):
            return left
    return None


def _terms(node: exp.Expr, sign: int = 1) -> list[tuple[int, exp.Expr]] | None:
    """``a ± b ± …`` flattened to signed terms, each a (scaled) column; None otherwise."""
    if isinstance(node, exp.Paren):
        return _terms(node.this, sign)
    if isinstance(node, exp.Add | exp.Sub):
        left = _terms(node.this, sign)
        right = _terms(node.expression, -sign if isinstance(node, exp.Sub) else sign)
        return None if left is None or right is None else left + right
    return [(sign, node)] if measured_column(node) is not None else None


def _not_null(column: exp.Expr) -> exp.Expr:
    return exp.Not(this=exp.Is(this=column.copy(), expression=exp.Null()))


def _present(columns: list[exp.Column], where: exp.Where | None) -> exp.Where:
    """``WHERE <own filter> AND c₁ IS NOT NULL AND …`` (each column once)."""
    seen: dict[str, exp.Column] = {}
    for column in columns:
        seen.setdefault(column.sql(), column)
    conditions = [_not_null(c) for c in seen.values()]
    if where is not None:
        conditions.insert(0, exp.paren(where.this.copy()))
    return exp.Where(this=exp.and_(*conditions))


def linear_measures(agg: exp.Expr) -> None:
    """``sum``/``avg`` of ``a ± b ± …`` (two columns or more) as sums of each, combined."""
    if not isinstance(agg, exp.Sum | exp.Avg) or agg.args.get("expressions") or in_window(agg):
        return
    terms = _terms(agg.this)
    if terms is None or len(terms) < 2:
        return
    own, target = own_filter(agg)
    where = _present([c for _, t in terms if (c := measured_column(t)) is not None], own)
    total: exp.Expr | None = None
    for sign, term in terms:
        part = with_filter(exp.Sum(this=term.copy()), where)
        if total is None:
            total = part if sign > 0 else exp.Neg(this=part)
        else:
            total = (exp.Add if sign > 0 else exp.Sub)(this=total, expression=part)
    assert total is not None
    if isinstance(agg, exp.Avg):
        rows = with_filter(exp.Count(this=exp.Star()), where)
        total = exp.Div(this=exp.paren(total), expression=_nonzero(rows))
    target.replace(exp.paren(total))


def _nonzero(count: exp.Expr) -> exp.Expr:
    return exp.Nullif(this=count, expression=exp.Literal.number(0))


def coalesced_measures(agg: exp.Expr) -> None:
    """``sum``/``avg`` of ``coalesce(x₁, x₂, …)`` (two columns or more) as each row's
    first value's sums, combined."""
    if not isinstance(agg, exp.Sum | exp.Avg) or agg.args.get("expressions") or in_window(agg):
        return
    arg = agg.this
    if not isinstance(arg, exp.Coalesce):
        return
    columns = [arg.this, *arg.expressions]
    if len(columns) < 2 or not all(isinstance(c, exp.Column) for c in columns):
        return
    own, target = own_filter(agg)
    parts: list[exp.Expr] = []
    for i, column in enumerate(columns):
        conditions: list[exp.Expr] = [
            exp.Is(this=c.copy(), expression=exp.Null()) for c in columns[:i]
        ]
        if own is not None:
            conditions.insert(0, exp.paren(own.this.copy()))
        where = exp.Where(this=exp.and_(*conditions)) if conditions else None
        parts.append(with_filter(exp.Sum(this=column.copy()), where))
    # NULL only where every part is: the first non-NULL part plus the later ones (as 0
    # where NULL), as sum(coalesce(…)) is NULL only over no value at all.
    candidates: list[exp.Expr] = []
    for i, first in enumerate(parts):
        running = first.copy()
        for later in parts[i + 1 :]:
            zeroed = exp.Coalesce(this=later.copy(), expressions=[exp.Literal.number(0)])
            running = exp.Add(this=running, expression=zeroed)
        candidates.append(running)
    total: exp.Expr = exp.Coalesce(this=candidates[0], expressions=candidates[1:])
    if isinstance(agg, exp.Avg):
        some = exp.or_(*(_not_null(c) for c in columns))
        if own is not None:
            some = exp.and_(exp.paren(own.this.copy()), exp.paren(some))
        rows = exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=some))
        total = exp.Div(this=total, expression=_nonzero(rows))
    target.replace(exp.paren(total))
