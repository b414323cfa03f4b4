"""Correlation, covariance and least-squares regression read as sums of products.

``corr(x, y)``, ``covar_pop(x, y)``, ``covar_samp(x, y)`` and DuckDB's ``regr_*(y, x)``
family are functions of six sums over the rows where neither ``x`` nor ``y`` is NULL
(the rows these aggregates read): ``n``, ``Σx``, ``Σy``, ``Σx·x``, ``Σy·y`` and ``Σx·y``.
Each is rewritten, in place, into that arithmetic over ``count(*)`` and ``sum``
aggregates the guard and the rewrite know, every one ``FILTER (WHERE x IS NOT NULL AND
y IS NOT NULL)`` (an outer ``FILTER`` kept beside it):

- ``cxy = Σxy - Σx·Σy / n`` (and ``cxx``, ``cyy`` alike), the centred co-moments;
- ``covar_pop = cxy / n``, ``covar_samp = cxy / (n - 1)``;
- ``corr = cxy / sqrt(cxx · cyy)``, within [-1, 1];
- ``regr_slope(y, x) = cxy / cxx``, ``regr_intercept = (Σy - slope · Σx) / n``,
  ``regr_r2 = cxy² / (cxx · cyy)`` (1 where ``cyy`` is 0 and ``cxx`` is not, as DuckDB
  says), ``regr_count = n``, ``regr_avgx = Σx / n``, ``regr_sxx = cxx`` and the rest.

Where a denominator is 0 or below (a constant column, or noise under a privacy budget)
the value is NULL, as DuckDB's is where it divides by zero variance; where a group has
no pair of values, NULL.

Each sum of a product ``sum(x * y)`` is of two measure columns: the guard reads it as a
sum of its measures (``column_rules``), the rewrite clamps each factor to its declared
bounds, so a row's product lies within the product of the two intervals
(``product_bounds``), which is its sensitivity.  So the co-moments spend what their six
sums spend, and nothing is released that those sums would not release.  Only both
arguments bare columns are rewritten; any other form is left as written, and the guard
refuses it by its own rule.  Called by ``dialects.respell``.  Pure functions.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from sandbox.query.nodes import in_window, own_filter

__all__ = [
    "CENTRED",
    "FLOAT_CASTS",
    "PAIR_AGGREGATES",
    "WRITTEN_AS",
    "as_moments",
    "product_bounds",
    "product_factors",
]

#: Aggregates of a pair of measures: (x, y) as this and expression (corr, covariances),
#: or (y, x) for the regressions of y on x.
_SYMMETRIC: tuple[type[exp.Expr], ...] = (exp.Corr, exp.CovarPop, exp.CovarSamp)
_REGRESSIONS: dict[str, str] = {
    "RegrSlope": "{cxy} / nullif({cxx}, 0)",
    "RegrIntercept": "({sy} - {cxy} / nullif({cxx}, 0) * {sx}) / nullif({n}, 0)",
    "RegrR2": (
        "CASE WHEN {cxx} > 0 AND {cyy} > 0 THEN least(1.0, {cxy} * {cxy} / ({cxx} * {cyy})) "
        "WHEN {cxx} > 0 THEN 1.0 END"
    ),
    "RegrCount": "{n}",
    "RegrAvgx": "{sx} / nullif({n}, 0)",
    "RegrAvgy": "{sy} / nullif({n}, 0)",
    "RegrSxx": "{cxx}",
    "RegrSyy": "{cyy}",
    "RegrSxy": "{cxy}",
}
_FORMS: dict[str, str] = {
    "CovarPop": "{cxy} / nullif({n}, 0)",
    "CovarSamp": "{cxy} / nullif({n} - 1, 0)",
    # Within [-1, 1]; NULL where either variance is 0 or below, or there is no pair.
    # (Only where both are positive: least and greatest skip a NULL argument.)
    "Corr": (
        "CASE WHEN {cxx} > 0 AND {cyy} > 0 "
        "THEN greatest(-1.0, least(1.0, {cxy} / sqrt({cxx} * {cyy}))) END"
    ),
    **_REGRESSIONS,
}
#: Set on each aggregate a rewrite here makes: the function the analyst wrote, which
#: refusals name (``spelling.written_name``).
WRITTEN_AS = "sbx.written_as"
#: Set on the sums of products a form here writes: under a budget the rewrite sums each
#: factor less its bounds' midpoint, ``(x - mx)(y - my)`` within ``±wx·wy`` against
#: ``[0, hx·hy]`` (``rewrite._Stats._clamped``), and releases ``Σxy`` from it with the
#: plain ``Σx``, ``Σy`` and ``n`` (``_uncentred_product``), so the co-moments computed
#: from them are exactly the centred ones, with the noise of the narrower bounds.
CENTRED = "sbx.centred"
PAIR_AGGREGATES: tuple[type[exp.Expr], ...] = tuple(getattr(exp, name) for name in _FORMS)


#: Casts the rewrite makes anyway: every value a sum, mean, variance or quantile reads
#: is clamped as a DOUBLE (``rewrite._Stats.replacement``), so ``x::DOUBLE`` reads as ``x``.
FLOAT_CASTS = frozenset({exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT})


def _bare(node: exp.Expr) -> exp.Column | None:
    """The column of ``x``, ``(x)`` or ``x::DOUBLE`` (``CAST``, ``TRY_CAST``), else None."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Cast) and node.to.this in FLOAT_CASTS and not node.to.expressions:
        return _bare(node.this)
    return node if isinstance(node, exp.Column) else None


