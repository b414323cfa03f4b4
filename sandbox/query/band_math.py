"""Which constant comparisons select whole bands: the arithmetic behind :mod:`bands`.

A generalisation splits a column's values into classes (bands ``[k·w, (k+1)·w)``,
hours, months, prefixes of n characters).  A predicate is acceptable on the raw
column when it selects a union of whole classes: then it is a function of the
generalised value.  For comparisons with a constant that is a question about the
*cut points* the comparison makes, and whether each is a class boundary.

Integer and fractional columns differ.  ``age <= 39`` is ``age < 40`` for an
INTEGER age (cut at 40, a boundary) but cuts the band ``[30, 40)`` of a DOUBLE one
(39.5 is out, 39 is in).  Dates are integers of days; timestamps are continuous.
Everything here is exact (``Fraction``, ``datetime``): no float rounding decides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from fractions import Fraction

__all__ = [
    "COMPARISONS",
    "FIELD_UNITS",
    "UNITS",
    "band_selects_whole",
    "band_set_whole",
    "coarser_unit",
    "format_units",
    "instant_aligned",
    "next_period",
    "parse_instant",
    "truncate",
]

#: Comparison operators, as written, with the column on the left.
COMPARISONS = ("=", "<>", "<", "<=", ">", ">=")
FLIPPED = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

#: Truncation units, finest first.
UNITS = ("minute", "hour", "day", "week", "month", "quarter", "year")

#: Units whose every boundary is a boundary of the declared unit: truncating to them
#: is a function of the declared truncation.  Weeks start on Mondays, which are days
#: but not months: ``week`` is coarser than ``day``, not comparable with ``month``.
_COARSER: dict[str, frozenset[str]] = {
    "minute": frozenset(UNITS),
    "hour": frozenset(UNITS[1:]),
    "day": frozenset(UNITS[2:]),
    "week": frozenset({"week"}),
    "month": frozenset({"month", "quarter", "year"}),
    "quarter": frozenset({"quarter", "year"}),
    "year": frozenset({"year"}),
}

#: The unit that determines a date part (``extract(hour FROM t)`` needs the hour).
FIELD_UNITS: dict[str, str] = {
    "year": "year",
    "years": "year",
    "decade": "year",
    "century": "year",
    "millennium": "year",
    "quarter": "quarter",
    "month": "month",
    "months": "month",
    "week": "week",
    "weeks": "week",
    "weekofyear": "week",
    "yearweek": "week",
    "isoyear": "week",
    "day": "day",
    "days": "day",
    "dayofmonth": "day",
    "dayofweek": "day",
    "dow": "day",
    "isodow": "day",
    "weekday": "day",
    "dayofyear": "day",
    "doy": "day",
    "hour": "hour",
    "hours": "hour",
    "minute": "minute",
    "minutes": "minute",
}


#: strftime specifiers and the unit each needs (week numbers: their day, whichever week
#: start they use; anything finer than a minute, or unknown, is not listed: refused).
FORMAT_UNITS: dict[str, str] = {
    **dict.fromkeys("YyCG", "year"),
    **dict.fromkeys("mbBh", "month"),
    **dict.fromkeys("deajAwuUWV", "day"),
    **dict.fromkeys("HIpkl", "hour"),
    "M": "minute",
}


def format_units(fmt: str) -> tuple[str, ...] | None:
    """The units a ``strftime`` format reads (``'%Y-%m-%d %H:00'``: year … hour), or ``None``.

    >>> format_units("%Y-%m-%d %H:00")
    ('year', 'month', 'day', 'hour')
    >>> format_units("%H:%M:%S") is None
    True
    """
    units: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] != "%":
            i += 1
            continue
        spec = fmt[i + 1 : i + 3]
        spec = spec[1:] if spec.startswith("-") else spec[:1]
        if spec == "%":
            i += 2
            continue
        if spec not in FORMAT_UNITS:
            return None
        units.append(FORMAT_UNITS[spec])
        i += 3 if fmt[i + 1 : i + 2] == "-" else 2
    return tuple(units)


def coarser_unit(unit: str, declared: str) -> bool:
    """Is truncation to ``unit`` a function of truncation to ``declared``?"""
    return unit in _COARSER.get(declared, frozenset())


# -- bands of numbers ----------------------------------------------------------------------


def _band_start(t: int, width: Fraction) -> bool:
    """Is the integer ``t`` the smallest integer of its band?"""
    return math.ceil(math.floor(t / width) * width) == t


def _threshold(op: str, c: Fraction) -> int:
    """The integer t with ``x op c`` equal to ``x >= t`` (or its complement), x integral."""
    if op in (">=", "<"):
        return math.ceil(c)
    return math.floor(c) + 1  # ">" and "<="


def band_selects_whole(op: str, c: Fraction, width: Fraction, *, integral: bool) -> bool:
    """Does ``x op c`` select a union of whole bands ``[k·width, (k+1)·width)``?

    >>> band_selects_whole(">=", Fraction(30), Fraction(10), integral=True)
    True
    >>> band_selects_whole("<=", Fraction(39), Fraction(10), integral=True)
    True
    >>> band_selects_whole("<=", Fraction(39), Fraction(10), integral=False)
    False
    """
    if integral:
        if op in ("=", "<>"):
            if c.denominator != 1:
                return True  # no integer equals it: selects nothing (or everything)
            t = int(c)
            return _band_start(t, width) and _band_start(t + 1, width)
        return _band_start(_threshold(op, c), width)
    if op in (">=", "<"):
        return (c / width).denominator == 1
    return False  # a fractional column: > and <= exclude or include a band's own start


def band_set_whole(values: Iterable[Fraction], width: Fraction, *, integral: bool) -> bool:
    """Does ``x IN (values)`` select a union of whole bands?  (Integers only, small bands.)"""
    if not integral:
        return False  # each value is a point inside its band
    wanted = {int(v) for v in values if v.denominator == 1}
    for v in wanted:
        k = math.floor(v / width)
        lo, hi = math.ceil(k * width), math.ceil((k + 1) * width)
        if hi - lo > len(wanted) or not all(i in wanted for i in range(lo, hi)):
            return False
    return True


# -- truncated times -----------------------------------------------------------------------


def truncate(moment: datetime, unit: str) -> datetime:
    """``date_trunc(unit, moment)`` as DuckDB computes it (weeks start on Monday)."""
    if unit == "minute":
        return moment.replace(second=0, microsecond=0)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "quarter":
        return day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)
    assert unit == "year", unit
    return day.replace(month=1, day=1)


def next_period(moment: datetime, unit: str) -> datetime:
    """The start of the period after the one ``moment`` starts (for examples in messages)."""
    if unit in ("minute", "hour", "day", "week"):
        step = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}[unit]
        return moment + timedelta(seconds=step)
    months = {"month": 1, "quarter": 3, "year": 12}[unit]
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1)


def _aligned(moment: datetime, unit: str) -> bool:
    return truncate(moment, unit) == moment


def instant_aligned(op: str, moment: datetime, unit: str, *, dates: bool) -> bool:
    """Does ``x op moment`` select whole ``unit`` periods?  ``dates``: x is a DATE column.

    A DATE is a whole day, so ``d > DATE '2024-01-31'`` is ``d >= DATE '2024-02-01'``;
    a timestamp is continuous, so only ``>=`` and ``<`` at a boundary keep periods whole.
    """
    if dates:
        if moment != truncate(moment, "day"):
            return False  # a time of day compared with a DATE: refused, not guessed
        nxt = moment + timedelta(days=1)
        if op in (">=", "<"):
            return _aligned(moment, unit)
        if op in (">", "<="):
            return _aligned(nxt, unit)
        return _aligned(moment, unit) and _aligned(nxt, unit)  # "=" and "<>"
    return op in (">=", "<") and _aligned(moment, unit)


def parse_instant(text: str) -> datetime | None:
    """A DATE or TIMESTAMP literal's value; ``None`` for anything with a zone or unparsed."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            value = datetime.combine(date.fromisoformat(text.strip()), datetime.min.time())
        except ValueError:
            return None
    return None if value.tzinfo is not None else value
