"""A query's HAVING over its released values, evaluated in Arrow where that is certain.

The released outputs are computed by running the release SELECT over the released
statistics in DuckDB (``release.over_released``): about 1.4 ms even for three rows
(registering the table, planning, converting back).  Most releases are a plain
projection, which ``release`` already takes without DuckDB; with a ``HAVING`` the
release has a ``WHERE``.  Here that ``WHERE`` is translated, once per plan, into a small
tree (:func:`filter_spec`) of the forms whose SQL meaning Arrow's compute functions give
exactly, and applied to the released rows (:func:`apply_filter`):

* comparisons (``= <> < <= > >=``) between released columns and number or text
  literals (a decimal literal only where a double holds it exactly: DuckDB compares
  DECIMALs exactly), ``IS [NOT] NULL``, ``AND``, ``OR`` and ``NOT`` with SQL's three-valued logic
  (Arrow's Kleene kernels), ``TRY`` and parentheses around them;
* a row is kept only where the condition is true (NULL drops it), as ``WHERE`` does.

Closed by construction: any other node makes :func:`filter_spec` answer None, and the
release runs in DuckDB as before.  At run time :func:`apply_filter` answers None
(DuckDB decides) where the types could make the two disagree: a comparison that is
not integer with integer, DOUBLE with DOUBLE (no NaN in the column: DuckDB orders NaN
above every number, Arrow compares it false; a REAL column DuckDB compares in single
precision), integer with DOUBLE inside ±2**53, or text with text.  Only released
values are read, so whichever path runs, nothing else is disclosed;
``tests/sandbox/query/test_release_filter.py`` checks both give the same rows on
random tables and conditions.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

__all__ = ["FilterSpec", "apply_filter", "filter_spec"]

#: ("and" | "or", left, right) | ("not", operand) | ("null", operand, negated)
#: | ("cmp", op, left, right) with operands ("col", name) | ("lit", value).
FilterSpec = tuple[Any, ...]

_COMPARISONS: dict[type[exp.Expr], str] = {
    exp.EQ: "equal",
    exp.NEQ: "not_equal",
    exp.GT: "greater",
    exp.GTE: "greater_equal",
    exp.LT: "less",
    exp.LTE: "less_equal",
}
_EXACT = 2**53


def filter_spec(node: exp.Expr) -> FilterSpec | None:
    """The condition as a :data:`FilterSpec`, or None if any part of it is not one of
    the understood forms (then DuckDB evaluates it)."""
    if isinstance(node, exp.Try | exp.Paren):
        return filter_spec(node.this)
    if isinstance(node, exp.And | exp.Or):
        left, right = filter_spec(node.left), filter_spec(node.right)
        if left is None or right is None:
            return None
        return ("and" if isinstance(node, exp.And) else "or", left, right)
    if isinstance(node, exp.Not):
        inner = node.this
        if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
            operand = _operand(inner.this)
            return None if operand is None else ("null", operand, True)
        operand_spec = filter_spec(inner)
        return None if operand_spec is None else ("not", operand_spec)
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        operand = _operand(node.this)
        return None if operand is None else ("null", operand, False)
    op = _COMPARISONS.get(type(node))
    if op is not None and isinstance(node, exp.Binary):
        left, right = _operand(node.left), _operand(node.right)
        if left is None or right is None or (left[0] == "lit" and right[0] == "lit"):
            return None
        return ("cmp", op, left, right)
    return None


def _operand(node: exp.Expr) -> tuple[str, Any] | None:
    if isinstance(node, exp.Paren):
        return _operand(node.this)
    if isinstance(node, exp.Column) and not node.table:
        return ("col", node.name)
    negative = isinstance(node, exp.Neg)
    if negative:
        node = node.this
    if isinstance(node, exp.Literal):
        if node.is_string:
            return None if negative else ("lit", node.this)
        value = _number(node.this)
        if value is None:
            return None
        return ("lit", -value if negative else value)
    return None


def _number(text: str) -> int | float | None:
    """A number literal as DuckDB reads it, or None where Python's would differ.

    An integer within BIGINT; ``1e3`` a DOUBLE (``float``); ``2.5`` a DECIMAL, compared
    exactly, so only where the nearest double is that decimal exactly (``2.5`` but not
    ``0.1`` or ``2.00000000000000001``: with those DuckDB decides).
    """
    try:
        if "e" in text.lower():
            return float(text)
        exact = Decimal(text)
    except (ValueError, ArithmeticError):
        return None
    if exact == exact.to_integral_value() and "." not in text:
        whole = int(exact)
        return whole if -(2**63) <= whole < 2**63 else None
    nearest = float(exact)
    return nearest if Decimal(nearest) == exact else None


def apply_filter(table: pa.Table, spec: FilterSpec) -> pa.Table | None:
    """The rows of ``table`` where ``spec`` is true, or None where Arrow and DuckDB could
    disagree on these columns' types or values (the caller then asks DuckDB)."""
    try:
        mask = _mask(table, spec)
    except (_Undecided, KeyError, pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    return table.filter(mask)


class _Undecided(Exception):
    """Arrow might not give DuckDB's answer here."""


def _mask(table: pa.Table, spec: FilterSpec) -> pa.ChunkedArray | pa.Array:
    kind = spec[0]
    if kind in ("and", "or"):
        left, right = _mask(table, spec[1]), _mask(table, spec[2])
        return pc.and_kleene(left, right) if kind == "and" else pc.or_kleene(left, right)
    if kind == "not":
        return pc.invert(_mask(table, spec[1]))
    if kind == "null":
        values = _values(table, spec[1])
        if not isinstance(values, pa.ChunkedArray | pa.Array):
            raise _Undecided
        return pc.is_valid(values) if spec[2] else pc.is_null(values)
    _, op, left, right = spec
    a, b = _values(table, left), _values(table, right)
    _comparable(a, b)
    return getattr(pc, op)(a, b)


def _values(table: pa.Table, operand: tuple[str, Any]) -> Any:
    return table.column(operand[1]) if operand[0] == "col" else operand[1]


def _comparable(a: Any, b: Any) -> None:
    """Raise :class:`_Undecided` unless comparing ``a`` with ``b`` means the same in both."""
    kinds = (_kind(a), _kind(b))
    if kinds[0] is None or kinds[1] is None:
        raise _Undecided
    if kinds in (("int", "int"), ("text", "text")):
        return
    if set(kinds) <= {"int", "float"}:
        for side, kind in zip((a, b), kinds, strict=True):
            if kind == "float" and _has_nan(side):
                raise _Undecided
            if kind == "int" and "float" in kinds and not _within_exact(side):
                raise _Undecided
        return
    raise _Undecided


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    kind = value.type
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_float64(kind):  # a REAL column: DuckDB compares it in single precision
        return "float"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    return None


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return value != value
    return bool(pc.any(pc.is_nan(value)).as_py())


def _within_exact(value: Any) -> bool:
    if isinstance(value, int):
        return -_EXACT <= value <= _EXACT
    if len(value) == value.null_count:
        return True
    low, high = pc.min_max(value).values()
    return bool(-_EXACT <= low.as_py() and high.as_py() <= _EXACT)
