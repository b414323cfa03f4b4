"""Statistical tests of each mechanism's noise against its exact distribution (seeded).

Chi-square goodness of fit (Wilson-Hilferty p-values) over bins with at least 5
expected draws (tails pooled) and a KS distance against the exact CDF, for the
discrete Laplace and discrete Gaussian samplers; chi-square for permute-and-flip
against its exact choice probabilities (enumerated over every order of the
candidates).  Seeds are fixed, so each test always passes or always fails; the
thresholds (p > 0.001, KS distance under 1.63/sqrt(n), the 1% critical value) make a
correct sampler fail for under 1 seed in 100.
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction
from itertools import permutations
from statistics import NormalDist

import pytest

from sandbox.query.noise import seeded_noise

DRAWS = 40_000


def chisquare_p(observed: list[int], expected: list[float]) -> float:
    """Upper tail of the chi-square statistic, by Wilson and Hilferty's cube-root normal.

    (scipy is not a dependency; the approximation is good to a few percent of p at the
    degrees of freedom here, far finer than the p > 0.001 threshold needs.)
    """
    statistic = math.fsum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    k = len(observed) - 1
    z = ((statistic / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 1 - NormalDist().cdf(z)


def laplace_pmf(scale: float):  # type: ignore[no-untyped-def]
    q = math.exp(-1 / scale)
    return lambda x: (1 - q) / (1 + q) * q ** abs(x)


def gaussian_pmf(sigma2: float):  # type: ignore[no-untyped-def]
    span = int(12 * math.sqrt(sigma2)) + 12
    norm = math.fsum(math.exp(-(x * x) / (2 * sigma2)) for x in range(-span, span + 1))
    return lambda x: math.exp(-(x * x) / (2 * sigma2)) / norm


def fit(draws: list[int], pmf, span: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(chi-square p-value, KS distance) of ``draws`` against ``pmf`` on [-span, span]."""
    n = len(draws)
    counts = Counter(draws)
    bins: list[tuple[float, int]] = []  # (expected, observed), tails pooled
    expected, observed = 0.0, 0
    for x in range(-span, span + 1):
        expected += n * pmf(x)
        observed += counts[x]
        if expected >= 5:
            bins.append((expected, observed))
            expected, observed = 0.0, 0
    below = sum(c for x, c in counts.items() if x < -span)
    above = sum(c for x, c in counts.items() if x > span)
    last_e, last_o = bins.pop()
    bins.append(
        (
            last_e + expected + n * (1 - sum(pmf(x) for x in range(-span, span + 1))),
            last_o + observed + above + below,
        )
    )
    exp_, obs = [e for e, _ in bins], [o for _, o in bins]
    scale = n / sum(exp_)
    p = chisquare_p(obs, [e * scale for e in exp_])
    cdf, empirical, distance = 0.0, 0, 0.0
    for x in range(-span, span + 1):
        cdf += pmf(x)
        empirical += counts[x]
        distance = max(distance, abs(empirical / n - cdf))
    return float(p), distance


@pytest.mark.parametrize("scale", [Fraction(1, 2), Fraction(3), Fraction(37, 2), Fraction(120)])
def test_discrete_laplace_fits_its_exact_distribution(scale: Fraction) -> None:
    draws = seeded_noise(14).discrete_laplace(scale, DRAWS)
    span = int(12 * float(scale)) + 3
    p, distance = fit(draws, laplace_pmf(float(scale)), span)
    assert p > 0.001, f"chi-square p = {p:.2g}"
    assert distance < 1.63 / math.sqrt(DRAWS)


@pytest.mark.parametrize("sigma2", [Fraction(1, 2), Fraction(4), Fraction(105, 2), Fraction(900)])
def test_discrete_gaussian_fits_its_exact_distribution(sigma2: Fraction) -> None:
    draws = seeded_noise(41).discrete_gaussian(sigma2, DRAWS)
    span = int(6 * math.sqrt(float(sigma2))) + 3
    p, distance = fit(draws, gaussian_pmf(float(sigma2)), span)
    assert p > 0.001, f"chi-square p = {p:.2g}"
    assert distance < 1.63 / math.sqrt(DRAWS)


def test_a_wrong_distribution_is_rejected() -> None:
    """The test bites: Laplace draws of scale 3 do not pass as scale 3.3, nor as a Gaussian."""
    draws = seeded_noise(14).discrete_laplace(Fraction(3), DRAWS)
    assert fit(draws, laplace_pmf(3.3), 40)[0] < 1e-6
    assert fit(draws, gaussian_pmf(18.0), 40)[0] < 1e-6


def permute_and_flip_exact(scores: list[Fraction], temperature: Fraction) -> list[float]:
    """P(choose i), averaged over every order: the first accepted in order wins."""
    best = max(scores)
    accept = [math.exp(-float(best - s) / float(temperature)) for s in scores]
    chance = [0.0] * len(scores)
    orders = list(permutations(range(len(scores))))
    for order in orders:
        reach = 1.0
        for i in order:
            chance[i] += reach * accept[i] / len(orders)
            reach *= 1 - accept[i]
    return chance


def test_permute_and_flip_fits_its_exact_distribution() -> None:
    scores = [Fraction(0), Fraction(-1), Fraction(-2), Fraction(-4), Fraction(-1, 2)]
    temperature = Fraction(3, 2)
    source = seeded_noise(5)
    n = 30_000
    counts = Counter(source.permute_and_flip(scores, temperature) for _ in range(n))
    exact = permute_and_flip_exact(scores, temperature)
    assert sum(exact) == pytest.approx(1.0)
    p = chisquare_p([counts[i] for i in range(len(scores))], [n * e for e in exact])
    assert p > 0.001, f"chi-square p = {p:.2g}"
