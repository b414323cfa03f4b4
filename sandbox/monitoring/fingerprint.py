"""A query's predicate structure, as the detectors read it: hashes, never values.

Recorded in the audit details of every allowed query (``predicates``), so the
detectors work on metadata only.  For one query:

- ``shape``: a hash of the query without its WHERE and FILTER clauses (what it
  computes and over what);
- ``template``: a hash of the query with every literal replaced by ``?`` (two
  queries that differ only in constants share it);
- ``sets``: for each aggregate, the conjuncts of the predicate it is computed
  under (the SELECT's WHERE, and its FILTER), each a short hash; a conjunct that
  excludes (``NOT c``, ``a <> b``, ``NOT IN``) is marked with a leading ``!``.
  ``IS NOT NULL`` is not an exclusion (it drops missing values, not entities).

Nothing here can echo a data value: every constant ends up inside a hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlglot import exp

__all__ = ["predicate_fingerprint"]

_HASH_CHARS = 12


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def _conjuncts(condition: exp.Expression | None) -> list[exp.Expression]:
    if condition is None:
        return []
    while isinstance(condition, exp.Paren):
        condition = condition.this
    if isinstance(condition, exp.And):
        return _conjuncts(condition.left) + _conjuncts(condition.right)
    return [condition]


def _excludes(condition: exp.Expression) -> bool:
    """``NOT c``, ``a <> b`` (``!=``): all but something.  ``x IS NOT NULL`` is not."""
    inner = condition
    while isinstance(inner, exp.Paren):
        inner = inner.this
    if isinstance(inner, exp.NEQ):
        return True
    if isinstance(inner, exp.Not):
        body = inner.this
        while isinstance(body, exp.Paren):
            body = body.this
        return not (isinstance(body, exp.Is) and isinstance(body.expression, exp.Null))
    return False


def _mark(condition: exp.Expression) -> str:
    text = condition.sql(dialect="duckdb", normalize=True)
    return ("!" if _excludes(condition) else "") + _digest(text)


def _aggregate_sets(select: exp.Select) -> list[tuple[str, ...]]:
    where = select.args.get("where")
    base = [_mark(c) for c in _conjuncts(where.this if where is not None else None)]
    sets: list[tuple[str, ...]] = []
    filters = list(select.find_all(exp.Filter))
    plain = any(
        isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Filter)
        for node in select.find_all(exp.AggFunc)
    )
    if plain or not filters:
        sets.append(tuple(sorted(base)))
    for node in filters:
        clause = node.expression
        condition = clause.this if isinstance(clause, exp.Where) else clause
        extra = [_mark(c) for c in _conjuncts(condition)]
        sets.append(tuple(sorted(set(base) | set(extra))))
    return sets


def _without_predicates(query: exp.Expression) -> exp.Expression:
    copy = query.copy()
    for where in list(copy.find_all(exp.Where)):
        if isinstance(where.parent, exp.Filter):
            where.parent.replace(where.parent.this)
        else:
            where.pop()
    for node in list(copy.find_all(exp.Filter)):  # a FILTER (cond) without WHERE
        node.replace(node.this)
    return copy


def _template(query: exp.Expression) -> exp.Expression:
    copy = query.copy()
    for literal in list(copy.find_all(exp.Literal)):
        literal.replace(exp.Placeholder())
    return copy


def predicate_fingerprint(query: exp.Expression) -> dict[str, Any]:
    """``{"shape", "template", "sets"}`` of one parsed query (see the module's text)."""
    sets: list[tuple[str, ...]] = []
    for select in query.find_all(exp.Select):
        for found in _aggregate_sets(select):
            if found not in sets:
                sets.append(found)
    return {
        "shape": _digest(_without_predicates(query).sql(dialect="duckdb", normalize=True)),
        "template": _digest(_template(query).sql(dialect="duckdb", normalize=True)),
        "sets": [list(s) for s in sets[:16]],
    }
