"""The forms a generalised column may take, one kind of generalisation each (see ``bands``).

Each judge gets one occurrence of the raw column and the node enclosing it (past
parentheses): it returns whether the occurrence must be evaluated on the declared
generalisation, or raises ``guard.generalisation`` naming the column, what was
written, and the accepted forms.  Constants are read exactly (``Fraction``,
``datetime``) and judged by :mod:`band_math`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from sqlglot import exp

from sandbox.core.classification import ColumnSpec, Generalization
from sandbox.core.errors import QueryRefused
from sandbox.query import band_math as bm

__all__ = ["INTEGER_TYPES", "RULE", "Use", "band", "prefix", "truncated", "up"]

RULE = "guard.generalisation"
INTEGER_TYPES: frozenset[str] = frozenset(
    "TINYINT SMALLINT INTEGER BIGINT HUGEINT UTINYINT USMALLINT UINTEGER UBIGINT UHUGEINT "
    "INT INT1 INT2 INT4 INT8".split()
)
_COMPARE: dict[type[exp.Expr], str] = {
    exp.EQ: "=",
    exp.NullSafeEQ: "=",
    exp.NEQ: "<>",
    exp.NullSafeNEQ: "<>",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}
_PART_FUNCTIONS: dict[str, str] = {
    "Year": "year",
    "Quarter": "quarter",
    "Month": "month",
    "Week": "week",
    "WeekOfYear": "week",
    "YearOfWeek": "week",
    "Day": "day",
    "DayOfMonth": "day",
    "DayOfWeek": "day",
    "DayOfWeekIso": "day",
    "DayOfYear": "day",
    "Hour": "hour",
    "Minute": "minute",
}
_OPERATORS: dict[str, str] = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
    "intdiv": "//",
    "mod": "%",
    "neg": "unary -",
    "between": "BETWEEN",
    "in": "IN",
    "like": "LIKE",
    "ilike": "ILIKE",
    "case": "CASE",
    "if": "CASE WHEN … THEN",
    "cast": "CAST",
    "trycast": "TRY_CAST",
    "window": "OVER",
    "distinct": "DISTINCT",
    "ordered": "ORDER BY",
}


#: round(age / 10) groups 5..14, half of two declared bands: 5-year resolution with them.
_MOVED = "{what} moves the band boundaries off the declared ones (only floor() keeps them)"


@dataclass(frozen=True)
class Use:
    """One occurrence of a raw generalised column, as the analyst wrote it."""

    column: exp.Column
    spec: ColumnSpec
    where: str  # domain.table.column
    clause: str
    written: Callable[[exp.Expr], str]

    @property
    def name(self) -> str:
        return self.column.name

    @property
    def gen(self) -> Generalization:
        assert self.spec.generalize is not None
        return self.spec.generalize

    @property
    def integral(self) -> bool:
        return (self.spec.type or "").upper() in INTEGER_TYPES

    def refuse(self, problem: str) -> QueryRefused:
        return QueryRefused(
            f"{self.where} is released {self._released()} (in {self.clause}): {problem}; "
            f"{self._accepted()}",
            rule=RULE,
        )

    def _released(self) -> str:
        gen = self.gen
        if gen.kind == "band":
            return f"in bands of {gen.width:g}"
        if gen.kind == "truncate":
            return f"truncated to the {gen.unit}"
        return f"as its first {gen.length} characters"

    def _accepted(self) -> str:
        gen, name = self.gen, self.name
        if gen.kind == "band":
            w = Fraction(Decimal(repr(gen.width)))
            lo, hi = (f"{float(3 * w):g}", f"{float(4 * w):g}")
            whole = (self.spec.type or "").upper() in INTEGER_TYPES and w.denominator == 1
            final = f"{float(3 * w) - 1:g}"
            last = f"; on whole numbers > and <= take a band's last value ({name} > {final})"
            return (
                f"use floor({name} / {gen.width:g}) * {gen.width:g}, or compare with multiples "
                f"of {gen.width:g} ({name} >= {lo} AND {name} < {hi})" + (last if whole else "")
            )
        if gen.kind == "truncate":
            unit = str(gen.unit)
            start = bm.truncate(datetime(2024, 1, 1, 8, 0), unit)
            end = bm.next_period(start, unit)
            kind = "DATE" if (self.spec.type or "").upper() == "DATE" else "TIMESTAMP"
            fmt = "%Y-%m-%d" if kind == "DATE" else "%Y-%m-%d %H:%M"
            return (
                f"use date_trunc('{unit}', {name}), or compare with >= and < at whole "
                f"{unit}s ({name} >= {kind} '{start:{fmt}}' AND {name} < {kind} '{end:{fmt}}')"
            )
        return (
            f"use left({name}, {gen.length}), or LIKE 'abc%' with at most {gen.length} "
            "characters before the %"
        )

    def what(self, node: exp.Expr) -> str:
        """How the analyst wrote the enclosing form, without its constants."""
        if isinstance(node, exp.Alias | exp.Select | exp.Group | exp.Ordered):
            return "the column as it is"
        if isinstance(node, exp.Cast):
            return "`CAST`"
        if isinstance(node, exp.Case):
            return f"`CASE {self.name} WHEN`"
        if isinstance(node, exp.Func) and not isinstance(node, exp.Binary):
            return f"{self.written(node)}()"
        if type(node) in _COMPARE:
            return f"`{self.name} {_COMPARE[type(node)]} …`"
        return f"`{_OPERATORS.get(node.key, node.key.upper())}`"


def up(node: exp.Expr) -> tuple[exp.Expr, exp.Expr | None]:
    """The node's parent past parentheses, and the (possibly parenthesised) child of it."""
    parent = node.parent
    while isinstance(parent, exp.Paren):
        node, parent = parent, parent.parent
    return node, parent


