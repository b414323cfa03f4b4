"""Shares of rows: ``count(*) FILTER (WHERE c) / count(*)``, found in a query.

``avg(CASE WHEN c THEN 1 ELSE 0 END)`` is read as that ratio (``conditional._share``), and
analysts write it by hand (``100.0 * count(*) FILTER (WHERE c) / count(*)``).  Under a
budget each entity's counts are capped at ``C`` rows; capped apart, the numerator keeps
up to ``C`` of the rows where ``c`` holds while the denominator keeps ``C`` rows in all,
so an entity with more than ``C`` rows in a group counts as if ``c`` held on all it kept
(on MovieLens, users with up to 2,391 ratings at ``C = 100``, the share of ratings of 4
stars and more came out 0.75 against 0.52).  The rewrite gives such a numerator the
entity's own share of its kept rows instead (``entity_caps.share_of_cap``).  Pure.
"""

from __future__ import annotations

from typing import cast

from sqlglot import exp

from sandbox.query.nodes import literal_number

__all__ = ["SHARE", "mark_shares"]

#: Meta key on a share's numerator (its ``exp.Filter``): the denominator's FILTER clause.
SHARE = "sbx.share_of"


def mark_shares(root: exp.Expr) -> None:
    """Mark each share's numerator node under ``root`` with its denominator's FILTER
    clause (``node.meta[SHARE]``: ``" FILTER (WHERE b)"``, or ``""`` for every row of the
    group), in place: that node alone is counted as a share (a count of the same rows
    elsewhere in the query stays a row count, capped apart).

    A share: a division whose numerator is ``count(*) FILTER (WHERE p)``, perhaps times or
    over a number or cast, and whose denominator is ``count(*)``, or ``count(*) FILTER
    (WHERE b)`` with ``b`` one of ``p``'s conjuncts (a share of the ``b`` rows), perhaps
    in ``nullif(…, 0)``.  Anything else is no share (its counts are capped apart)."""
    for node, where in _shares(root):
        node.meta[SHARE] = where


def _shares(root: exp.Expr) -> list[tuple[exp.Filter, str]]:
    """Each share's numerator (its FILTER node) and its denominator's FILTER clause."""
    out: list[tuple[exp.Filter, str]] = []
    for division in root.find_all(exp.Div):
        numerator = _counted_rows(_bare(division.this))
        below = _bare(division.expression)
        if isinstance(below, exp.Nullif) and literal_number(below.expression) == 0:
            below = _bare(below.this)
        denominator = _counted_rows(below)
        if numerator is None or denominator is None or numerator[1] is None:
            continue
        predicate, base = numerator[1], denominator[1]
        if base is not None and not any(_same(part, base) for part in _conjuncts(predicate)):
            continue
        where = "" if base is None else f" FILTER (WHERE {base.sql(dialect='duckdb')})"
        out.append((cast(exp.Filter, numerator[2]), where))
    return out


def _bare(node: exp.Expr) -> exp.Expr:
    """``node`` without parentheses, casts and a product with (or a division by) a number."""
    while True:
        if isinstance(node, exp.Paren | exp.Cast | exp.TryCast):
            node = node.this
        elif isinstance(node, exp.Mul) and literal_number(node.expression) is not None:
            node = node.this
        elif isinstance(node, exp.Mul) and literal_number(node.this) is not None:
            node = node.expression
        elif isinstance(node, exp.Div) and literal_number(node.expression):
            node = node.this
        else:
            return node


def _counted_rows(node: exp.Expr) -> tuple[exp.Count, exp.Expr | None, exp.Expr] | None:
    """``count(*)``, its FILTER predicate (None without one) and the node itself, or None."""
    predicate, whole = None, node
    if isinstance(node, exp.Filter):
        predicate, node = node.expression.this, node.this
    if isinstance(node, exp.Count) and isinstance(node.this, exp.Star):
        return node, predicate, whole
    return None


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return [*_conjuncts(node.this), *_conjuncts(node.expression)]
    return [node]


def _same(a: exp.Expr, b: exp.Expr) -> bool:
    def bare(node: exp.Expr) -> exp.Expr:
        while isinstance(node, exp.Paren):
            node = node.this
        return node

    return bare(a) == bare(b)
