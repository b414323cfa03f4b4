"""The privacy accountant: what a release costs, and which mechanism spends it best.

Two ways of composing the noisy statistics of one release, both pure functions here:

* **basic composition** of pure ε-DP mechanisms (discrete Laplace, permute-and-flip):
  ``ε = Σ ε_j``;
* **zero-concentrated DP** (zCDP, Bun and Steinke 2016) for the discrete Gaussian
  (Canonne, Kamath and Steinke 2020): a discrete Gaussian of variance ``sigma²`` on a
  function of L2 sensitivity ``Δ₂`` is ``rho = Δ₂² / (2sigma²)``-zCDP, a pure ``ε``-DP
  mechanism is ``ε²/2``-zCDP, and ``rho`` adds.  ``rho``-zCDP implies ``(ε, δ)``-DP for
  ``ε = rho + 2·√(rho·ln(1/δ))`` and, tighter, for CKS20 proposition 12's
  ``ε = inf_{a>1} arho + (ln(1/δ) + (a-1)·ln(1-1/a) - ln a) / (a-1)``
  (:func:`zcdp_epsilon` takes the smaller).

The grant's ledger is kept in ε (micro-units): a release that uses the Gaussian charges
the ε its total rho converts to under the share of the grant's ``δ`` set aside for that
conversion (:data:`CONVERSION_SHARE` of ``dp_delta``), never more than the query's ε.

:func:`choose` picks, per release, the mechanism whose noise is smaller for the query's
columns at the same ε (the Gaussian wins when an entity reaches many groups: its L2
sensitivity ``√G`` grows slower than the L1 sensitivity ``G``).  Half-widths of 95%
intervals for both noises are in :mod:`sandbox.query.accuracy`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from sandbox.core.errors import QueryRefused

if TYPE_CHECKING:
    from sandbox.query.disclosure import DisclosureParams

__all__ = [
    "CONVERSION_SHARE",
    "Allocation",
    "Demand",
    "Mechanism",
    "allocate",
    "basic_composition",
    "choose",
    "per_query_epsilon",
    "pure_to_zcdp",
    "zcdp_composition",
    "zcdp_epsilon",
    "zcdp_for_epsilon",
]

Mechanism = Literal["laplace", "gaussian"]
#: Under the Gaussian, this share of the query's δ pays for the zCDP → (ε, δ) conversion;
#: the rest goes to partition selection.
CONVERSION_SHARE = 0.5


def basic_composition(epsilons: Sequence[float]) -> float:
    """Sequential composition of pure ε-DP releases: the ε's add."""
    if any(e < 0 for e in epsilons):
        raise ValueError("ε cannot be negative")
    return math.fsum(epsilons)


def pure_to_zcdp(epsilon: float) -> float:
    """A pure ε-DP mechanism is ``ε²/2``-zCDP (Bun and Steinke 2016, proposition 1.4)."""
    return epsilon * epsilon / 2


def zcdp_composition(rhos: Sequence[float]) -> float:
    """zCDP composes by adding rho."""
    if any(r < 0 for r in rhos):
        raise ValueError("rho cannot be negative")
    return math.fsum(rhos)