def product_factors(node: exp.Expr) -> tuple[exp.Column, exp.Column] | None:
    """The two columns of ``x * y`` (parentheses allowed around either), else None."""
    while isinstance(node, exp.Paren):
        node = node.this
    if not isinstance(node, exp.Mul):
        return None
    left, right = _bare(node.this), _bare(node.expression)
    if left is None or right is None:
        return None
    return left, right


def product_bounds(
    first: tuple[float, float], second: tuple[float, float], *, same: bool = False
) -> tuple[float, float]:
    """The interval a product of values in ``first`` and ``second`` lies in.

    ``same``: both are one column of one row, a square, which is never negative.
    """
    products = [a * b for a in first for b in second]
    if same:
        lo, hi = first
        squares = (lo * lo, hi * hi)
        return (0.0 if lo <= 0 <= hi else min(squares)), max(squares)
    return min(products), max(products)


def as_moments(root: exp.Expr) -> None:
    """Every pair aggregate under ``root`` over two bare columns, as its sums, in place."""
    for agg in list(root.find_all(*PAIR_AGGREGATES)):
        _expand(agg)


def _expand(agg: exp.Expr) -> None:
    if in_window(agg):
        return  # a window's function over released rows: written as it is
    first, second = _bare(agg.this), _bare(agg.expression)
    if first is None or second is None:
        return
    x, y = (first, second) if isinstance(agg, _SYMMETRIC) else (second, first)
    where, target = own_filter(agg)
    # in one order whichever comes first: corr(x, y) and regr_*(x, y) share one cell
    tested = sorted({x.sql(dialect="duckdb"), y.sql(dialect="duckdb")})
    pair = " AND ".join(f"({t}) IS NOT NULL" for t in tested)
    if where is not None:
        pair = f"({where.this.sql(dialect='duckdb')}) AND {pair}"
    kept = f" FILTER (WHERE {pair})"
    xs, ys = x.sql(dialect="duckdb"), y.sql(dialect="duckdb")
    parts = {
        "n": f"count(*){kept}",
        "sx": f"sum({xs}){kept}",
        "sy": f"sum({ys}){kept}",
    }
    # the cross product in one order: corr(x, y) and regr_*(x, y) share its statistic
    squares = {"sxx": (xs, xs), "syy": (ys, ys), "sxy": tuple(sorted((xs, ys)))}
    parts |= {name: f"sum({a} * {b}){kept}" for name, (a, b) in squares.items()}
    n = parts["n"]
    for moment, (a, b) in {"cxx": ("sx", "sx"), "cyy": ("sy", "sy"), "cxy": ("sx", "sy")}.items():
        raw = parts["s" + moment[1:]]
        parts[moment] = f"({raw} - {parts[a]} * {parts[b]} / nullif({n}, 0))"
    text = _FORMS[type(agg).__name__].format(**parts)
    new = sqlglot.parse_one(text, read="duckdb")
    written = agg.sql_name().lower() if isinstance(agg, exp.Func) else agg.key
    for part in new.find_all(exp.Sum, exp.Count):
        part.meta[WRITTEN_AS] = written  # refusals name corr(), not the sums it reads
        if isinstance(part, exp.Sum) and isinstance(part.this, exp.Mul):
            part.meta[CENTRED] = True
    target.replace(exp.paren(new))