def _number(node: exp.Expr | None) -> Fraction | None:
    """A numeric constant as written (``30``, ``-2.5``, ``(40)``), exactly; else ``None``."""
    while isinstance(node, exp.Paren):
        node = node.this
    sign = 1
    if isinstance(node, exp.Neg):
        sign, node = -1, node.this
    if not isinstance(node, exp.Literal) or node.is_string:
        return None
    try:
        value = Decimal(node.name)
    except InvalidOperation:
        return None
    return sign * Fraction(value) if value.is_finite() else None


def _string(node: exp.Expr | None) -> str | None:
    while isinstance(node, exp.Paren):
        node = node.this
    return node.name if isinstance(node, exp.Literal) and node.is_string else None


def _instant(node: exp.Expr | None) -> datetime | None:
    """A DATE/TIMESTAMP constant: a string literal, or one cast to a date or time type."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Cast):  # TryCast is a Cast
        to = node.args.get("to")
        if not isinstance(to, exp.DataType) or not (
            to.is_type(exp.DataType.Type.DATE) or to.is_type(*exp.DataType.TEMPORAL_TYPES)
        ):
            return None
        node = node.this
    text = _string(node)
    return None if text is None else bm.parse_instant(text)


def _other_side(parent: exp.Expr, child: exp.Expr) -> tuple[str, exp.Expr]:
    """For ``child op other`` or ``other op child``: the operator seen from the column."""
    op = _COMPARE[type(parent)]
    if parent.this is child:
        return op, parent.expression
    return bm.FLIPPED[op], parent.this


def band(use: Use, child: exp.Expr, parent: exp.Expr) -> bool:
    width = Fraction(Decimal(repr(use.gen.width)))
    integral = use.integral
    if type(parent) in _COMPARE:
        op, other = _other_side(parent, child)
        c = _number(other)
        if c is None:
            raise use.refuse(f"{use.what(parent)} compares with something not a number")
        if not bm.band_selects_whole(op, c, width, integral=integral):
            if not integral and op in (">", "<=", "=", "<>"):
                raise use.refuse(
                    f"{use.what(parent)} cuts inside a band of a fractional column: use >= and <"
                )
            raise use.refuse(f"{use.what(parent)} cuts inside a band")
        return True
    if isinstance(parent, exp.Between) and parent.this is child:
        low, high = _number(parent.args.get("low")), _number(parent.args.get("high"))
        if low is None or high is None or parent.args.get("symmetric"):
            raise use.refuse("`BETWEEN` takes two numbers here")
        if low > high:
            return True  # selects nothing
        if not (
            bm.band_selects_whole(">=", low, width, integral=integral)
            and bm.band_selects_whole("<=", high, width, integral=integral)
        ):
            raise use.refuse(
                "`BETWEEN` cuts inside a band (its upper bound is included"
                + ("" if integral else ", which on a fractional column always cuts")
                + ")"
            )
        return True
    if isinstance(parent, exp.In) and parent.this is child and not parent.args.get("query"):
        values = [_number(v) for v in parent.expressions]
        if any(v is None for v in values):
            raise use.refuse("`IN` takes numbers here")
        if not bm.band_set_whole([v for v in values if v is not None], width, integral=integral):
            raise use.refuse("`IN` picks single values inside a band")
        return True
    if isinstance(parent, exp.IntDiv) and parent.this is child:
        divisor = _number(parent.expression)
        if not integral:
            raise use.refuse("`//` on a fractional column is a plain division in DuckDB")
        _coarser_width(use, parent, divisor, width)
        return True
    if isinstance(parent, exp.Div) and parent.this is child:
        divided, floor = up(parent)
        if isinstance(floor, exp.Floor) and floor.this is divided and not _extra(floor):
            _coarser_width(use, floor, _number(parent.expression), width)
            return not (_number(parent.expression) == width and _is_declared(floor))
        if isinstance(floor, exp.Round | exp.Ceil):
            raise use.refuse(_MOVED.format(what=use.what(floor)))
        raise use.refuse(f"{use.what(parent)} without floor() is not a band")
    if isinstance(parent, exp.Round | exp.Ceil):
        raise use.refuse(_MOVED.format(what=use.what(parent)))
    raise use.refuse(f"{use.what(parent)} of {use.name} does not keep to its bands")


def _extra(node: exp.Expr) -> bool:
    """Arguments besides ``this`` (``floor(x, 1)``, a zone): not the plain form."""
    return any(v is not None for k, v in node.args.items() if k != "this")


def _is_declared(floor: exp.Expr) -> bool:
    """``floor(x / w) * w`` exactly as the declared form: already generalised."""
    _, mul = up(floor)
    return isinstance(mul, exp.Mul) and _number(mul.expression) == _number(floor.this.expression)


def _coarser_width(use: Use, node: exp.Expr, divisor: Fraction | None, width: Fraction) -> None:
    if divisor is None or divisor <= 0 or (divisor / width).denominator != 1:
        raise use.refuse(
            f"{use.what(node)} must divide by a positive multiple of {use.gen.width:g}"
        )


def truncated(use: Use, child: exp.Expr, parent: exp.Expr) -> bool:
    declared = str(use.gen.unit)
    dates = (use.spec.type or "").upper() == "DATE"
    if type(parent) in _COMPARE or isinstance(parent, exp.Between | exp.In):
        if isinstance(parent, exp.Between) and parent.this is child:
            low = _instant(parent.args.get("low"))
            high = _instant(parent.args.get("high"))
            ok = (
                low is not None
                and high is not None
                and bm.instant_aligned(">=", low, declared, dates=dates)
                and bm.instant_aligned("<=", high, declared, dates=dates)
            )
            problem = "`BETWEEN` includes its upper bound, which cuts inside a period"
        elif isinstance(parent, exp.In) and parent.this is child:
            moments = [_instant(v) for v in parent.expressions]
            ok = dates and declared == "day" and all(m is not None for m in moments)
            ok = ok and all(bm.instant_aligned("=", m, "day", dates=True) for m in moments if m)
            problem = "`IN` picks single instants inside a period"
        elif type(parent) in _COMPARE:
            op, other = _other_side(parent, child)
            moment = _instant(other)
            ok = moment is not None and bm.instant_aligned(op, moment, declared, dates=dates)
            problem = f"{use.what(parent)} cuts inside a period"
        else:
            raise use.refuse(f"{use.what(parent)} of {use.name} does not keep to its periods")
        if not ok:
            raise use.refuse(problem)
        return True
    units = _units_of(parent, child)
    if units is None:
        raise use.refuse(f"{use.what(parent)} of {use.name} does not keep to its periods")
    for unit in units:
        if not bm.coarser_unit(unit, declared):
            raise use.refuse(f"{use.what(parent)} needs the {unit}, finer than the {declared}")
    declared_form = isinstance(parent, exp.TimestampTrunc | exp.DateTrunc) and units == (declared,)
    return not declared_form


def _units_of(parent: exp.Expr, child: exp.Expr) -> tuple[str, ...] | None:
    """The truncation units a date form depends on; ``None`` if it is not one."""
    name = ""
    if isinstance(parent, exp.TimestampTrunc | exp.DateTrunc) and parent.this is child:
        unit = parent.args.get("unit")
        if isinstance(unit, exp.Var | exp.Literal) and parent.args.get("zone") is None:
            name = unit.name.lower() if unit.name.lower() in bm.UNITS else ""
    elif isinstance(parent, exp.Extract) and parent.expression is child:
        field = parent.this
        if isinstance(field, exp.Var | exp.Literal):
            name = bm.FIELD_UNITS.get(field.name.lower(), "")
    elif type(parent).__name__ in _PART_FUNCTIONS and parent.this is child:
        name = "" if _extra(parent) else _PART_FUNCTIONS[type(parent).__name__]
    elif isinstance(parent, exp.Cast) and parent.this is child:
        to = parent.args.get("to")
        name = "day" if isinstance(to, exp.DataType) and to.is_type(exp.DataType.Type.DATE) else ""
    elif isinstance(parent, exp.TimeToStr) and parent.this is child:  # strftime(t, '%Y-%m-%d')
        fmt = _string(parent.args.get("format"))
        extra = any(v is not None for k, v in parent.args.items() if k not in ("this", "format"))
        return None if fmt is None or extra else bm.format_units(fmt)
    return (name,) if name else None


def prefix(use: Use, child: exp.Expr, parent: exp.Expr) -> bool:
    n = int(use.gen.length or 0)
    if isinstance(parent, exp.Left) and parent.this is child:
        m = _number(parent.expression)
        if m is None or m.denominator != 1 or not 1 <= m <= n:
            raise use.refuse(f"{use.what(parent)} takes at most {n} characters")
        return m != n
    if isinstance(parent, exp.Substring) and parent.this is child:
        start, length = _number(parent.args.get("start")), _number(parent.args.get("length"))
        if start != 1 or length is None or length.denominator != 1 or not 1 <= length <= n:
            raise use.refuse(f"{use.what(parent)} must start at 1 and take at most {n} characters")
        return True
    if isinstance(parent, exp.Like | exp.ILike) and parent.this is child:
        pattern = _string(parent.expression)
        escaped = isinstance(parent.parent, exp.Escape)
        head = (pattern or "")[:-1]
        if (
            pattern is None
            or escaped
            or not pattern.endswith("%")
            or any(ch in head for ch in "%_\\")
            or len(head) > n
        ):
            raise use.refuse(f"{use.what(parent)} takes a pattern 'abc%' of at most {n} characters")
        return True
    if isinstance(parent, exp.StartsWith) and parent.this is child:
        text = _string(parent.expression)
        if text is None or len(text) > n:
            raise use.refuse(f"{use.what(parent)} takes at most {n} characters")
        return True
    if type(parent) in _COMPARE and _COMPARE[type(parent)] in ("=", "<>"):
        _, other = _other_side(parent, child)
        text = _string(other)
        if text is None or len(text) >= n:
            raise use.refuse(
                f"{use.what(parent)} separates values that share their first {n} characters "
                f"(only constants shorter than {n} characters are whole prefixes)"
            )
        return True
    if isinstance(parent, exp.In) and parent.this is child and not parent.args.get("query"):
        texts = [_string(v) for v in parent.expressions]
        if any(t is None or len(t) >= n for t in texts):
            raise use.refuse(f"`IN` takes constants shorter than {n} characters here")
        return True
    raise use.refuse(f"{use.what(parent)} of {use.name} does not keep to its prefix")
