"""A query with totals split into its parts: the outer query, and each total on its own.

``SELECT gender, sum(x) / (SELECT sum(x) FROM t) AS share FROM t GROUP BY gender`` is
two releases: ``SELECT sum(x) FROM t`` (checked, run and disclosed exactly as if the
analyst had sent it alone), and the outer query with the total replaced by a marked
constant (``totals.placeholder``), checked and disclosed as any grouped query.  The
release query then reads each released total where its placeholder stands
(``totals.total_reference``), outside the enclave: the share is computed from
released values only.  Each part reads the outer query's CTEs it names.  Both are
normalised again (``normalize.py``), so an outer SELECT over an aggregating CTE can
merge now that its subquery is gone, and a total over a CTE's groups rolls up.

A **threshold** (a total in the outermost WHERE: ``x > (SELECT avg(x) FROM t)``) is
split the same way (``split_thresholds``) but used the other way round: it is released
*before* the query runs, and the query, checked with a marked stand-in constant, is
prepared again with the released value in its place (``bind_thresholds``), so the
enclave's second query reads a released value, never the true total.
Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlglot import exp

from sandbox.core.errors import QueryRefused
from sandbox.query.normalize import normalize
from sandbox.query.parse import Parsed
from sandbox.query.totals import is_threshold, is_total, placeholder

__all__ = [
    "THRESHOLD",
    "Split",
    "bind_thresholds",
    "split_thresholds",
    "split_totals",
    "thresholds_in",
]

#: The meta key of the literal standing for the i-th threshold in the outer query.
THRESHOLD = "sbx_threshold"


@dataclass(frozen=True)
class Split:
    main: Parsed
    totals: tuple[Parsed, ...]


def _datasets(query: exp.Expr) -> tuple[str, ...]:
    found: list[str] = []
    for table in query.find_all(exp.Table):
        db = table.args.get("db")
        if db is not None:
            name = f"{db.name.lower()}.{table.name.lower()}"
            if name not in found:
                found.append(name)
    return tuple(found)


def _ctes_read(query: exp.Expr, ctes: dict[str, exp.CTE]) -> list[exp.CTE]:
    """The CTEs ``query`` reads, directly or through another, in their declared order."""
    wanted: set[str] = set()
    pending = [query]
    while pending:
        node = pending.pop()
        for table in node.find_all(exp.Table):
            name = table.name.lower()
            if not table.args.get("db") and name in ctes and name not in wanted:
                wanted.add(name)
                pending.append(ctes[name].this)
    return [cte for name, cte in ctes.items() if name in wanted]


def _prune(select: exp.Select) -> None:
    """Drop the CTEs nothing reads any more (the totals took their readers away)."""
    with_ = select.args.get("with_")
    if with_ is None:
        return
    ctes = {cte.alias_or_name.lower(): cte for cte in with_.expressions}
    body = select.copy()
    body.set("with_", None)
    kept = _ctes_read(body, ctes)
    if not kept:
        select.set("with_", None)
        return
    with_.set("expressions", [cte for cte in with_.expressions if cte in kept])


def _parsed(query: exp.Select, sql: str) -> Parsed:
    with_ = query.args.get("with_")
    names = frozenset(c.alias_or_name.lower() for c in (with_.expressions if with_ else []))
    return Parsed(query, _datasets(query), names, sql)


def _hoisted(
    main: exp.Select, subs: list[exp.Subquery], sql: str, stand_in: Callable[[int], exp.Expr]
) -> list[Parsed]:
    """Each distinct subquery of ``subs`` as a query of its own (with the CTEs it reads),
    each replaced in ``main`` by ``stand_in(its index)``."""
    with_ = main.args.get("with_")
    ctes = {cte.alias_or_name.lower(): cte for cte in (with_.expressions if with_ else [])}
    parts: list[Parsed] = []
    indexes: dict[str, int] = {}
    for sub in subs:
        part = sub.this.copy()
        read = [c.copy() for c in _ctes_read(part, ctes)]
        own = part.args.get("with_")
        if read:
            part.set("with_", exp.With(expressions=[*read, *(own.expressions if own else [])]))
        text = part.sql(dialect="duckdb")
        if text not in indexes:  # the same subquery twice is released once
            indexes[text] = len(parts)
            normalize(part)
            parts.append(_parsed(part, sql))
        sub.replace(stand_in(indexes[text]))
    return parts


def _named_as_written(main: exp.Select, subs: list[exp.Subquery]) -> None:
    """Each output holding one of ``subs`` keeps the name it was written with, not the
    name of the constant that takes the subquery's place."""
    hoisted = {id(s) for s in subs}
    for projection in main.expressions:
        inside = any(id(s) in hoisted for s in projection.walk())
        if inside and not isinstance(projection, exp.Alias):
            name = exp.to_identifier(projection.sql(dialect="duckdb"), quoted=True)
            projection.replace(exp.Alias(this=projection.copy(), alias=name))


