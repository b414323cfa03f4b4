"""The accountant: composition, the zCDP conversion, allocation and the ε a query takes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.core.errors import QueryRefused
from sandbox.query.accountant import (
    Demand,
    allocate,
    basic_composition,
    choose,
    per_query_epsilon,
    pure_to_zcdp,
    zcdp_composition,
    zcdp_epsilon,
    zcdp_for_epsilon,
)
from sandbox.query.disclosure import DisclosureParams


def bun_steinke(rho: float, delta: float) -> float:
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


def test_composition_identities() -> None:
    assert basic_composition([0.25, 0.5, 0.25]) == 1.0
    assert basic_composition([]) == 0.0
    assert zcdp_composition([0.1, 0.2]) == pytest.approx(0.3)
    assert pure_to_zcdp(1.0) == 0.5
    # Laplace at ε_j composes to rho = Σ ε_j²/2, never more than (Σ ε_j)²/2.
    eps = [0.2, 0.3, 0.5]
    assert zcdp_composition([pure_to_zcdp(e) for e in eps]) <= pure_to_zcdp(sum(eps))
    with pytest.raises(ValueError):
        basic_composition([-0.1])
    with pytest.raises(ValueError):
        zcdp_composition([-0.1])


def test_known_conversion_values() -> None:
    """Bun-Steinke's bound exactly; CKS20's at most it, and its known value at rho = 0.5."""
    assert bun_steinke(0.5, 1e-6) == pytest.approx(5.756, abs=1e-3)
    assert zcdp_epsilon(0.5, 1e-6) <= bun_steinke(0.5, 1e-6)
    # CKS20 proposition 12 at rho = 0.5, δ = 1e-6, minimised over a dense grid of a here.
    grid = [1 + 10 ** (i / 2000) for i in range(-8000, 10000)]
    brute = min(
        a * 0.5 + (math.log(1e6) + (a - 1) * math.log1p(-1 / a) - math.log(a)) / (a - 1)
        for a in grid
    )
    assert zcdp_epsilon(0.5, 1e-6) == pytest.approx(brute, abs=1e-4)
    assert brute < bun_steinke(0.5, 1e-6) - 0.3  # the tighter conversion matters
    assert zcdp_epsilon(0.0, 1e-6) == 0.0
    with pytest.raises(ValueError):
        zcdp_epsilon(0.1, 0.0)


@settings(max_examples=60, deadline=None)
@given(
    rho=st.floats(1e-6, 10.0),
    more=st.floats(1e-6, 1.0),
    delta=st.floats(1e-12, 0.1),
)
def test_conversion_is_monotone(rho: float, more: float, delta: float) -> None:
    """More rho never costs less ε; a larger δ never costs more; never above Bun-Steinke."""
    assert zcdp_epsilon(rho + more, delta) >= zcdp_epsilon(rho, delta) - 1e-9
    assert zcdp_epsilon(rho, min(0.5, delta * 10)) <= zcdp_epsilon(rho, delta) + 1e-9
    assert zcdp_epsilon(rho, delta) <= bun_steinke(rho, delta) + 1e-12
    assert zcdp_epsilon(rho, delta) >= 0.0


@settings(max_examples=60, deadline=None)
@given(epsilon=st.floats(0.01, 20.0), delta=st.floats(1e-12, 0.1))
def test_inverse_conversion_stays_within_epsilon(epsilon: float, delta: float) -> None:
    rho = zcdp_for_epsilon(epsilon, delta)
    assert 0 < rho and zcdp_epsilon(rho, delta) <= epsilon
    assert zcdp_epsilon(rho * 1.001, delta) > epsilon * 0.999  # and is (nearly) the largest


demands_strategy = st.lists(
    st.builds(
        Demand,
        l1=st.floats(1.0, 1e4),
        l2=st.floats(1.0, 1e4),
        weight=st.floats(1e-6, 10.0),
        pure=st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=80, deadline=None)
@given(demands=demands_strategy, epsilon=st.floats(0.01, 10.0))
def test_allocation_spends_exactly_the_query_and_choose_takes_the_smaller_error(
    demands: list[Demand], epsilon: float
) -> None:
    delta = 5e-7
    laplace = allocate(demands, epsilon, delta, "laplace")
    assert sum(laplace.epsilons) == pytest.approx(epsilon)
    assert laplace.charged == epsilon and all(e > 0 for e in laplace.epsilons)
    gaussian = allocate(demands, epsilon, delta, "gaussian")
    assert sum(gaussian.rhos) == pytest.approx(zcdp_for_epsilon(epsilon, delta))
    assert zcdp_epsilon(sum(gaussian.rhos), delta) <= epsilon * (1 + 1e-9)
    chosen = choose(demands, epsilon, delta)
    assert chosen.error <= min(laplace.error, gaussian.error) * (1 + 1e-12)


def test_laplace_split_minimises_the_ratio_error() -> None:
    """ε_j ∝ (w_j Δ_j²)^(1/3): any other split of the same ε has a larger weighted error."""
    demands = [Demand(1.0, 1.0, 1.0), Demand(2_000.0, 2_000.0, 1 / 500**2)]
    best = allocate(demands, 1.0, 1e-6, "laplace")
    a = [2 * d.weight * d.l1**2 for d in demands]
    assert best.epsilons[1] / best.epsilons[0] == pytest.approx((a[1] / a[0]) ** (1 / 3))
    for share in (0.2, 0.35, 0.5, 0.65, 0.8):
        other = a[0] / share**2 + a[1] / (1 - share) ** 2
        assert other >= best.error


@settings(max_examples=80, deadline=None)
@given(
    demands=demands_strategy,
    cap=st.floats(0.01, 0.5),
    epsilon=st.floats(0.01, 10.0),
    mechanism=st.sampled_from(["laplace", "gaussian"]),
)
def test_a_capped_demand_takes_at_most_its_cap_and_the_rest_is_split_as_before(
    demands: list[Demand], cap: float, epsilon: float, mechanism: str
) -> None:
    """The number of groups' share (``disclosure._GROUPS_CAP``): held to its cap, the
    others keep their proportions, and the whole is spent as without a cap."""
    capped = [*demands, Demand(1.0, 1.0, 1e30, cap=cap)]  # a weight that would take most
    delta = 5e-7
    whole = allocate(capped, epsilon, delta, mechanism)  # type: ignore[arg-type]
    parts = whole.epsilons if mechanism == "laplace" else whole.rhos
    total = epsilon if mechanism == "laplace" else zcdp_for_epsilon(epsilon, delta)
    assert sum(parts) == pytest.approx(total)
    assert parts[-1] == pytest.approx(cap * total)
    free = allocate(demands, epsilon, delta, mechanism)  # type: ignore[arg-type]
    before = free.epsilons if mechanism == "laplace" else free.rhos
    for mine, theirs in zip(parts[:-1], before, strict=True):
        assert mine == pytest.approx(theirs * (1 - cap))


def test_a_demand_under_its_cap_is_not_moved() -> None:
    demands = [Demand(9.0, 9.0, 0.04), Demand(1.0, 1.0, 0.01)]
    plain = allocate(demands, 1.0, 1e-6, "laplace")
    loose = allocate([demands[0], Demand(1.0, 1.0, 0.01, cap=0.9)], 1.0, 1e-6, "laplace")
    assert plain.epsilons == pytest.approx(loose.epsilons)
    tight = allocate([demands[0], Demand(1.0, 1.0, 0.01, cap=0.05)], 1.0, 1e-6, "laplace")
    assert plain.epsilons[1] > 0.05 and tight.epsilons[1] == pytest.approx(0.05)


def test_gaussian_wins_only_with_many_groups() -> None:
    """One entity in G groups: L1 G but L2 √G; at ε = 1, δ = 1e-6 the Gaussian wins for large G."""

    def count(g: int) -> list[Demand]:
        return [Demand(float(g), math.sqrt(g), 1.0)]

    assert choose(count(1), 1.0, 5e-7).mechanism == "laplace"
    assert choose(count(3), 1.0, 5e-7).mechanism == "laplace"
    assert choose(count(100), 1.0, 5e-7).mechanism == "gaussian"
    # Only pure demands (a quantile): always pure ε.
    assert choose([Demand(4.0, 4.0, 1.0, pure=True)], 1.0, 5e-7).mechanism == "laplace"


def test_per_query_epsilon_within_the_grant() -> None:
    params = DisclosureParams(k=10, epsilon=1.0)
    assert per_query_epsilon(params, 1.0, None) is params
    assert per_query_epsilon(params, 1.0, 0.25).epsilon == 0.25
    assert per_query_epsilon(params, None, 3.0).epsilon == 3.0  # the ledger decides
    with pytest.raises(QueryRefused) as above:
        per_query_epsilon(params, 1.0, 1.5)
    assert above.value.rule == "budget.epsilon_per_query"
    assert "1.5" in above.value.message and "maximum" in above.value.message
    with pytest.raises(QueryRefused) as none:
        per_query_epsilon(DisclosureParams(k=10), None, 0.5)
    assert none.value.rule == "budget.epsilon"
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(QueryRefused) as info:
            per_query_epsilon(params, 1.0, bad)
        assert info.value.rule == "budget.epsilon"


def test_a_capped_demand_does_not_choose_the_mechanism() -> None:
    """A count by year on a panel of 8 rows a person (C = G = T = 8: its L2 sensitivity
    is its L1 one) beside the number of groups (weight 0.01, held to 5%): Laplace, whose
    count is three times as precise; counted, the groups' error chose the Gaussian."""
    rows = Demand(8.0, 8.0, 0.0494)
    groups = Demand(8.0, 8.0, 0.01, cap=0.05)
    chosen = choose([rows, groups], 1.0, 5e-7)
    assert chosen.mechanism == "laplace"
    laplace = allocate([rows, groups], 1.0, 5e-7, "laplace")
    gaussian = allocate([rows, groups], 1.0, 5e-7, "gaussian")
    assert 2 * (8.0 / laplace.epsilons[0]) ** 2 < 8.0**2 / (2 * gaussian.rhos[0]) / 5
    # where the outputs gain from the Gaussian (many groups), it is still chosen
    spread = Demand(100.0, 10.0, 1.0)
    assert choose([spread, Demand(100.0, 100.0, 0.01, cap=0.05)], 1.0, 5e-7).mechanism == (
        "gaussian"
    )
