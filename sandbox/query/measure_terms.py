"""Sums and means of several measures in one row, read as aggregates of each measure.

Analysts combine measures row by row inside an aggregate: ``avg(loan_amount -
installment)``, ``sum(wage_total + bonus)``, ``avg((a + b) / 2)``.  The guard reads
aggregates of one column; a sum is linear, so each such form is rewritten, in place, into
aggregates of single columns over the rows the original reads, combined after release:

- ``sum(t₁ ± t₂ ± …)``, each term a column, a number, or either times or divided by a
  nonzero number (a parenthesised sum of terms too, a leading ``-``, a float cast of a
  column), with at least two columns, is ``Σ ± sum(tᵢ)`` (a number ``c`` as ``c ·
  count(*)``), every part ``FILTER (WHERE a IS NOT NULL AND b IS NOT NULL …)``: the
  row's expression is NULL, and skipped, wherever one column is;
- ``avg`` is that over ``nullif(count(*), 0)`` under the same FILTER.

Every part has that one FILTER, so the parts share one cell (``disclosure``'s cell
test): a cell held back holds back the whole, never one term of it (a ``coalesce(a,
b)`` read as a sum per branch would lose the branch whose cell is held back, silently;
review, December 2026, so it is not read).  An aggregate's own ``FILTER`` is kept on
every part.  Anything else is left as written, and the guard judges it by its own rules.
The guard then checks every aggregate made (a sum of an identifier or a dimension is
refused as written by hand would be), so the rewrite changes what is answered, never
what may be.  Pure functions; called by ``normalize``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sandbox.query.comoments import FLOAT_CASTS
from sandbox.query.nodes import in_window, literal_number, own_filter, with_filter

__all__ = ["linear_measures", "not_null"]


@dataclass(frozen=True)
class _Term:
    """``sign · value`` then each ``(Mul or Div, number)`` in turn; value a column or a number."""

    sign: int
    value: exp.Expr
    steps: tuple[tuple[type[exp.Mul | exp.Div], exp.Expr], ...] = ()

    def scaled(self, kind: type[exp.Mul | exp.Div], by: exp.Expr, sign: int) -> _Term:
        return _Term(self.sign * sign, self.value, (*self.steps, (kind, by)))


def _float_column(node: exp.Expr) -> exp.Column | None:
    if isinstance(node, exp.Column):
        return node
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Column):
        if node.to.this in FLOAT_CASTS and not node.to.expressions:
            return node.this
    return None


def _terms(node: exp.Expr, sign: int = 1) -> list[_Term] | None:
    """``node`` as signed terms (each a column or a number, scaled by numbers); None if
    it is anything else."""
    if isinstance(node, exp.Paren):
        return _terms(node.this, sign)
    if isinstance(node, exp.Neg):
        return _terms(node.this, -sign)
    if isinstance(node, exp.Add | exp.Sub):
        left = _terms(node.this, sign)
        right = _terms(node.expression, -sign if isinstance(node, exp.Sub) else sign)
        return None if left is None or right is None else left + right
    if isinstance(node, exp.Mul | exp.Div):
        for inner, factor in ((node.this, node.expression), (node.expression, node.this)):
            number = literal_number(factor)
            if not number or (isinstance(node, exp.Div) and factor is node.this):
                continue  # a number divided by a column is no term
            terms = _terms(inner, sign)
            if terms is None:
                return None
            # the factor's own sign is kept in its literal (a - (b / -2) adds b / 2)
            return [t.scaled(type(node), factor, 1) for t in terms]
        return None
    column = _float_column(node)
    if column is not None:
        return [_Term(sign, column)]
    if literal_number(node) is not None:
        return [_Term(sign, node)]
    return None


def not_null(node: exp.Expr) -> exp.Expr:
    """``node IS NOT NULL`` (a copy of ``node``), as sqlglot writes it: ``NOT node IS NULL``."""
    return exp.Not(this=exp.Is(this=node.copy(), expression=exp.Null()))


def _present(columns: list[exp.Column], where: exp.Where | None) -> exp.Where:
    """``WHERE <own filter> AND c₁ IS NOT NULL AND …`` (each column once)."""
    seen: dict[str, exp.Column] = {}
    for column in columns:
        seen.setdefault(column.sql(), column)
    conditions = [not_null(c) for c in seen.values()]
    if where is not None:
        conditions.insert(0, exp.paren(where.this.copy()))
    return exp.Where(this=exp.and_(*conditions))


def _part(term: _Term, where: exp.Where) -> exp.Expr:
    """One term's aggregate: ``sum(x)`` (or ``c * count(*)``) under the shared FILTER,
    then its factors as written."""
    if isinstance(term.value, exp.Column):
        part: exp.Expr = with_filter(exp.Sum(this=term.value.copy()), where)
    else:
        rows = with_filter(exp.Count(this=exp.Star()), where)
        part = exp.Mul(this=term.value.copy(), expression=rows)
    for kind, by in term.steps:
        part = kind(
            this=exp.paren(part) if isinstance(part, exp.Mul) else part, expression=by.copy()
        )
    return part


def linear_measures(agg: exp.Expr) -> None:
    """``sum``/``avg`` of a sum of scaled columns and numbers (two columns or more) as
    sums of each column under one FILTER, combined (see the module docstring)."""
    if not isinstance(agg, exp.Sum | exp.Avg) or agg.args.get("expressions") or in_window(agg):
        return
    terms = _terms(agg.this)
    columns: list[exp.Column] = [t.value for t in terms or () if isinstance(t.value, exp.Column)]
    if terms is None or len(columns) < 2:
        return
    own, target = own_filter(agg)
    where = _present(columns, own)
    total: exp.Expr | None = None
    for term in terms:
        part = _part(term, where)
        if total is None:
            total = part if term.sign > 0 else exp.Neg(this=exp.paren(part))
        else:
            total = (exp.Add if term.sign > 0 else exp.Sub)(this=total, expression=part)
    assert total is not None
    if isinstance(agg, exp.Avg):
        rows = with_filter(exp.Count(this=exp.Star()), where)
        nonzero = exp.Nullif(this=rows, expression=exp.Literal.number(0))
        total = exp.Div(this=exp.paren(total), expression=nonzero)
    target.replace(exp.paren(total))
