"""Names in an aggregate's FILTER read the rows' columns, before the guard qualifies them.

One pre-pass of ``guard.analyse``, pure: DuckDB binds a name inside ``FILTER (WHERE …)``
to a source's column before an output alias of that name; sqlglot's ``qualify`` reads
the alias in HAVING and ORDER BY, where the FILTER is not inside the aggregate node.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp

__all__ = ["filters_read_columns"]


def filters_read_columns(
    select: exp.Expr, schema: Mapping[str, Mapping[str, Mapping[str, str]]]
) -> None:
    """A name in an aggregate's ``FILTER (WHERE …)`` in HAVING or ORDER BY reads the
    rows, as DuckDB binds it: a source's column before an output alias of that name.

    sqlglot's qualify reads it as the alias (the FILTER is not inside the aggregate node,
    so its check misses it): ``SELECT gender AS district … HAVING count(*) FILTER (WHERE
    district = 'D01') > 0`` counted rows whose gender was 'D01'.  Here such a name is
    qualified with the one dataset table of the SELECT that has that column (left as
    written where none or several do)."""
    if not isinstance(select, exp.Select):
        return
    aliases = {p.alias.lower() for p in select.expressions if isinstance(p, exp.Alias)}
    sources = [select.args.get("from_"), *select.args.get("joins", [])]
    tables = [s.this for s in sources if s is not None and isinstance(s.this, exp.Table)]
    for clause in (select.args.get("having"), select.args.get("order")):
        if clause is None or not aliases:
            continue
        for column in list(clause.find_all(exp.Column)):
            name = column.name.lower()
            if column.table or name not in aliases or column.find_ancestor(exp.Filter) is None:
                continue
            owners = [
                t
                for t in tables
                if name
                in schema.get(t.args["db"].name.lower() if t.args.get("db") else "", {}).get(
                    t.name.lower(), {}
                )
            ]
            if len(owners) == 1:
                column.set("table", exp.to_identifier(owners[0].alias_or_name))
