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
Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sandbox.query.normalize import normalize
from sandbox.query.parse import Parsed
from sandbox.query.totals import is_total, placeholder

__all__ = ["Split", "split_totals"]


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
    with_ = main.args.get("with_")
    ctes = {cte.alias_or_name.lower(): cte for cte in (with_.expressions if with_ else [])}
    totals: list[Parsed] = []
    hoisted = {id(s) for s in subs}
    for projection in main.expressions:
        inside = any(id(s) in hoisted for s in projection.walk())
        if inside and not isinstance(projection, exp.Alias):
            # The output keeps the name it was written with, not the placeholder's.
            name = exp.to_identifier(projection.sql(dialect="duckdb"), quoted=True)
            projection.replace(exp.Alias(this=projection.copy(), alias=name))
    subs = [s for s in main.find_all(exp.Subquery) if is_total(s, main)]
    indexes: dict[str, int] = {}
    for sub in subs:
        total = sub.this.copy()
        read = [c.copy() for c in _ctes_read(total, ctes)]
        own = total.args.get("with_")
        if read:
            total.set("with_", exp.With(expressions=[*read, *(own.expressions if own else [])]))
        text = total.sql(dialect="duckdb")
        if text not in indexes:  # the same total twice is released once
            indexes[text] = len(totals)
            normalize(total)
            totals.append(_parsed(total, parsed.sql))
        sub.replace(placeholder(indexes[text]))
    _prune(main)
    normalize(main)
    return Split(_parsed(main, parsed.sql), tuple(totals))
