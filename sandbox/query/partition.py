"""Which groups appear: DP partition selection thresholds on noisy entity counts.

Under a budget a group is released only if its **noisy** entity count (the same draw
that is released) reaches ``max(k, τ)``.  ``τ`` bounds the probability that a group
which exists only because of one entity (true count 1 in ``D``, absent from ``D'``)
shows up: one entity creates at most ``G`` groups, so ``G · P[1 + Z ≥ τ] ≤ δ_sel``.

* discrete Laplace of scale ``b`` (``q = e^{-1/b}``): ``P[Z ≥ t] = q^t / (1 + q)`` for
  ``t ≥ 1``, so ``τ = 1 + ⌈ln(δ_sel·(1 + q) / G) / ln q⌉`` (Laplace thresholding as in
  Korolova et al. 2009 and Google's DP library; for ``G = 1`` within a few units of the
  optimal truncated-geometric rule of Desfontaines, Voss, Gipson and Mandayam 2022);
* discrete Gaussian of variance ``sigma²`` (counts noised at L2 sensitivity ``√G``, as in
  Gopi et al. 2020 and Google's DP library): ``P[Z ≥ t] ≤ P[N(0, sigma²) ≥ t - 1]``, so
  ``τ = 2 + ⌈sigma · Φ⁻¹(1 - δ_sel / G)⌉``.

Groups present in both neighbours are selected by a function of the ε-DP (or
rho-zCDP) noisy count alone (post-processing), so the selection adds only ``δ_sel``.
``k`` is a floor on the noisy count: post-processing too, it costs nothing.
"""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import NormalDist

__all__ = ["gaussian_threshold", "laplace_threshold"]


def laplace_threshold(scale: Fraction | float, groups: int, delta: float) -> int:
    """Smallest ``τ`` with ``groups · P[1 + Z ≥ τ] ≤ delta`` for discrete Laplace noise."""
    if groups < 1 or not 0 < delta < 1:
        raise ValueError("need groups ≥ 1 and 0 < δ < 1")
    q = math.exp(-1 / float(scale))
    if q == 0.0:
        return 2
    t = math.ceil(math.log(delta * (1 + q) / groups) / math.log(q) - 1e-12)
    return 1 + max(1, t)


def gaussian_threshold(sigma2: Fraction | float, groups: int, delta: float) -> int:
    """A ``τ`` with ``groups · P[1 + Z ≥ τ] ≤ delta`` for discrete Gaussian noise."""
    if groups < 1 or not 0 < delta < 1:
        raise ValueError("need groups ≥ 1 and 0 < δ < 1")
    z = NormalDist().inv_cdf(1 - delta / groups)
    return 2 + max(0, math.ceil(z * math.sqrt(float(sigma2))))
