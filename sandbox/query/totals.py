"""Totals written as scalar subqueries: which ones are released as parts of their own.

Analysts write a share of the total as ``sum(x) / (SELECT sum(x) FROM t)``, or join a
one-row CTE of totals (``FROM a, b`` where ``b`` is ``SELECT sum(n) AS total FROM
a``).  A **total** here is an uncorrelated scalar subquery that is a whole aggregate
(one output, no GROUP BY) standing in the outermost SELECT's list, HAVING or ORDER BY,
outside any aggregate.  ``parts.py`` releases each as its own query (checked by the
guard, disclosed with k, dominance and noise exactly as if run alone), and the outer
expression is computed in the release query, outside the enclave, over the released
values: post-processing.  Anything else (a subquery in WHERE, GROUP BY, a join
condition or inside an aggregate, a correlated one, one that groups) stays refused.

``cross_joined_totals`` (a ``normalize.py`` step) reads a comma join with a one-row
aggregating CTE or derived table as those scalar subqueries.  Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from sandbox.query.merge_source import _aliases, _only, _outputs

__all__ = [
    "TOTAL",
    "TOTAL_OR_THRESHOLD",
    "WithTotals",
    "cross_joined_totals",
    "is_threshold",
    "is_total",
    "obstacle",
    "placeholder",
    "total_column",
    "total_reference",
]

#: The meta key of the literal standing for the i-th total in the outer query.
TOTAL = "sbx_total"
#: Where the positions of a total may be, as the argument of the outermost SELECT.
_RELEASED_CLAUSES = frozenset({"expressions", "having", "order"})
#: Where a threshold may be: the outermost SELECT's WHERE, or a group key (``GROUP BY``,
#: or an output it names: ``SELECT x > (SELECT avg(x) …) AS high … GROUP BY 1``), which
#: the enclave computes for each row.
_THRESHOLD_CLAUSES = frozenset({"where", "key"})
#: Where either may be (what a refusal of a subquery says it could not find).
TOTAL_OR_THRESHOLD = _RELEASED_CLAUSES | _THRESHOLD_CLAUSES


@dataclass(frozen=True)
class WithTotals:
    """The stats tables of a query with totals: its own, then each total's, in order."""

    main: pa.Table
    totals: tuple[pa.Table | WithTotals, ...]


def total_column(index: int) -> str:
    """The stats-table column the release query reads the index-th released total from.

    Added to the released stats table (the same value on every row, NULL if the total
    was withheld): a column, because DuckDB's ``TRY`` (which every released expression
    runs in) takes no scalar subquery.
    """
    return f"__sbx_total{index}"


def placeholder(index: int) -> exp.Literal:
    """The constant standing for a total while the guard checks the outer query.

    A decimal, so it is never read as an ORDER BY position, and one per total, so
    qualification never takes one total's ORDER BY for another's output; marked in its
    meta with the total's index.  SQL text cannot set meta: ``parse_query`` drops what a
    ``/* sqlglot.meta key */`` comment writes, so only these placeholders are replaced.
    """
    literal = exp.Literal(this=f"{index + 1}.0000000000001", is_string=False)
    literal.meta[TOTAL] = index
    return literal


def total_reference(node: exp.Expr) -> exp.Column | None:
    """For a placeholder, the column of its released total (release query)."""
    index = node.meta.get(TOTAL) if isinstance(node, exp.Literal) else None
    if type(index) is not int:
        return None
    return exp.column(total_column(index), quoted=True)


def _sources(select: exp.Expr) -> set[str]:
    """Every name a column inside ``select`` may be qualified with: its own sources."""
    names: set[str] = set()
    for node in select.find_all(exp.Table, exp.Subquery, exp.CTE):
        if isinstance(node, exp.Table | exp.Subquery | exp.CTE) and node.alias_or_name:
            names.add(node.alias_or_name.lower())
        if isinstance(node, exp.Table):
            names.add(node.name.lower())
    return names


