"""``COLUMNS('regex')`` and ``COLUMNS(*)`` expanded into named columns before the guard's rules.

DuckDB's star expression stands for every source column whose name matches a
regular expression.  The guard cannot check a pattern, only columns, so the released
SELECT's ``COLUMNS(...)`` is replaced by one projection per matching column (named
after the column, as DuckDB names them); every rule then applies to each as if the
operator had written it.  The syntax stage (``sqlparse``) admits it only in the
outermost SELECT list, unaliased, with a string or ``*``.

Patterns are matched by DuckDB's own RE2 engine in a throw-away in-memory database
(no tables, external access off): the same semantics as DuckDB (a partial match), and
linear time, so a hostile pattern cannot stall the guard by backtracking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb
from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from sandbox.core.errors import QueryRefused

__all__ = ["EXPANDED", "expand_columns", "matching_columns"]

#: ``meta`` key marking a projection that stands for one column of a ``COLUMNS(...)``.
EXPANDED = "sbx_columns_expansion"

_ISOLATED: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
}


def matching_columns(pattern: str, names: Sequence[str]) -> list[str]:
    """The names that ``pattern`` matches (DuckDB ``regexp_matches``: anywhere in the name)."""
    con = duckdb.connect(":memory:", config=_ISOLATED)
    try:
        (flags,) = con.execute(
            "SELECT list_transform($names::VARCHAR[], lambda n: regexp_matches(n, $pattern))",
            {"names": list(names), "pattern": pattern},
        ).fetchone() or ([],)
    except duckdb.Error:
        raise QueryRefused(
            "COLUMNS(...) takes a valid regular expression", rule="guard.columns_expression"
        ) from None
    finally:
        con.close()
    return [name for name, hit in zip(names, flags, strict=True) if hit]


def _source_columns(
    scope: Scope, schema: Mapping[str, Mapping[str, Mapping[str, str]]]
) -> list[tuple[str, str]]:
    """(source alias, column) for every column of the SELECT's sources, FROM then JOINs."""
    select = scope.expression
    sources = [select.args["from_"].this, *(j.this for j in select.args.get("joins") or [])]
    out: list[tuple[str, str]] = []
    for node in sources:
        alias = node.alias_or_name
        source = scope.sources.get(alias)
        if isinstance(source, exp.Table):
            columns = list(schema[source.args["db"].name.lower()][source.name.lower()])
        elif isinstance(source, Scope):
            inner = source.expression
            while isinstance(inner, exp.SetOperation):
                inner = inner.this
            columns = [p.alias_or_name for p in inner.expressions]
        else:
            raise QueryRefused(
                "COLUMNS(...) needs sources that are datasets or derived tables",
                rule="guard.columns_expression",
            )
        out.extend((alias, c) for c in columns)
    return out


def expand_columns(scope: Scope, schema: Mapping[str, Mapping[str, Mapping[str, str]]]) -> bool:
    """Replace each ``COLUMNS(...)`` projection of ``scope``'s SELECT; True if any was."""
    select = scope.expression
    if not any(p.find(exp.Columns) for p in select.expressions):
        return False
    available = _source_columns(scope, schema)
    projections: list[exp.Expr] = []
    for proj in select.expressions:
        star = proj.find(exp.Columns)
        if star is None:
            projections.append(proj)
            continue
        names = [c for _, c in available]
        if isinstance(star.this, exp.Star):
            chosen = set(names)
        else:
            chosen = set(matching_columns(star.this.name, names))
        picked = [(alias, c) for alias, c in available if c in chosen]
        if not picked:
            raise QueryRefused(
                "COLUMNS(...) matches no column of the query's sources",
                rule="guard.columns_expression",
            )
        body = proj.unalias()
        for alias, column in picked:
            named = exp.column(column, table=alias, quoted=True)
            if isinstance(body, exp.Columns):
                expanded: exp.Expression = named
            else:
                expanded = body.copy()
                inner = expanded.find(exp.Columns)
                assert inner is not None
                inner.replace(named)
            named_output = exp.alias_(expanded, column, quoted=True)
            named_output.meta[EXPANDED] = True
            projections.append(named_output)
    select.set("expressions", projections)
    return True
