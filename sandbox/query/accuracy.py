"""Accuracy before spending: 95% half-widths of the noise each released cell carries.

Every function here depends on the mechanism and its scale only, never on data, so
``explain`` can state them before any ε is spent; the result metadata repeats them
and adds, for averages, the interval of the ratio from the released (noisy) values.

* discrete Laplace of scale ``b`` (``P(z) ∝ exp(-|z|/b)``, ``q = e^{-1/b}``):
  ``P(|Z| > w) = 2q^{w+1} / (1 + q)`` exactly; the half-width is the smallest whole
  ``w`` with that at most ``1 - level``;
* discrete Gaussian of variance ``sigma²``: ``P(Z ≥ t) ≤ P(N(0, sigma²) ≥ t - 1)`` (its
  normaliser is at least ``√(2π)sigma`` and its tail sum is under the integral from
  ``t - 1``), so ``w = ⌈z·sigma⌉`` with ``z`` the normal quantile of ``(1 + level) / 2``
  is conservative;
* an average ``Ŝ / N̂`` (noisy sum over noisy count): a **conservative bound**, not the
  delta method: with probability at least 95% both noises lie within their 97.5%
  half-widths ``h_S``, ``h_N`` (union bound), and then the true ratio lies within
  ``(h_S + |Ŝ/N̂|·h_N) / (N̂ - h_N)`` of the released one (``N̂ > h_N``; otherwise no
  finite interval, ``None``); for a sum noised centred on ``c`` (``disclosure._centres``),
  ``h_S`` is the centred sum's and ``|Ŝ/N̂ - c|`` replaces ``|Ŝ/N̂|``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import NormalDist

__all__ = [
    "LEVEL",
    "gaussian_half_width",
    "laplace_half_width",
    "ratio_half_width",
]

LEVEL = 0.95


def laplace_half_width(scale: Fraction | float, level: float = LEVEL) -> int:
    """Smallest whole ``w`` with ``P(|Z| > w) ≤ 1 - level`` for discrete Laplace noise."""
    b = float(scale)
    q = math.exp(-1 / b)
    if q == 0.0:
        return 0
    # 2 q^{w+1} / (1+q) ≤ 1 - level  ⇔  w + 1 ≥ ln((1-level)(1+q)/2) / ln q
    need = math.log((1 - level) * (1 + q) / 2) / math.log(q)
    return max(0, math.ceil(need - 1 - 1e-12))


def gaussian_half_width(sigma2: Fraction | float, level: float = LEVEL) -> int:
    """A whole ``w`` with ``P(|Z| > w) ≤ 1 - level`` for discrete Gaussian noise."""
    z = NormalDist().inv_cdf((1 + level) / 2)
    return math.ceil(z * math.sqrt(float(sigma2)))


def ratio_half_width(
    noisy_sum: float,
    noisy_count: float,
    sum_half: float,
    count_half: float,
    centre: float = 0.0,
) -> float | None:
    """Conservative half-width of ``Ŝ / N̂`` from the two half-widths (at level 97.5% each).

    ``centre``: the sum was noised as ``S - c·N`` (``sum_half`` is that noise's), so the
    average is ``c + (S - c·N)~ / N̂`` and the count's noise weighs ``|Ŝ/N̂ - c|``.
    """
    if noisy_count - count_half <= 0:
        return None
    off_centre = abs(noisy_sum / noisy_count - centre)
    return (sum_half + off_centre * count_half) / (noisy_count - count_half)