def _cks_epsilon(rho: float, log_inv_delta: float) -> float:
    """CKS20 proposition 12, minimised over a by golden-section search on ln(a - 1)."""

    def at(alpha: float) -> float:
        return alpha * rho + (
            log_inv_delta + (alpha - 1) * math.log1p(-1 / alpha) - math.log(alpha)
        ) / (alpha - 1)

    lo, hi = math.log(1e-6), math.log(1e7)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = at(1 + math.exp(a)), at(1 + math.exp(b))
    for _ in range(200):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = at(1 + math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = at(1 + math.exp(b))
    return min(fa, fb)


def zcdp_epsilon(rho: float, delta: float) -> float:
    """The ε of ``(ε, δ)``-DP that ``rho``-zCDP implies (the smaller of two valid bounds)."""
    if rho < 0 or not 0 < delta < 1:
        raise ValueError("need rho ≥ 0 and 0 < δ < 1")
    if rho == 0:
        return 0.0
    log_inv = math.log(1 / delta)
    simple = rho + 2 * math.sqrt(rho * log_inv)
    return max(0.0, min(simple, _cks_epsilon(rho, log_inv)))


@functools.lru_cache(maxsize=4096)
def zcdp_for_epsilon(epsilon: float, delta: float) -> float:
    """The largest rho whose conversion at ``δ`` is at most ``ε`` (bisection, from below).

    Memoised: about 40,000 evaluations of the conversion per call (tens of ms), and a
    release asks it for the same (ε, δ) several times (cost, noise plan, accuracy).
    """
    if epsilon <= 0:
        raise ValueError("ε must be positive")
    lo, hi = 0.0, epsilon
    while zcdp_epsilon(hi, delta) <= epsilon:  # the tight conversion can be under rho
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if zcdp_epsilon(mid, delta) <= epsilon:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class Demand:
    """One noised statistic as the accountant sees it.

    ``l1`` / ``l2``: its sensitivities (whole column, one entity added or removed) in
    the units noise is drawn in; ``weight``: how much its error matters, relative to
    its typical magnitude (``docs/disclosure.md``, "Budget split"); ``pure``: an
    ε-DP-only mechanism (a quantile's permute-and-flip) that takes ε in either mode.
    """

    l1: float
    l2: float
    weight: float = 1.0
    pure: bool = False
    #: The largest share of the query's ε (Laplace) or rho (Gaussian) it may take; the
    #: other demands split what it leaves (``_shares``).  None: as the weights say.
    cap: float | None = None


@dataclass(frozen=True)
class Allocation:
    """Per demand: ε for a pure mechanism or Laplace, or rho for a Gaussian."""

    mechanism: Mechanism
    epsilons: tuple[float, ...]  # Laplace: each ε_j (Σ = ε); Gaussian: √(2rho_j) of pure ones
    rhos: tuple[float, ...]  # Gaussian: each rho_j (Σ = rho); Laplace: ε_j² / 2
    #: Σ weight·variance (units²) the allocation attains on the demands without a cap
    #: (``_chosen_error``): what ``choose`` compares
    error: float
    charged: float  # what the ledger is charged, in ε


def _shares(roots: Sequence[float], demands: Sequence[Demand]) -> list[float]:
    """Each demand's share of the whole, proportional to ``roots``, except that a demand
    over its ``cap`` is held to it and the others split the rest in the same proportions
    (the optimum under that constraint: the objective is separable and convex)."""
    fixed: dict[int, float] = {}
    while True:
        free = [i for i in range(len(roots)) if i not in fixed]
        left = 1.0 - math.fsum(fixed.values())
        total = math.fsum(roots[i] for i in free)
        shares = {i: left * roots[i] / total for i in free} if total > 0 else {}
        over = [i for i in free if (cap := demands[i].cap) is not None and shares[i] > cap]
        if not over:
            return [fixed[i] if i in fixed else shares.get(i, 0.0) for i in range(len(roots))]
        for i in over:
            fixed[i] = demands[i].cap  # type: ignore[assignment]


def _chosen_error(demands: Sequence[Demand], errors: Sequence[float]) -> float:
    """The weighted error of the demands without a cap (all, if each has one).

    A capped demand (the number of groups, which feeds ``groups_suppressed`` only) is
    held to its small share in either mechanism; its error is large in both, and in
    Laplace's more (a 5% share of ε against 5% of rho), so counted it chose the
    mechanism for the outputs: a count by year on a panel of 8 rows a person (C = G =
    T = 8, where the L2 sensitivity is the L1 one and the Gaussian has no advantage)
    went Gaussian, its 95% half-width 76 against Laplace's 25 (an outside rehearsal,
    December 2026)."""
    kept = [e for d, e in zip(demands, errors, strict=True) if d.cap is None]
    return math.fsum(kept if kept else errors)


def _laplace(demands: Sequence[Demand], epsilon: float) -> Allocation:
    """Minimise ``Σ w_j · 2(Δ₁_j / ε_j)²`` under ``Σ ε_j = ε``: ``ε_j ∝ (w_j Δ₁_j²)^{1/3}``
    (a capped demand held to its cap: ``_shares``).

    A quantile's variance is taken as ``(Δ/ε_j)²`` of its temperature alike.
    """
    a = [d.weight * 2 * d.l1 * d.l1 for d in demands]
    roots = [x ** (1 / 3) for x in a]
    eps = tuple(epsilon * share for share in _shares(roots, demands))
    error = _chosen_error(demands, [x / (e * e) for x, e in zip(a, eps, strict=True)])
    return Allocation("laplace", eps, tuple(pure_to_zcdp(e) for e in eps), error, epsilon)


def _gaussian(demands: Sequence[Demand], epsilon: float, delta: float) -> Allocation:
    """Minimise ``Σ w_j · Δ₂_j² / (2rho_j)`` under ``Σ rho_j = rho(ε, δ)``: ``rho_j ∝ √(w_j) Δ₂_j``.

    A pure demand gets ``rho_j`` too and spends it as ``ε_j = √(2rho_j)``.
    """
    rho = zcdp_for_epsilon(epsilon, delta)
    b = [d.weight * (2 * d.l1 * d.l1 if d.pure else d.l2 * d.l2 / 2) for d in demands]
    # Pure demands: variance 2Δ₁²/ε_j² = Δ₁²/rho_j, the same 1/rho_j shape.
    roots = [math.sqrt(x) for x in b]
    rhos = tuple(rho * share for share in _shares(roots, demands))
    error = _chosen_error(demands, [x / r for x, r in zip(b, rhos, strict=True)])
    eps = tuple(math.sqrt(2 * r) if d.pure else 0.0 for d, r in zip(demands, rhos, strict=True))
    return Allocation("gaussian", eps, rhos, error, _gaussian_charge(epsilon, delta))


@functools.lru_cache(maxsize=4096)
def _gaussian_charge(epsilon: float, delta: float) -> float:
    """What a Gaussian allocation of ``(ε, δ)`` charges: the ε its rho converts back to.

    Memoised like :func:`zcdp_for_epsilon` (one golden-section search, about 0.2 ms,
    asked for every release with the same grant's ε and δ).
    """
    return min(epsilon, zcdp_epsilon(zcdp_for_epsilon(epsilon, delta), delta))


def allocate(
    demands: Sequence[Demand], epsilon: float, delta: float, mechanism: Mechanism
) -> Allocation:
    """Split ``epsilon`` across ``demands`` for one mechanism (δ: the conversion's share)."""
    if not demands:
        raise ValueError("nothing to allocate")
    if mechanism == "laplace":
        return _laplace(demands, epsilon)
    return _gaussian(demands, epsilon, delta)


def choose(demands: Sequence[Demand], epsilon: float, delta: float) -> Allocation:
    """The allocation with the smaller weighted error; Laplace on a tie (pure ε-DP)."""
    laplace = _laplace(demands, epsilon)
    if all(d.pure for d in demands):
        return laplace
    gaussian = _gaussian(demands, epsilon, delta)
    return gaussian if gaussian.error < laplace.error else laplace


def per_query_epsilon(
    params: DisclosureParams, cap: float | None, requested: float | None
) -> DisclosureParams:
    """The release's parameters with the ε the analyst chose (``None``: the grant's default).

    Refused, naming the rule: choosing ε where no budget applies (``budget.epsilon``), a
    value that is not a positive finite number (``budget.epsilon``), or one above the
    grant's per-query maximum ``cap`` (``budget.epsilon_per_query``).  A value above what
    remains on the ledger is refused later, by the ledger check (``budget.exhausted``).
    """
    if requested is None:
        return params
    if params.epsilon is None:
        raise QueryRefused(
            "this query is answered under no privacy budget, so it takes no ε",
            rule="budget.epsilon",
        )
    if not 0 < requested < math.inf:
        raise QueryRefused("ε must be a positive number", rule="budget.epsilon")
    if cap is not None and requested > cap + 1e-12:
        raise QueryRefused(
            f"ε={requested:g} is above the grant's per-query maximum ε={cap:g}",
            rule="budget.epsilon_per_query",
        )
    return replace(params, epsilon=requested)