def _uncorrelated(select: exp.Select) -> bool:
    """No column of the subquery is qualified by a source outside it."""
    own = _sources(select)
    return all(
        not column.table or column.table.lower() in own for column in select.find_all(exp.Column)
    )


def _whole_aggregate(select: exp.Expr) -> bool:
    """One output, no GROUP BY, an aggregate: exactly one row, one value."""
    if not isinstance(select, exp.Select) or select.args.get("group"):
        return False
    if len(select.expressions) != 1 or select.args.get("distinct"):
        return False
    value = select.expressions[0].unalias()
    return not isinstance(value, exp.Star) and value.find(exp.AggFunc) is not None


def obstacle(
    sub: exp.Expr, root: exp.Expr, clauses: frozenset[str] = _RELEASED_CLAUSES
) -> str | None:
    """Why the subquery ``sub`` of ``root`` is not a total, in the analyst's words (or None).

    ``clauses``: where it may stand (a threshold: ``{"where", "key"}``, ``is_threshold``;
    ``key``: in ``GROUP BY``, or in an output that ``GROUP BY`` names)."""
    if not isinstance(sub, exp.Subquery) or not isinstance(root, exp.Select):
        return "it is not a subquery of the released SELECT"
    named = frozenset({"this", "alias"}) if sub.parent is root else frozenset({"this"})
    if not _only(sub, named) or not _whole_aggregate(sub.this):
        return "it is not one aggregate of all its rows (one output, no GROUP BY)"
    if root.args.get("from_") is None:
        return "the query around it reads no rows: run the total as a query of its own"
    node: exp.Expr = sub
    while node.parent is not root:
        node = node.parent  # type: ignore[assignment]
        if node is None or isinstance(
            node, exp.AggFunc | exp.Filter | exp.Window | exp.Subquery | exp.Query
        ):
            return "it stands inside an aggregate or another subquery"
    clause = node.arg_key
    if clause == "group" or (clause == "expressions" and _group_key(node, root)):
        clause = "key"
    if clause not in clauses:
        if clause == "key":
            return "it is part of a group key, computed for each row in the enclave"
        return "it stands outside the SELECT list, HAVING, ORDER BY, WHERE and the group keys"
    if not _uncorrelated(sub.this):
        return "it refers to the outer query's rows (a correlated subquery)"
    return None


def _group_key(projection: exp.Expr, root: exp.Select) -> bool:
    """Whether ``GROUP BY`` names the output ``projection`` (by position, alias or
    expression; ``GROUP BY ALL``: any output without an aggregate)."""
    group = root.args.get("group")
    if group is None:
        return False
    if group.args.get("all"):
        own = projection.copy()  # its own aggregates, not a subquery's
        for sub in list(own.find_all(exp.Subquery)):
            sub.replace(exp.Null())
        return own.find(exp.AggFunc) is None
    position = next((i for i, p in enumerate(root.expressions, 1) if p is projection), None)
    alias = projection.alias if isinstance(projection, exp.Alias) else ""
    value = projection.unalias()
    for key in group.expressions:
        if isinstance(key, exp.Literal) and not key.is_string and key.this == str(position):
            return True
        if isinstance(key, exp.Column) and not key.table and alias:
            if key.name.lower() == alias.lower():
                return True
        if key == value:
            return True
    return False


def is_total(sub: exp.Expr, root: exp.Expr) -> bool:
    """``sub`` is a total of ``root``: released as its own part, see the module docstring."""
    return obstacle(sub, root) is None


def is_threshold(sub: exp.Expr, root: exp.Expr) -> bool:
    """``sub`` is a total standing in ``root``'s WHERE (``x > (SELECT avg(x) FROM t)``) or
    in a group key: released before the query runs, which then reads its released value
    (``parts.py``)."""
    return obstacle(sub, root, _THRESHOLD_CLAUSES) is None


