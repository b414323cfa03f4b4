"""Partition selection thresholds and the 95% half-widths: exact tails, checked by sampling."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from statistics import NormalDist

import pytest

from sandbox.query.accuracy import gaussian_half_width, laplace_half_width, ratio_half_width
from sandbox.query.noise import seeded_noise
from sandbox.query.partition import gaussian_threshold, laplace_threshold


def laplace_tail(scale: float, t: int) -> float:
    """P[Z ≥ t] for discrete Laplace noise, t ≥ 1."""
    q = math.exp(-1 / scale)
    return q**t / (1 + q)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0, 6.9, 40.0])
@pytest.mark.parametrize(("groups", "delta"), [(1, 1e-6), (3, 1e-6), (1, 0.05), (10, 1e-9)])
def test_laplace_threshold_is_the_smallest_that_keeps_delta(
    scale: float, groups: int, delta: float
) -> None:
    tau = laplace_threshold(scale, groups, delta)
    assert groups * laplace_tail(scale, tau - 1) <= delta
    if tau > 2:
        assert groups * laplace_tail(scale, tau - 2) > delta


@pytest.mark.parametrize("sigma2", [0.5, 4.0, 52.5, 900.0])
@pytest.mark.parametrize(("groups", "delta"), [(1, 1e-6), (5, 1e-6), (1, 0.05)])
def test_gaussian_threshold_keeps_delta(sigma2: float, groups: int, delta: float) -> None:
    """Against the discrete Gaussian's exact tail (summed), not the bound it is built on."""
    tau = gaussian_threshold(sigma2, groups, delta)
    span = int(40 * math.sqrt(sigma2)) + 40
    weights = {x: math.exp(-(x * x) / (2 * sigma2)) for x in range(-span, span + 1)}
    total = math.fsum(weights.values())
    tail = math.fsum(w for x, w in weights.items() if x >= tau - 1) / total
    assert groups * tail <= delta
    # and not absurdly conservative: within one standard deviation and 2 of the normal rule
    z = NormalDist().inv_cdf(1 - delta / groups)
    assert tau <= 2 + z * math.sqrt(sigma2) + math.sqrt(sigma2) + 2


def test_one_entity_groups_pass_as_rarely_as_delta_says() -> None:
    """Sampled: a group of one passes τ at most δ of the time (δ = 5% to see it happen)."""
    scale, delta, n = Fraction(4), 0.05, 40_000
    tau = laplace_threshold(scale, 1, delta)
    passed = sum(1 + z >= tau for z in seeded_noise(8).discrete_laplace(scale, n))
    assert passed / n <= delta + 4 * math.sqrt(delta / n)
    assert passed / n > delta / 3  # the threshold is not wastefully high either


@pytest.mark.parametrize("scale", [Fraction(1, 3), Fraction(2), Fraction(25), Fraction(1000, 7)])
def test_laplace_half_width_is_the_exact_95_percent_quantile(scale: Fraction) -> None:
    w = laplace_half_width(scale)
    q = math.exp(-1 / float(scale))
    outside = 2 * q ** (w + 1) / (1 + q)
    assert outside <= 0.05
    if w > 0:
        assert 2 * q**w / (1 + q) > 0.05
    draws = seeded_noise(2).discrete_laplace(scale, 20_000)
    covered = sum(abs(z) <= w for z in draws) / len(draws)
    assert covered >= 0.95 - 4 * math.sqrt(0.05 * 0.95 / 20_000)


@pytest.mark.parametrize("sigma2", [Fraction(1, 2), Fraction(10), Fraction(400)])
def test_gaussian_half_width_covers_95_percent(sigma2: Fraction) -> None:
    w = gaussian_half_width(sigma2)
    draws = seeded_noise(3).discrete_gaussian(sigma2, 20_000)
    covered = sum(abs(z) <= w for z in draws) / len(draws)
    assert covered >= 0.95 - 4 * math.sqrt(0.05 * 0.95 / 20_000)
    if sigma2 >= 10:  # (tiny variances: the whole mass sits on a few integers)
        assert covered <= 0.99  # conservative, not vacuous


def test_ratio_half_width_covers_the_true_average() -> None:
    """Noisy sum over noisy count: the conservative bound covers the truth ≥ 95% of the time."""
    rng = random.Random(4)
    true_sum, true_count = 52_000.0, 1_000
    sum_scale, count_scale = Fraction(400), Fraction(3)
    sum_half = laplace_half_width(sum_scale, 0.975)
    count_half = laplace_half_width(count_scale, 0.975)
    source = seeded_noise(rng.randrange(10**9))
    sums = source.discrete_laplace(sum_scale, 5_000)
    counts = source.discrete_laplace(count_scale, 5_000)
    covered = 0
    for zs, zn in zip(sums, counts, strict=True):
        s, n = true_sum + zs, true_count + zn
        half = ratio_half_width(s, n, sum_half, count_half)
        assert half is not None
        covered += abs(s / n - true_sum / true_count) <= half
    assert covered / 5_000 >= 0.95
    assert ratio_half_width(10.0, 2.0, 1.0, 5.0) is None  # count within its own noise
