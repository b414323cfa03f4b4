"""Predicates that cannot raise on any row, which the rewrite may leave without ``TRY``.

The rewrite wraps every predicate that runs in the enclave in ``TRY(...)``
(``rewrite.contain_errors``): an error raised by some row's value would be one exact
bit about the rows, so a predicate is NULL where it would fail.  ``TRY`` also keeps
DuckDB from pushing the filter into the table scan: a selective filter on 10 M claims
(``age = 37``, ``claim_date >= DATE '...'``) took 17-19 ms inside ``TRY`` against 13 ms
bare (DuckDB 2.0.1, December 2026).  A predicate that cannot fail on any value needs no
``TRY``.  Closed by construction: :func:`cannot_raise` says yes only to these forms, and
everything else keeps its ``TRY``:

- ``AND``, ``OR``, ``NOT`` and parentheses of predicates of this list;
- ``col IS NULL``, ``col IS NOT NULL``;
- ``col <op> literal`` (``=``, ``<>``, ``<``, ``<=``, ``>``, ``>=``, either side),
  ``col BETWEEN literal AND literal`` and ``col IN (literal, ...)``, where ``col`` is a
  column of a dataset read directly by the same SELECT (a FROM or JOIN of the dataset's
  own table, not of a CTE or a derived table), whose type the catalog knows (the data's
  own: classifications are checked against the loaded table at registration), and
  either
  - the column is a signed integer (``TINYINT`` ... ``HUGEINT``) and every literal an
    integer within ``BIGINT`` (DuckDB compares them in the wider signed type: every
    value converts), or
  - the column is ``VARCHAR`` and every literal a string (compared as strings).

Not on the list, among others: ``DECIMAL`` columns (a literal with more decimals makes
DuckDB cast the column to a decimal with fewer integer digits, which can fail on a
large value), unsigned integers, floats, dates and times (a string literal is converted),
a string column against a number (each value is converted: ``'abc'`` fails), functions,
arithmetic, casts, ``LIKE``, subqueries.

A top-level ``AND`` may be split: ``a AND TRY(b)`` keeps exactly the rows
``TRY(a AND b)`` keeps (a row where ``b`` would fail is NULL there, and ``a AND NULL``
is never true), so the conjuncts that cannot raise stand bare (:func:`split_and`).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp

__all__ = ["cannot_raise", "column_types", "split_and"]

#: Signed integer types: any two compare in the wider one, which holds every value.
_SIGNED = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"})
_STRING = frozenset({"VARCHAR"})
_BIGINT = (-(2**63), 2**63 - 1)
_COMPARISONS = (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)


def column_types(
    select: exp.Select, types: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """Column types by table alias, for the datasets ``select`` reads directly.

    ``types``: each dataset's (``domain.table``) column types, lower-case names; a
    dataset not in it, a CTE or a derived table contributes nothing.
    """
    out: dict[str, dict[str, str]] = {}
    sources = [select.args.get("from_"), *(select.args.get("joins") or [])]
    for source in sources:
        table = source.this if isinstance(source, exp.From | exp.Join) else None
        if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
            continue
        db = table.args.get("db")
        if not isinstance(db, exp.Identifier) or table.args.get("catalog"):
            continue
        known = types.get(f"{db.name.lower()}.{table.name.lower()}")
        if known is None:
            continue
        out[(table.alias or table.name).lower()] = dict(known)
    return out


def split_and(predicate: exp.Expr) -> list[exp.Expr]:
    """The conjuncts of a top-level ``AND`` (parentheses looked through); else itself."""
    node = predicate
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return [*split_and(node.this), *split_and(node.expression)]
    return [predicate]


#: Steps that are NULL wherever an operand is (strict): a non-NULL result has every
#: column under it not NULL.  TRY is one too (NULL on an error, else its operand).
_STRICT: tuple[type[exp.Expr], ...] = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Paren,
    exp.Cast,  # TRY_CAST too
    exp.DataType,
    exp.Floor,
    exp.Ceil,
    exp.Mul,
    exp.Div,
    exp.Add,
    exp.Sub,
    exp.Neg,
)


def _unwrapped(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren | exp.Try):
        node = node.this
    return node


def kept_non_null(predicate: exp.Expr, value: exp.Expr) -> bool:
    """Whether every row ``predicate`` keeps has every column of ``value`` not NULL.

    Each column must be under an ``IS NOT NULL`` conjunct of the predicate (``NOT (e) IS
    NULL``, TRY or parentheses around it), ``e`` the column itself or strict steps of it
    (``_STRICT``: a banded column's ``TRY_CAST(floor(x / 10) * 10 AS INT)``).
    """
    tested: set[str] = set()
    for conjunct in split_and(_unwrapped(predicate)):
        node = _unwrapped(conjunct)
        test = _unwrapped(node.this) if isinstance(node, exp.Not) else None
        if isinstance(test, exp.Is) and isinstance(test.expression, exp.Null):
            operand = test.this
            if all(isinstance(n, _STRICT) for n in operand.walk()):
                tested |= {c.sql(dialect="duckdb") for c in operand.find_all(exp.Column)}
    columns = [c.sql(dialect="duckdb") for c in value.find_all(exp.Column)]
    return bool(columns) and all(c in tested for c in columns)


def cannot_raise(predicate: exp.Expr, columns: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether ``predicate`` is of the forms above (``columns``: :func:`column_types`)."""
    node = predicate
    if isinstance(node, exp.Paren):
        return cannot_raise(node.this, columns)
    if isinstance(node, exp.And | exp.Or):
        return cannot_raise(node.this, columns) and cannot_raise(node.expression, columns)
    if isinstance(node, exp.Not):
        return cannot_raise(node.this, columns)
    if isinstance(node, exp.Is):
        return isinstance(node.expression, exp.Null) and _type(node.this, columns) is not None
    if isinstance(node, _COMPARISONS):
        left, right = node.this, node.expression
        if isinstance(left, exp.Column):
            return _comparable(_type(left, columns), [right])
        return isinstance(right, exp.Column) and _comparable(_type(right, columns), [left])
    if isinstance(node, exp.Between):
        return _comparable(_type(node.this, columns), [node.args.get("low"), node.args.get("high")])
    if isinstance(node, exp.In):
        if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
            return False
        values = node.expressions
        return bool(values) and _comparable(_type(node.this, columns), values)
    return False


def _type(node: exp.Expr, columns: Mapping[str, Mapping[str, str]]) -> str | None:
    """The type of a column of a dataset read directly (None: not one, or unknown)."""
    if not isinstance(node, exp.Column) or not isinstance(node.this, exp.Identifier):
        return None
    if not node.table or node.args.get("db") or node.args.get("catalog"):
        return None
    return columns.get(node.table.lower(), {}).get(node.name.lower())


def _comparable(kind: str | None, literals: list[exp.Expr | None]) -> bool:
    if kind is None or not literals:
        return False
    kind = kind.upper()
    if kind in _SIGNED:
        return all(_integer(v) for v in literals)
    if kind in _STRING:
        return all(isinstance(v, exp.Literal) and v.is_string for v in literals)
    return False


def _integer(node: exp.Expr | None) -> bool:
    """An integer literal within ``BIGINT`` (``-`` before it allowed)."""
    negative = False
    while isinstance(node, exp.Neg):
        negative, node = not negative, node.this
    if not isinstance(node, exp.Literal) or node.is_string:
        return False
    text = node.this
    if not isinstance(text, str) or not text.isascii() or not text.isdigit():
        return False
    value = -int(text) if negative else int(text)
    return _BIGINT[0] <= value <= _BIGINT[1]