def _stand_in(index: int) -> exp.Literal:
    """The constant standing for a threshold while the guard checks the outer query: a
    number no band's edge is (a threshold on a banded column is refused as cutting
    inside a band, as any constant that is not an edge), marked in its meta (SQL text
    cannot set meta: ``parse_query`` drops comment meta)."""
    literal = exp.Literal(this=f"{index + 1}.0000000000001", is_string=False)
    literal.meta[THRESHOLD] = index
    return literal


def split_thresholds(parsed: Parsed) -> Split | None:
    """The query with each threshold (``WHERE x > (SELECT avg(x) FROM t)``, see
    ``totals.is_threshold``) replaced by a stand-in, and each threshold as a query of
    its own; None if the query has none.  The thresholds are released first and the
    query runs with their released values (``bind_thresholds``)."""
    root = parsed.expression
    if not isinstance(root, exp.Select) or not any(
        is_threshold(s, root) for s in root.find_all(exp.Subquery)
    ):
        return None
    main = root.copy()
    _named_as_written(main, [s for s in main.find_all(exp.Subquery) if is_threshold(s, main)])
    # in the order written (depth first), the order the result metadata lists them in
    subs = [s for s in main.find_all(exp.Subquery, bfs=False) if is_threshold(s, main)]
    thresholds = _hoisted(main, subs, parsed.sql, _stand_in)
    _prune(main)
    normalize(main)
    return Split(_parsed(main, parsed.sql), tuple(thresholds))


def bind_thresholds(main: Parsed, values: Sequence[object]) -> Parsed:
    """``main`` with each threshold's stand-in replaced by its released value (NULL where
    it was withheld: ``x > NULL`` keeps no row, as in SQL).  Refused where a value is
    no number (a threshold compares numbers)."""
    tree = main.expression.copy()
    for literal in list(tree.find_all(exp.Literal)):
        index = literal.meta.get(THRESHOLD)
        if type(index) is int:
            literal.replace(_number(values[index]))
    return Parsed(tree, main.datasets, main.cte_names, main.sql)


def _number(value: object) -> exp.Expr:
    if value is None:
        # typed, as a value would be: a comparison that cannot bind fails alike either way
        return exp.Cast(this=exp.Null(), to=exp.DataType.build("DOUBLE"))
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise QueryRefused(
            "a subquery compared in WHERE gives a number (an average, a sum, a count): "
            "this one gives another type",
            rule="guard.subquery_predicate",
        )
    if isinstance(value, float) and not math.isfinite(value):
        return _number(None)
    if isinstance(value, Decimal) and not value.is_finite():
        return _number(None)
    text = repr(value) if isinstance(value, float) else str(value)
    if text.startswith("-"):
        return exp.Neg(this=exp.Literal.number(text[1:]))
    return exp.Literal.number(text)


def thresholds_in(main: Parsed) -> int:
    """How many distinct thresholds' stand-ins ``main`` still holds."""
    return len(
        {
            index
            for literal in main.expression.find_all(exp.Literal)
            if type(index := literal.meta.get(THRESHOLD)) is int
        }
    )


def split_totals(parsed: Parsed) -> Split | None:
    """The outer query (totals replaced by placeholders) and each total, or None if none."""
    root = parsed.expression
    if not isinstance(root, exp.Select) or not any(
        is_total(s, root) for s in root.find_all(exp.Subquery)
    ):
        return None  # most queries: no copy of the tree
    main = root.copy()  # no node of the text carries TOTAL: parse_query dropped comment meta
    subs = [s for s in main.find_all(exp.Subquery) if is_total(s, main)]
    if not subs:
        return None
    _named_as_written(main, subs)
    subs = [s for s in main.find_all(exp.Subquery) if is_total(s, main)]
    totals = _hoisted(main, subs, parsed.sql, placeholder)
    _prune(main)
    normalize(main)
    return Split(_parsed(main, parsed.sql), tuple(totals))
