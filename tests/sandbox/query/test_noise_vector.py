"""The vector discrete Laplace sampler (``sandbox.query.noise_vector``) against its exact
distribution, its uniforms against uniformity, and the production sampler's use of it.

Seeded byte sources (``random.Random(seed).randbytes``), so each test always passes or
always fails; thresholds as in ``test_noise_distributions`` (a correct sampler fails for
under 1 seed in 100).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from fractions import Fraction
from itertools import pairwise
from statistics import NormalDist

import numpy as np
import pytest

from sandbox.query import noise, noise_vector
from sandbox.query.noise import VECTOR_MIN, seeded_noise, system_noise
from sandbox.query.noise_vector import LIMIT, Uniforms, discrete_laplace, fits
from tests.sandbox.query.test_noise_distributions import (
    DRAWS,
    chisquare_p,
    fit,
    laplace_pmf,
)


def _uniforms(seed: int) -> Uniforms:
    return Uniforms(random.Random(seed).randbytes)


@pytest.mark.parametrize(
    "scale",
    [
        Fraction(1, 2),
        Fraction(1),
        Fraction(3),
        Fraction(37, 2),
        Fraction(120),
        # a release's scale: units / ε on the ledger's grid (W3's selecting count)
        Fraction(3_750_000_000, 66_125_941),
    ],
)
def test_vector_laplace_fits_its_exact_distribution(scale: Fraction) -> None:
    draws = discrete_laplace(scale, DRAWS, _uniforms(14)).tolist()
    assert len(draws) == DRAWS
    span = int(12 * float(scale)) + 3
    p, distance = fit(draws, laplace_pmf(float(scale)), span)
    assert p > 0.001, f"chi-square p = {p:.2g}"
    assert distance < 1.63 / math.sqrt(DRAWS)


def test_draws_beyond_one_batch_are_all_drawn() -> None:
    """Candidates are drawn 2**18 at a time (bounded memory): a larger request loops."""
    draws = discrete_laplace(Fraction(5, 2), 700_000, _uniforms(8))
    assert len(draws) == 700_000
    q = math.exp(-1 / 2.5)
    assert abs(float(np.mean(np.abs(draws))) - 2 * q / (1 - q * q)) < 0.02  # E|X|, SE 0.003


def test_a_wrong_distribution_is_rejected() -> None:
    """The test bites: draws of scale 3 do not pass as scale 3.3."""
    draws = discrete_laplace(Fraction(3), DRAWS, _uniforms(14)).tolist()
    assert fit(draws, laplace_pmf(3.3), 40)[0] < 1e-6


def _homogeneity_p(a: Counter[int], b: Counter[int]) -> float:
    """Chi-square test that two samples of equal size share one distribution (bins of
    one value on [-19, 19], tails pooled): p by Wilson and Hilferty at ``bins - 1`` df."""
    bins = [(-(10**9), -20), *((x, x) for x in range(-19, 20)), (20, 10**9)]

    def count(c: Counter[int], lo: int, hi: int) -> int:
        return sum(n for x, n in c.items() if lo <= x <= hi)

    statistic = 0.0
    for lo, hi in bins:
        x, y = count(a, lo, hi), count(b, lo, hi)
        if x + y:
            statistic += (x - y) ** 2 / (x + y)
    k = len(bins) - 1
    z = ((statistic / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 1 - NormalDist().cdf(z)


def test_vector_and_scalar_samplers_draw_the_same_distribution() -> None:
    scale = Fraction(25, 3)
    vector = Counter(discrete_laplace(scale, DRAWS, _uniforms(3)).tolist())
    scalar = Counter(seeded_noise(3).discrete_laplace(scale, DRAWS))
    assert _homogeneity_p(vector, scalar) > 0.001
    other = Counter(seeded_noise(3).discrete_laplace(Fraction(28, 3), DRAWS))
    assert _homogeneity_p(vector, other) < 1e-6  # the test bites


@pytest.mark.parametrize("bound", [1, 2, 3, 5, 6, 7, 255, 256, 257, 1000, 2**33 + 1])
def test_uniforms_are_uniform_below_any_bound(bound: int) -> None:
    uniforms = _uniforms(bound)
    draws = uniforms.below_same(bound, 60_000)
    assert draws.min() >= 0
    assert draws.max() < bound
    if bound == 1:
        assert not draws.any()
        return
    cells = min(bound, 50)  # equal-width cells of the range
    edges = [bound * i // cells for i in range(cells + 1)]
    observed = np.histogram(draws, bins=edges)[0].tolist()
    expected = [60_000 * (hi - lo) / bound for lo, hi in pairwise(edges)]
    assert chisquare_p(observed, expected) > 0.001


def test_uniforms_take_each_bound_per_element() -> None:
    bounds = np.array([1, 2, 3, 10, 2**39] * 2000, dtype=np.int64)
    draws = _uniforms(9).below(bounds)
    assert (draws >= 0).all()
    assert (draws < bounds).all()
    assert len(set(draws[4::5].tolist())) > 1900  # the wide bound's draws are not repeated


def test_scales_beyond_the_limit_are_refused() -> None:
    assert fits(Fraction(LIMIT - 1, 3))
    assert not fits(Fraction(LIMIT, 3))
    assert not fits(Fraction(0.3))  # an exact float: 2**54 in its denominator
    with pytest.raises(ValueError, match="scalar sampler"):
        discrete_laplace(Fraction(LIMIT + 1, 7), 10, _uniforms(1))


def test_production_draws_many_with_the_vector_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """From VECTOR_MIN draws of a scale that fits, production runs the vector sampler on
    the OS's bytes; fewer draws, or a scale that does not fit, keep the scalar one."""
    calls: list[int] = []
    real = noise_vector.discrete_laplace

    def spy(scale: Fraction, size: int, uniforms: Uniforms) -> np.ndarray:
        calls.append(size)
        return real(scale, size, uniforms)

    monkeypatch.setattr(noise.noise_vector, "discrete_laplace", spy)
    sampler = system_noise()
    assert len(sampler.discrete_laplace(Fraction(7, 2), VECTOR_MIN)) == VECTOR_MIN
    assert len(sampler.discrete_laplace(Fraction(7, 2), VECTOR_MIN - 1)) == VECTOR_MIN - 1
    assert len(sampler.discrete_laplace(Fraction(0.3), 500)) == 500
    assert calls == [VECTOR_MIN]
    many = sampler.discrete_laplace(Fraction(7, 2), 2000)
    assert all(isinstance(x, int) for x in many)
    assert len(set(many)) > 10
    # a seeded sampler keeps its reproducible scalar sequence
    assert seeded_noise(1).discrete_laplace(Fraction(7, 2), 500) == seeded_noise(
        1
    ).discrete_laplace(Fraction(7, 2), 500)
    assert calls == [VECTOR_MIN, 2000]
