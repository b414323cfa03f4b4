"""Each column-wise function of disclosure_exact equals its per-value definition, bit for bit.

The definitions are the ones the privacy argument reads (``Fraction``, ``round``,
``float``); the values are chosen where float arithmetic goes wrong: exact ties, their
float neighbours, beyond 2**53, subnormals, huge and non-finite values.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.query import disclosure_exact as exact

GRIDS = [Fraction(10) ** e for e in range(-12, 13)] + [Fraction(1, 3), Fraction(7, 2)]
# Grids float64 holds only as subnormals (or not at all), and beyond its range.
GRIDS += [Fraction(1, 10**310), Fraction(3, 10**316), Fraction(1, 10**330), Fraction(10**400)]


def _bits(values: list[Any]) -> list[Any]:
    return [struct.pack("<d", v) if isinstance(v, float) else v for v in values]


def _near(value: float) -> list[float]:
    """A value and its float neighbours."""
    return [value, math.nextafter(value, math.inf), math.nextafter(value, -math.inf)]


def _outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except (ArithmeticError, ValueError) as exc:
        return ("raised", type(exc).__name__)


FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-1e6, 1e6),
    st.integers(-(10**9), 10**9).map(lambda i: i / 1000),
    st.integers(-(10**9), 10**9).map(lambda i: i * 0.5),
    st.integers(-(10**9), 10**9).map(lambda i: i * 0.125),
    st.sampled_from([2.675, 0.125, 0.005, 1.0005, 2.0**53, 2.0**52 + 0.5, 5e-324, 1e308, -0.0]),
).flatmap(lambda v: st.sampled_from(_near(v)))


@settings(max_examples=600, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), FLOATS), max_size=40),
    grid=st.sampled_from(GRIDS),
    centre=st.one_of(
        st.just(Fraction(0)),
        st.sampled_from([Fraction(25), Fraction(-1, 2), Fraction(5, 1024), Fraction(3, 10)]),
        st.floats(-1e6, 1e6, allow_nan=False).map(Fraction),
    ),
    counts=st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), min_size=40, max_size=40),
)
def test_grid_units_is_fraction_rounding(
    values: list[float | None], grid: Fraction, centre: Fraction, counts: list[int | None]
) -> None:
    counts = counts[: len(values)]
    sums, numbers = pa.array(values, pa.float64()), pa.array(counts, pa.int64())

    def definition() -> list[int]:
        return [
            round((Fraction(v or 0) - centre * int(n or 0)) / grid)
            for v, n in zip(values, counts, strict=True)
        ]

    got = _outcome(lambda: exact.grid_units(sums, grid, centre, numbers).tolist())
    assert got == _outcome(definition)  # an infinite value (a float's neighbour) raises alike


def test_grid_units_at_exact_ties_and_non_finite_values() -> None:
    ties = [2500.0, 3500.0, -2500.0, 0.5, 1.5, 2.5, -0.5, 2.0**53, 2.0**53 + 2, 1e300]
    for grid in (Fraction(1), Fraction(1000), Fraction(1, 1000)):
        values = [v for t in ties for v in _near(t)]
        expected = [round(Fraction(v) / grid) for v in values]
        assert exact.grid_units(pa.array(values), grid).tolist() == expected
    for bad, error in ((math.nan, ValueError), (math.inf, OverflowError)):
        with pytest.raises(error):
            exact.grid_units(pa.array([1.0, bad]), Fraction(1))


@settings(max_examples=300, deadline=None)
@given(
    units=st.lists(
        st.one_of(st.integers(-(10**6), 10**6), st.integers(-(2**70), 2**70)), max_size=30
    ),
    grid=st.sampled_from(GRIDS),
)
def test_grid_values_is_fraction_to_float(units: list[int], grid: Fraction) -> None:
    array = np.array(units, dtype=object)
    if all(-(2**63) <= u < 2**63 for u in units):
        array = np.array(units, dtype=np.int64)
    got = _outcome(lambda: _bits(exact.grid_values(array, grid).to_pylist()))
    assert got == _outcome(lambda: _bits([float(u * grid) for u in units]))


@settings(max_examples=300, deadline=None)
@given(
    sums=st.lists(FLOATS, min_size=20, max_size=20),
    counts=st.lists(st.integers(-(2**55), 2**55), min_size=20, max_size=20),
    centre=st.one_of(
        st.sampled_from([Fraction(25), Fraction(-1, 2), Fraction(1, 2**1075), Fraction(2**1023)]),
        st.floats(allow_nan=False, allow_infinity=False).map(Fraction),
    ),
    clamp=st.sampled_from([-1, 0, 1]),
)
def test_uncentred_is_the_exact_sum_rounded_once(
    sums: list[float], counts: list[int], centre: Fraction, clamp: int
) -> None:
    def definition() -> list[Any]:
        out = []
        for s, n in zip(sums, counts, strict=True):
            value = Fraction(s) + centre * n
            if clamp > 0:
                value = max(Fraction(0), value)
            elif clamp < 0:
                value = min(Fraction(0), value)
            out.append(float(value))
        return _bits(out)

    column = pa.array(sums, pa.float64())
    got = _outcome(
        lambda: _bits(exact.uncentred(column, pa.array(counts), centre, clamp).to_pylist())
    )
    assert got == _outcome(definition)


ROUND_TIES = [
    2.675,
    0.125,
    0.375,
    1.5,
    2.5,
    -2.5,
    0.005,
    0.015,
    1234.5,
    1e22,
    1.7976931348623157e308,
]


@settings(max_examples=600, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.none(),
            FLOATS,
            st.sampled_from(ROUND_TIES).flatmap(lambda v: st.sampled_from(_near(v))),
        ),
        max_size=30,
    ),
    digits=st.integers(-25, 25),
)
def test_rounded_floats_are_python_round(values: list[float | None], digits: int) -> None:
    got = _outcome(
        lambda: _bits(exact.rounded(pa.array(values, pa.float64()), digits, False).to_pylist())
    )
    expected = _outcome(lambda: _bits([None if v is None else round(v, digits) for v in values]))
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.integers(-(10**6), 10**6), st.integers(-(2**63), 2**63 - 1)),
        max_size=30,
    ),
    digits=st.integers(-20, -1),
)
def test_rounded_counts_are_python_round(values: list[int | None], digits: int) -> None:
    got = _outcome(lambda: exact.rounded(pa.array(values, pa.int64()), digits, True).to_pylist())
    expected = _outcome(
        lambda: pa.array(
            [None if v is None else round(v, digits) for v in values], pa.int64()
        ).to_pylist()
    )
    assert got == expected


def test_typical_columns_take_the_column_wise_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast form covers ordinary data (else the speed-up would be an accident)."""
    uncertain: list[int] = []
    merge = exact._merge

    def counting(fast: Any, ok: Any, slow: Any) -> Any:
        uncertain.append(int((~ok).sum()))
        return merge(fast, ok, slow)

    monkeypatch.setattr(exact, "_merge", counting)
    rng = np.random.default_rng(7)
    sums = pa.array(rng.uniform(0, 50 * 200, 10_000).round(2))
    counts = pa.array(rng.integers(0, 200, 10_000))
    exact.grid_units(sums, Fraction(1, 100), Fraction(25), counts)
    exact.grid_units(sums, Fraction(1, 1000))
    exact.grid_units(counts, Fraction(1))
    assert uncertain == [0, 0, 0]
    _, ok = exact._floats(sums)
    _, fits = exact._centre_product(Fraction(25), exact.as_ints(counts, 0))
    assert ok.all() and fits.all()
