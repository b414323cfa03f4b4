# Over 400 lines: NumPy fast paths, each beside the per-value definition it must equal.
"""Disclosure's per-group arithmetic a column at a time, with the per-value result exactly.

The privacy argument of ``docs/disclosure.md`` is written over exact values: a true sum
is rounded to the noise grid as ``round(Fraction(v) / resolution)``, a noisy one released
as ``float(units * resolution)``, a rounded one as Python's ``round(v, digits)``.  Doing
that with ``Fraction`` per group was most of disclosure's time on a wide table, so each
function here computes the whole column in float64 or int64 with NumPy and then
**certifies** every row: a float row is kept only where the error bound of the float
operations (a few units in the last place, stated at each) cannot change the integer
it rounds to, and an operation whose operands are exact is kept only where IEEE's
single correct rounding is the definition's.  Rows that fail (near a tie, beyond 2**51,
not finite, a type NumPy cannot hold exactly) are computed by the per-value definition,
in row order, so they raise what it raises.  The result is the definition's bit for bit
(``tests/sandbox/query/test_disclosure_vector.py`` compares with the row-wise code).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "Ints",
    "as_ints",
    "dominant_rows",
    "grid_units",
    "grid_values",
    "least",
    "magnitudes_of",
    "noisy_units",
    "rounded",
    "square_units",
    "top_shares",
    "uncentred",
    "uncentred_squares",
]

#: int64 values, or Python ints (dtype object) where one does not fit: ``int(v)`` per value.
Ints = npt.NDArray[Any]
Floats = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

#: Integers up to this magnitude are exact in float64.
_EXACT = 2**53
#: Beyond this a float64 has no fraction bits worth certifying: left to the definition.
_WHOLE = 2.0**51
#: A bound on the relative error of three correctly rounded float64 operations (3·2**-53),
#: with room; and an absolute floor for results in the subnormal range.
_RELATIVE = 2.0**-50
_ABSOLUTE = 2.0**-1000
#: The smallest normal float64: below it a float is not within 2**-53 of its value.
_NORMAL = sys.float_info.min


def as_ints(array: pa.Array, null: int) -> Ints | None:
    """``int(v)`` per value (``null`` for a null) as int64, if the type is an integer one
    (a decimal of scale 0 included) and every value fits; else None.
    """
    kind = array.type
    if not (pa.types.is_integer(kind) or (pa.types.is_decimal(kind) and kind.scale == 0)):
        return None
    try:
        ints = pc.cast(array, pa.int64())  # a safe cast: an overflow raises, never wraps
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    values: Ints = pc.fill_null(ints, null).to_numpy(zero_copy_only=False)
    return values


def _as_float(value: Fraction | int) -> float | None:
    """``float(value)``, or None where it has none (beyond float64's range)."""
    try:
        return float(value)
    except OverflowError:
        return None


def _floats(array: pa.Array) -> tuple[Floats, Mask]:
    """The values as float64 (a null as 0.0), and where that is the exact value (finite)."""
    if pa.types.is_floating(array.type):
        values = pc.fill_null(pc.cast(array, pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        return values, np.isfinite(values)
    ints = as_ints(array, 0)
    if ints is None:
        return np.zeros(len(array)), np.zeros(len(array), np.bool_)
    return ints.astype(np.float64), np.abs(ints) <= _EXACT


def _merge(fast: Ints, ok: Mask, slow: Callable[[int], int]) -> Ints:
    """``fast`` where ``ok``, else ``slow(i)`` in row order; int64 if every value fits."""
    rows = np.flatnonzero(~ok)
    if not len(rows):
        return fast
    values = [slow(int(i)) for i in rows]
    if all(-(2**63) <= v < 2**63 for v in values):
        out = fast.copy()
        out[rows] = values
        return out
    mixed = fast.astype(object)
    mixed[rows] = values
    return mixed


def least(columns: list[pa.Array]) -> Ints:
    """Per group the smallest of its entity counts, a null as -1 (disclosure's ``_least``)."""
    ints = [as_ints(column, -1) for column in columns]
    if all(i is not None for i in ints):
        smallest: Ints = np.minimum.reduce([i for i in ints if i is not None])
        return smallest
    values = [column.to_pylist() for column in columns]  # per row, as the definition
    return np.array(
        [min(-1 if v is None else int(v) for v in row) for row in zip(*values, strict=True)]
        or np.zeros(0, np.int64),
        dtype=object,
    )


def _centre_product(centre: Fraction, counts: Ints) -> tuple[Floats, Mask]:
    """``centre · n`` in float64 and where it is exact.

    ``centre`` is a dyadic ``M·2**E`` (M odd, from float bounds); the product of two
    float64 operands is exact when ``|M·n| <= 2**53`` and it neither overflows nor
    underflows (E is a float64's own exponent, so it never underflows).
    """
    as_float = float(centre)
    if Fraction(as_float) != centre:
        return np.zeros(len(counts)), np.zeros(len(counts), np.bool_)
    odd = abs(centre.numerator)
    while odd and odd % 2 == 0:
        odd //= 2
    limit = _EXACT // max(odd, 1)
    with np.errstate(all="ignore"):
        fits = np.abs(counts) <= limit
        product = np.where(fits, counts, 0).astype(np.float64) * as_float
        return product, fits & np.isfinite(product)


def grid_units(
    sums: pa.Array,
    resolution: Fraction,
    centre: Fraction = Fraction(0),
    counts: pa.Array | None = None,
) -> Ints:
    """``round((Fraction(s or 0) - centre·int(n or 0)) / resolution)`` per group.

    Float form: ``q = fl(fl(s - c·n) / fl(resolution))`` with ``c·n`` exact: three
    correct roundings, so ``|q - exact| <= |q|·2**-50`` (plus a subnormal floor).  A row
    is certified where ``|q| < 2**51`` and ``q`` is more than that bound inside 0.5 of
    ``rint(q)``: then ``rint(q)`` is the exact quotient's nearest integer, and no tie
    can reach it.
    """
    values, ok = _floats(sums)
    n: Ints | None = None
    if centre:
        n = as_ints(counts, 0) if counts is not None else None
        if n is None:
            ok = np.zeros(len(sums), np.bool_)
            product = np.zeros(len(sums))
        else:
            product, exact = _centre_product(centre, n)
            ok &= exact
    step = _as_float(resolution)
    if (
        step is None or not _NORMAL <= step < math.inf
    ):  # a subnormal grid is not within 2**-53 of itself
        ok = np.zeros(len(sums), np.bool_)
    with np.errstate(all="ignore"):
        shifted = values - product if centre else values
        q = shifted / (step or 1.0)
        whole = np.rint(q)
        bound = np.abs(q) * _RELATIVE + _ABSOLUTE
        ok &= np.isfinite(q) & (np.abs(q) < _WHOLE) & (np.abs(q - whole) < 0.5 - bound)
        fast = np.where(ok, whole, 0.0).astype(np.int64)
    slow_sums: list[Any] | None = None
    slow_counts: list[Any] | None = None

    def definition(i: int) -> int:
        nonlocal slow_sums, slow_counts
        if slow_sums is None:
            slow_sums = sums.to_pylist()
            slow_counts = counts.to_pylist() if centre and counts is not None else None
        value = Fraction(slow_sums[i] or 0)
        if centre:
            assert slow_counts is not None
            value -= centre * int(slow_counts[i] or 0)
        return round(value / resolution)

    return _merge(fast, ok, definition)


def square_units(
    squares: pa.Array,
    sums: pa.Array,
    counts: pa.Array,
    resolution: Fraction,
    centre: Fraction,
) -> Ints:
    """``round((Fraction(q or 0) - 2·centre·Fraction(s or 0) + centre²·int(n or 0)) /
    resolution)`` per group: a sum of squares centred on ``centre`` (``Σ(x - c)²``).

    Float form: ``t = fl(fl(q - fl(2c·s)) + fl(fl(c²)·n))`` then ``fl(t / step)``.  With
    ``M = |q| + |2c·s| + |c²·n|`` each of the five roundings errs by at most
    ``2**-53`` of ``M`` (``2c`` is exact, ``c²`` within ``2**-53`` of itself), so
    ``|t - exact| <= M·2**-50`` and the quotient is within ``(M/step)·2**-49 +
    |quotient|·2**-50`` of the exact one (``step`` within ``2**-53`` of ``resolution``);
    a row is certified where that is more than its distance inside 0.5 of ``rint``, as in
    :func:`grid_units`.  The cancellation of ``q`` against ``c²·n`` is why the bound is on
    ``M``, not on the result.
    """
    q, ok = _floats(squares)
    s, ok_s = _floats(sums)
    n = as_ints(counts, 0)
    ok = ok & ok_s
    if n is None:
        ok = np.zeros(len(squares), np.bool_)
        n = np.zeros(len(squares), np.int64)
    else:
        ok &= np.abs(n) <= _EXACT
    twice, square = _as_float(2 * centre), _as_float(centre * centre)
    step = _as_float(resolution)
    if (
        twice is None
        or square is None
        or Fraction(twice) != 2 * centre
        or step is None
        or not _NORMAL <= step < math.inf
        or not math.isfinite(square)
    ):
        ok = np.zeros(len(squares), np.bool_)
        twice, square, step = 0.0, 0.0, 1.0
    with np.errstate(all="ignore"):
        by_sum = twice * s
        by_count = square * n.astype(np.float64)
        total = (q - by_sum) + by_count
        quotient = total / step
        magnitude = (np.abs(q) + np.abs(by_sum) + np.abs(by_count)) / step
        whole = np.rint(quotient)
        bound = magnitude * 2.0**-49 + np.abs(quotient) * _RELATIVE + _ABSOLUTE
        ok &= np.isfinite(quotient) & np.isfinite(magnitude) & (np.abs(quotient) < _WHOLE)
        ok &= np.abs(quotient - whole) < 0.5 - bound
        fast = np.where(ok, whole, 0.0).astype(np.int64)
    slow: list[list[Any]] = []

    def definition(i: int) -> int:
        if not slow:
            slow.extend([squares.to_pylist(), sums.to_pylist(), counts.to_pylist()])
        value = (
            Fraction(slow[0][i] or 0)
            - 2 * centre * Fraction(slow[1][i] or 0)
            + centre * centre * int(slow[2][i] or 0)
        )
        return round(value / resolution)

    return _merge(fast, ok, definition)


def uncentred_squares(
    centred: pa.Array, sums: pa.Array, counts: pa.Array, centre: Fraction
) -> pa.Array:
    """The released sum of squares: ``max(0, (q~ + 2c·s~) - c²·n~)`` per group in float64
    (``q~`` the noisy centred squares, ``s~`` and ``n~`` the released sum and count, a
    null as 0), evaluated in that order with ``2c`` and ``c²`` as float64.

    Post-processing of released columns, so plain IEEE arithmetic is its definition (the
    same in NumPy and in Python floats).  The release's ``q - s²/n`` is then the variance
    of the centred values, as :func:`square_units` noised them.
    """
    q, _ = _floats(centred)
    s, _ = _floats(sums)
    n = as_ints(counts, 0)
    if n is None:
        n = np.array([int(v or 0) for v in counts.to_pylist()], dtype=object)
    twice, square = float(2 * centre), float(centre * centre)
    with np.errstate(all="ignore"):
        total = (q + twice * s) - square * n.astype(np.float64)
    return pa.array(np.where(total < 0, 0.0, total), pa.float64())


def noisy_units(units: Ints, draws: list[int], clamp: int) -> Ints:
    """``u + z`` per group, then ``max(0, ·)`` (``clamp`` 1), ``min(0, ·)`` (-1) or neither."""
    out: Ints | None = None
    if units.dtype != object:
        try:
            noise = np.array(draws, dtype=np.int64)
        except OverflowError:
            noise = None
        room = 2**62
        if noise is not None and not (
            len(units) and (np.abs(units).max() >= room or np.abs(noise).max() >= room)
        ):
            out = units + noise
    if out is None:
        out = np.array([int(u) + z for u, z in zip(units, draws, strict=True)], dtype=object)
    if clamp > 0:
        return np.maximum(out, 0)
    if clamp < 0:
        return np.minimum(out, 0)
    return out


def grid_values(units: Ints, resolution: Fraction) -> pa.Array:
    """``float(u · resolution)`` per group, as float64.

    With ``resolution`` an integer or the inverse of one that float64 holds exactly (the
    grid is a power of ten) and ``|u| <= 2**53``, one IEEE multiplication or division of
    exact operands is correctly rounded: the value of ``float(Fraction)``.
    """
    count = len(units)
    ok = np.zeros(count, np.bool_)
    fast = np.zeros(count)
    if units.dtype != object:
        top, bottom = _as_float(resolution.numerator), _as_float(resolution.denominator)
        with np.errstate(all="ignore"):
            if resolution.denominator == 1 and top is not None and top == resolution:
                fast = units.astype(np.float64) * top
                ok = np.abs(units) <= _EXACT
            elif resolution.numerator == 1 and bottom is not None and bottom == 1 / resolution:
                fast = units.astype(np.float64) / bottom
                ok = np.abs(units) <= _EXACT
            ok &= np.isfinite(fast)
    rows = np.flatnonzero(~ok)
    if len(rows):
        fast = fast.copy()
        fast[rows] = [float(int(units[i]) * resolution) for i in rows]
    return pa.array(fast, pa.float64())


def uncentred(centred: pa.Array, counts: pa.Array, centre: Fraction, clamp: int) -> pa.Array:
    """``float(Fraction(s or 0) + centre·int(n or 0))`` per group, clamped at 0 first.

    ``s`` is a float64 and ``centre·n`` exact (``_centre_product``): one IEEE addition
    of exact operands is the correctly rounded exact sum.  Adding 0.0 makes a zero sum
    0.0, as ``float(Fraction(0))`` (-0.0 + -0.0 is -0.0, and a negative centre times a
    count of 0 is -0.0), and changes nothing else; no non-zero sum underflows to
    0, so clamping the rounded value is clamping the exact one.
    """
    values, ok = _floats(centred)
    n = as_ints(counts, 0)
    if n is None:
        ok = np.zeros(len(centred), np.bool_)
        total = values
    else:
        product, exact = _centre_product(centre, n)
        with np.errstate(all="ignore"):
            total = values + product + 0.0
        ok &= exact & np.isfinite(total)
    if clamp > 0:
        total = np.where(total < 0, 0.0, total)
    elif clamp < 0:
        total = np.where(total > 0, 0.0, total)
    rows = np.flatnonzero(~ok)
    if len(rows):
        sums, numbers = centred.to_pylist(), counts.to_pylist()
        total = total.copy()
        for i in rows:
            value = Fraction(sums[i] or 0) + centre * int(numbers[i] or 0)
            if clamp > 0:
                value = max(Fraction(0), value)
            elif clamp < 0:
                value = min(Fraction(0), value)
            total[i] = float(value)
    return pa.array(total, pa.float64())


def rounded(array: pa.Array, digits: int, counts: bool) -> pa.Array:
    """Python's ``round(v, digits)`` per value (nulls kept), as int64 or float64.

    Floats: ``round`` rounds the exact binary value half-to-even at ``digits`` decimals,
    then takes the nearest float64.  Here ``y = fl(v·10**d)`` (or ``/10**-d``) is within
    ``|y|·2**-52`` of the exact product, certified as in ``grid_units``; then
    ``rint(y) / 10**d`` (``· 10**-d``) is one correctly rounded operation on exact
    operands for ``|d| <= 22``.  Integers: half-to-even in int64 where nothing overflows.
    """
    valid = pc.is_valid(array).to_numpy(zero_copy_only=False)
    scale = 10 ** abs(digits)
    if counts:
        ints = as_ints(array, 0)
        ok = np.zeros(len(array), np.bool_)
        out: Any = np.zeros(len(array), np.int64)
        if ints is not None and digits < 0 and scale <= 10**18:
            quotient = np.floor_divide(ints, scale)
            twice = 2 * (ints - quotient * scale)
            quotient += (twice > scale) | ((twice == scale) & (quotient % 2 == 1))
            ok = np.abs(quotient) <= (2**63 - 1) // scale
            out = np.where(ok, quotient, 0) * scale
        kind = pa.int64()
    else:
        values, ok = _floats(array)
        out = np.zeros(len(array))
        if abs(digits) <= 22:
            with np.errstate(all="ignore"):
                factor = float(scale)
                y = values * factor if digits >= 0 else values / factor
                whole = np.rint(y)
                bound = np.abs(y) * _RELATIVE + _ABSOLUTE
                ok &= np.isfinite(y) & (np.abs(y) < _WHOLE) & (np.abs(y - whole) < 0.5 - bound)
                out = whole / factor if digits >= 0 else whole * factor
                ok &= np.isfinite(out)
        else:
            ok = np.zeros(len(array), np.bool_)
        kind = pa.float64()
    rows = np.flatnonzero(~ok & valid)
    if len(rows):
        python = array.to_pylist()
        slow = [round(python[i], digits) for i in rows]
        if counts and not all(-(2**63) <= v < 2**63 for v in slow):
            out = out.astype(object)
        else:
            out = out.copy()
        out[rows] = slow
    return pa.array(out, kind, mask=~valid)


def top_shares(tops: pa.Array, limit: int) -> tuple[Floats, Mask]:
    """Per group the sum of its ``limit`` (1 or 2) largest absolute top contributions.

    As ``math.fsum(sorted(|x| for x in top if x is not None, reverse=True)[:limit])``
    where that is one IEEE operation: at most two finite values whose sum is finite (the
    larger of two, or their correctly rounded sum; an absent one counts 0.0).  The mask
    says which groups that covers; the others are left to the definition.
    """
    count = len(tops)
    if not pa.types.is_floating(tops.type.value_type) or limit not in (1, 2):
        return np.zeros(count), np.zeros(count, np.bool_)
    lengths = pc.fill_null(pc.list_value_length(tops), 0).to_numpy(zero_copy_only=False)
    flat = tops.flatten()
    present = pc.is_valid(flat).to_numpy(zero_copy_only=False)
    values = pc.fill_null(pc.cast(flat, pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    magnitudes = np.concatenate([np.where(present, np.abs(values), 0.0), [0.0, 0.0]])
    starts = np.cumsum(lengths) - lengths
    first = np.where(lengths >= 1, magnitudes[starts], 0.0)
    second = np.where(lengths >= 2, magnitudes[np.minimum(starts + 1, len(magnitudes) - 1)], 0.0)
    with np.errstate(all="ignore"):
        both = first + second
        share = both if limit == 2 else np.maximum(first, second)
        ok = (lengths <= 2) & np.isfinite(first) & np.isfinite(second) & np.isfinite(both)
    return share, ok


def magnitudes_of(totals: pa.Array) -> tuple[Floats, Mask]:
    """``abs(float(t or 0))`` per group, and where float64 computed it exactly so."""
    if pa.types.is_floating(totals.type):
        values = pc.fill_null(pc.cast(totals, pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        return np.abs(values), np.ones(len(totals), np.bool_)
    values, ok = _floats(totals)
    return np.abs(values), ok


def dominant_rows(shares: Floats, totals: Floats, share: float) -> Mask:
    """``largest > p · |total|`` per group, in float64 as the definition's floats."""
    with np.errstate(all="ignore"):
        result: Mask = shares > share * totals
    return result