def _cross(join: exp.Join) -> bool:
    """``FROM a, b`` or ``a CROSS JOIN b``: no condition, every row with every row."""
    kind = str(join.args.get("kind") or "").upper()
    return kind in ("", "CROSS") and not any(
        join.args.get(a) for a in ("on", "using", "method", "side")
    )


def _one_row(select: exp.Expr) -> bool:
    """An aggregate with no GROUP BY, HAVING, LIMIT or OFFSET: always exactly one row."""
    allowed = frozenset({"expressions", "from_", "joins", "where"})
    return (
        isinstance(select, exp.Select)
        and _only(select, allowed)
        and bool(select.expressions)
        and all(p.unalias().find(exp.AggFunc) for p in select.expressions)
    )


def _outer_parts(select: exp.Select) -> list[tuple[str, exp.Expr]]:
    parts: list[tuple[str, exp.Expr]] = [("expressions", p) for p in select.expressions]
    for key in ("where", "group", "having", "order"):
        if select.args.get(key) is not None:
            parts.append((key, select.args[key]))
    parts += [("joins", j) for j in select.args.get("joins") or []]
    return parts


def cross_joined_totals(select: exp.Select) -> None:
    """``… FROM a, b`` with ``b`` a one-row aggregate: ``b.x`` read as ``(SELECT x FROM …)``.

    A cross join with one row repeats that row's values on every row: each qualified
    use ``b.x`` is the scalar subquery of ``b``'s expression for ``x``.  Only when every
    use of ``b`` is qualified and stands where a total may (``is_total``); the join
    goes, and so does the CTE if nothing else reads it.  Otherwise left as written.
    """
    with_ = select.args.get("with_")
    ctes = {cte.alias_or_name.lower(): cte for cte in (with_.expressions if with_ else [])}
    for join in list(select.args.get("joins") or []):
        source = join.this
        if not _cross(join):
            continue
        if isinstance(source, exp.Table) and not source.args.get("db"):
            cte = ctes.get(source.name.lower())
            body = cte.this if cte is not None else None
        elif isinstance(source, exp.Subquery):
            cte, body = None, source.this
        else:
            continue
        if body is None or not _one_row(body):
            continue
        outputs = _outputs(body)
        if outputs is None or _aliases(outputs) & {
            c.name.lower() for p in outputs.values() for c in p.find_all(exp.Column)
        }:
            continue
        name = source.alias_or_name.lower()
        uses = [
            column
            for key, part in _outer_parts(select)
            if part is not join
            for column in part.find_all(exp.Column)
            if column.table.lower() == name
        ]
        bare = {
            column.name.lower()
            for _, part in _outer_parts(select)
            for column in part.find_all(exp.Column)
            if not column.table
        }
        if bare & set(outputs) or any(u.name.lower() not in outputs for u in uses):
            continue  # an unqualified name could be b's: left as written
        replaced = []
        for use in uses:
            total = body.copy()
            total.set("expressions", [exp.alias_(outputs[use.name.lower()].copy(), use.name)])
            sub = exp.Subquery(this=total)
            use.replace(sub)
            replaced.append(sub)
        if not all(is_total(sub, select) for sub in replaced):
            raise_back = [(sub, use) for sub, use in zip(replaced, uses, strict=True)]
            for sub, use in raise_back:
                sub.replace(use)
            continue
        join.pop()
        if cte is not None and not _read_elsewhere(select, cte):
            cte.pop()
            if with_ is not None and not with_.expressions:
                select.set("with_", None)


def _read_elsewhere(select: exp.Select, cte: exp.CTE) -> bool:
    """Does anything in ``select`` but ``cte`` itself read the CTE's name as a table?"""
    name = cte.alias_or_name.lower()
    for table in select.find_all(exp.Table):
        if table.args.get("db") or table.name.lower() != name:
            continue
        node: exp.Expr | None = table
        while node is not None and node is not cte:
            node = node.parent
        if node is None:
            return True
    return False
