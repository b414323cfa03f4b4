"""The discrete Gaussian sampler draws the same integers as its Fraction form did.

``noise.py`` computes the rejection step's ``gamma = (|y| - sigma²/t)² / (2 sigma²)`` in
integers (a gcd instead of ``Fraction``) since disclosure went column-wise and the
sampler became its cost.  Algorithm 1 reads ``gamma``'s numerator and denominator, so the
two forms agree only if both are in lowest terms: this checks every draw and the
sampler's state after, over scales from tiny to huge, against the Fraction form of main
at 4d5f1ef (copied below).
"""

from __future__ import annotations

import random
from fractions import Fraction
from math import isqrt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.query.noise import ExactNoise, _bernoulli_exp, _discrete_laplace, as_fraction


def fraction_gaussian(sigma2: Fraction, size: int, randbelow: random.Random) -> list[int]:
    """``ExactNoise.discrete_gaussian`` of 4d5f1ef, verbatim but for the source argument."""
    var = as_fraction(sigma2)
    t = isqrt(var.numerator // var.denominator) + 1  # floor(sigma) + 1
    shift = var / t
    twice = 2 * var
    out: list[int] = []
    while len(out) < size:
        y = _discrete_laplace(1, t, randbelow.randrange)
        gamma = (abs(y) - shift) ** 2 / twice
        if _bernoulli_exp(gamma.numerator, gamma.denominator, randbelow.randrange):
            out.append(y)
    return out


def _same(sigma2: Fraction, seed: int, size: int) -> None:
    old, new = random.Random(seed), random.Random(seed)
    assert ExactNoise(new.randrange).discrete_gaussian(sigma2, size) == fraction_gaussian(
        sigma2, size, old
    )
    assert new.getstate() == old.getstate()


@pytest.mark.parametrize(
    "sigma2",
    [
        Fraction(1, 10**6),
        Fraction(1, 3),
        Fraction(1),
        Fraction(9, 4),
        Fraction(922423493, 1000000),  # W3's entities column at ε = 1
        Fraction(10**12 + 1, 7),
        Fraction(2**80, 3),
    ],
)
def test_named_scales_draw_the_same(sigma2: Fraction) -> None:
    for seed in range(4):
        _same(sigma2, seed, 300)


@settings(max_examples=200, deadline=None)
@given(
    sigma2=st.fractions(min_value=Fraction(1, 10**9), max_value=10**9).filter(lambda f: f > 0),
    seed=st.integers(0, 2**32),
)
def test_random_scales_draw_the_same(sigma2: Fraction, seed: int) -> None:
    _same(sigma2, seed, 40)
