"""Declared generalisations hold in every clause, not only in GROUP BY.

A bureau declares how a quasi-identifier may leave the enclave (``age`` in bands of
10, ``board_time`` truncated to the hour, a postcode as its first 3 characters).  The
principle: **a use of such a column is accepted only where its value is a function
of the declared generalisation g**, f(g(column)).  Then whatever the query builds on
it (a FILTER per cell, a CASE, a HAVING, a join), it learns nothing finer than g.

Each occurrence of the raw column (after lineage: renames through CTEs, derived
tables and UNION ALL keep it raw) is climbed from, to the nearest enclosing form
known to depend on the column only through g:

- a comparison with constants whose cut points are g's boundaries (``age >= 30``,
  ``age BETWEEN 30 AND 39`` for an INTEGER age, ``board_time < TIMESTAMP '… 09:00'``,
  ``age IN (30, …, 39)``; the arithmetic is in :mod:`band_math`);
- a coarser generalisation: ``floor(age / w)`` and, for integer columns, ``age // w``
  with w a positive multiple of the declared width; ``date_trunc`` to a unit whose
  boundaries are the declared unit's; a date part the declared unit determines
  (``extract(hour …)``, ``hour()``, ``year()``, ``CAST(… AS DATE)``); ``left(x, m)``,
  ``substring(x, 1, m)``, ``starts_with``, ``LIKE 'p%'`` with m ≤ n characters, and
  equality with a constant shorter than n (``x = 'ab'`` is ``left(x, 3) = 'ab'``);
- ``x IS [NOT] NULL`` and ``count(x)``;
- a bare rename in a CTE or derived table (the outer use is checked in its turn);
- the column directly in sum/avg/stddev/variance (and, under a budget, the DP
  quantiles) when the bureau declared a measure use (``measure = { bounds = […] }``):
  the role rules decide that use.

Anything else is refused (``guard.generalisation``) naming the column and the
accepted forms.  An accepted occurrence is then *evaluated on g(column)* (the forms
above give the same answer on it), so a mistake in this analysis can make an answer
wrong, never finer than declared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from sandbox.core.classification import ColumnSpec, Role
from sandbox.core.errors import QueryRefused
from sandbox.query import band_forms as bf
from sandbox.query.comoments import product_factors
from sandbox.query.lineage import BaseColumn
from sandbox.query.nodes import QUANTILES, VALUE_AGGREGATES

__all__ = ["Tracker", "generalisation", "key_generalisation", "substitute"]

#: Aggregates of a measure: where a declared measure use of the column may appear bare
#: (quantiles pass the guard only under a privacy budget: the rewrite refuses them without).
_MEASURE_AGGREGATES = (*VALUE_AGGREGATES, *QUANTILES)


def generalisation(spec: ColumnSpec, expr: exp.Expression) -> exp.Expression:
    """The declared generalisation of ``spec`` applied to ``expr`` (as GROUP BY keys get it)."""
    gen = spec.generalize
    assert gen is not None
    if gen.kind == "band":
        width = exp.Literal.number(f"{gen.width:g}")
        return exp.Mul(
            this=exp.Floor(this=exp.Div(this=expr.copy(), expression=width)),
            expression=width.copy(),
        )
    if gen.kind == "truncate":
        return exp.TimestampTrunc(this=expr.copy(), unit=exp.Var(this=str(gen.unit).upper()))
    return exp.Left(this=expr.copy(), expression=exp.Literal.number(int(gen.length or 1)))


def key_generalisation(spec: ColumnSpec, expr: exp.Expression) -> exp.Expression:
    """A bare generalised GROUP BY key as released: the declared generalisation, in the
    column's own type for a whole-number column banded (``substitute``: ``floor(age / w)
    * w`` alone is a DOUBLE, 15.0 for ages 15 to 19)."""
    gen = spec.generalize
    assert gen is not None
    if gen.kind == "band" and (spec.type or "").upper() in bf.INTEGER_TYPES:
        return substitute(spec, expr)
    return generalisation(spec, expr)


def substitute(spec: ColumnSpec, expr: exp.Expression) -> exp.Expression:
    """g(expr) in the column's own type: what an accepted occurrence is evaluated on.

    An integer column gets the smallest integer of its band back (``ceil`` matters
    only for fractional widths), a DATE column a DATE: comparisons, ``//`` and date
    parts then behave as on the raw column.
    """
    gen, value = spec.generalize, generalisation(spec, expr)
    assert gen is not None
    kind = (spec.type or "").upper()
    if gen.kind == "band" and kind in bf.INTEGER_TYPES:
        if not float(gen.width or 1).is_integer():
            value = exp.Ceil(this=value)
        return exp.TryCast(this=value, to=exp.DataType.build(kind))
    if gen.kind == "truncate" and kind == "DATE":
        return exp.TryCast(this=value, to=exp.DataType.build("DATE"))
    return value


def judge(use: bf.Use, *, derived: bool) -> bool:
    """Accept one occurrence, or raise; ``True`` if it must be evaluated on g(column).

    ``derived``: the occurrence is in a CTE or derived table, where a bare rename
    hands the raw column on to the scope that reads it (and is checked there).
    """
    child, parent = bf.up(use.column)
    if parent is None or isinstance(parent, exp.Group):
        raise use.refuse("used as it is, it is finer than declared")
    if derived and isinstance(parent, exp.Alias) and isinstance(parent.parent, exp.Select):
        return False
    if isinstance(parent, exp.Select) and derived and child in parent.expressions:
        return False
    if isinstance(parent, exp.Alias | exp.Select | exp.Ordered):
        raise use.refuse("used as it is, it is finer than declared")
    if isinstance(parent, exp.Is) and isinstance(parent.expression, exp.Null):
        return True
    if isinstance(parent, exp.Count) and parent.this is child:
        return True
    if isinstance(parent, exp.Mul) and product_factors(parent) is not None:
        # a factor of sum(x * y) or avg(x * y): a measure use, as in sum(x)
        product, aggregate = bf.up(parent)
        if isinstance(aggregate, _MEASURE_AGGREGATES) and aggregate.this is product:
            child, parent = product, aggregate
    if isinstance(parent, _MEASURE_AGGREGATES) and parent.this is child:
        if use.spec.bounds is not None and use.spec.role is not Role.MEASURE:
            return False  # a declared measure use: the role rules decide it
        raise use.refuse(f"{use.what(parent)} takes measures, and no measure use is declared")
    kind = use.gen.kind
    if kind == "band":
        return bf.band(use, child, parent)
    if kind == "truncate":
        return bf.truncated(use, child, parent)
    return bf.prefix(use, child, parent)


# -- the pass over a query's scopes ----------------------------------------------------------


def _columns(select: exp.Expr) -> Iterator[exp.Column]:
    """The column references of one scope (nested queries are scopes of their own)."""
    for node in select.walk(prune=lambda n: n is not select and isinstance(n, exp.Query)):
        if isinstance(node, exp.Column):
            yield node


def _clause(node: exp.Expr, select: exp.Expr) -> str:
    names = {"where": "WHERE", "group": "GROUP BY", "having": "HAVING", "order": "ORDER BY"}
    names |= {"expressions": "SELECT", "joins": "JOIN"}
    inner = ""
    while node.parent is not None and node.parent is not select:
        if isinstance(node.parent, exp.Filter) and node.arg_key == "expression":
            inner = inner or " FILTER"
        if isinstance(node.parent, exp.If) and node.arg_key == "this":
            inner = inner or " CASE WHEN"
        node = node.parent
    key = node.arg_key or ""
    return names.get(key, key.upper()) + inner


class Tracker:
    """Which outputs of each derived scope carry a generalised column raw, and the checks.

    Scopes are fed innermost first (as ``traverse_scope`` yields them), so a scope's
    sources are known when it is checked.
    """

    def __init__(
        self,
        spec_of: Callable[[BaseColumn], ColumnSpec | None],
        written: Callable[[exp.Expr], str],
    ) -> None:
        self.spec_of = spec_of
        self.written = written
        self.raw: dict[int, dict[str, frozenset[BaseColumn]]] = {}

    def raw_of(self, column: exp.Column, scope: Scope) -> frozenset[BaseColumn]:
        """The generalised dataset columns whose raw values this reference carries."""
        source = scope.sources.get(column.table)
        name = column.name.lower()
        if isinstance(source, exp.Table):
            base = BaseColumn(f"{source.args['db'].name.lower()}.{source.name.lower()}", name)
            spec = self.spec_of(base)
            generalised = spec is not None and spec.generalize is not None
            return frozenset({base}) if generalised else frozenset()
        if isinstance(source, Scope):
            return self.raw.get(id(source), {}).get(name, frozenset())
        return frozenset()

    def check(self, scope: Scope, *, final: bool) -> None:
        """Refuse a use finer than declared; evaluate accepted ones on the generalisation."""
        select = scope.expression
        replace: list[tuple[exp.Column, ColumnSpec]] = []
        for column in list(_columns(select)):
            bases = sorted(self.raw_of(column, scope), key=str)
            specs = [spec for base in bases if (spec := self.spec_of(base)) is not None]
            if not specs:
                continue
            first = specs[0]
            if any(s.generalize != first.generalize for s in specs):
                raise QueryRefused(
                    f"column '{column.name}' mixes columns with different declared "
                    "generalisations: generalise each branch before the UNION ALL",
                    rule=bf.RULE,
                )
            where = f"{bases[0].dataset}.{first.name}"
            use = bf.Use(column, first, where, _clause(column, select), self.written)
            if judge(use, derived=not final):
                replace.append((column, first))
        for column, spec in replace:
            column.replace(substitute(spec, column.copy()))
        if not final:
            self._record(scope)

    def _record(self, scope: Scope) -> None:
        outputs: dict[str, frozenset[BaseColumn]] = {}
        for proj in scope.expression.expressions:
            inner = proj.unalias()
            while isinstance(inner, exp.Paren):
                inner = inner.this
            raw = self.raw_of(inner, scope) if isinstance(inner, exp.Column) else frozenset()
            outputs[proj.alias_or_name.lower()] = raw
        self.raw[id(scope)] = outputs

    def record_set(self, scope: Scope) -> None:
        """Column i of a UNION ALL carries what column i of any branch carries raw."""
        branches = [list(self.raw.get(id(b), {}).items()) for b in scope.set_operation_scopes]
        if not branches:
            return
        names = [name for name, _ in branches[0]]
        self.raw[id(scope)] = {
            name: frozenset().union(*(b[i][1] for b in branches if i < len(b)))
            for i, name in enumerate(names)
        }
