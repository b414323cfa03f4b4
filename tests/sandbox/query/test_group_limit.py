"""Under a budget the limit on the groups a run forms is held against their noisy number.

An exact limit was one exact bit per query: padded to sit at the limit, a query failed
or not as one person's group existed or not, whatever its ε.  Now neighbouring datasets
(one group more or less) fail with nearly the same probability, and the decision reuses
the draw ``groups_suppressed`` is computed from (nothing more is spent).
"""

from __future__ import annotations

import math

import pytest

from sandbox.core.errors import QueryRefused, QueryTimeout
from sandbox.core.settings import Settings
from sandbox.platform import Platform
from sandbox.query.disclosure import (
    LIMIT_DELTA_SHARE,
    DisclosureParams,
    StatColumn,
    disclose,
    group_read_cap,
    noise_plan,
    selection_threshold,
)
from sandbox.query.noise import seeded_noise
from sandbox.query.service import QueryService
from tests.conftest import build_deployment
from tests.sandbox.query.test_disclosure import COLUMNS, people, stats_from

PARAMS = DisclosureParams(k=10, epsilon=1.0)
SEEDS = range(400)


def _groups(n: int) -> list:
    return [record for i in range(n) for record in people(f"g{i:03d}", 12)]


def _refusals(n: int, limit: int) -> int:
    table = stats_from(_groups(n))
    refused = 0
    for seed in SEEDS:
        try:
            disclose(table, COLUMNS, PARAMS, noise=seeded_noise(seed), max_groups=limit)
        except QueryTimeout as exc:
            assert exc.rule == "enclave.limits"
            refused += 1
    return refused


def test_far_below_the_limit_never_fails_and_far_above_always_does() -> None:
    scale = next(p.scale for p in noise_plan(COLUMNS, PARAMS) if p.column == "__groups")
    margin = int(30 * scale)
    assert _refusals(20, 20 + margin) == 0
    assert _refusals(20 + margin, 20) == len(SEEDS)


def test_one_group_more_at_the_limit_changes_the_outcome_by_little() -> None:
    """At the limit an exact test passes 100 groups and fails 101 every time."""
    at, over = _refusals(100, 100), _refusals(101, 100)
    assert 0.1 * len(SEEDS) < at < 0.9 * len(SEEDS)
    assert 0.1 * len(SEEDS) < over < 0.9 * len(SEEDS)


def test_the_same_draw_gives_groups_suppressed() -> None:
    """The seeded run that passes reports what it reported before the limit existed."""
    table = stats_from(_groups(30))
    for seed in range(20):
        plain = disclose(table, COLUMNS, PARAMS, noise=seeded_noise(seed))
        limited = disclose(table, COLUMNS, PARAMS, noise=seeded_noise(seed), max_groups=10_000)
        assert plain.groups_suppressed == limited.groups_suppressed
        assert plain.table.equals(limited.table)


def test_the_engine_reads_up_to_a_margin_of_the_noise_fixed_by_the_plan() -> None:
    """Stopping at the read cap ``H`` differs from the noisy test only where the noise is
    below ``-(H - limit)``: at most ``δ' = δ·share/(1 + e^ε)``, whatever the scale.  A
    fixed cap of twice the limit passed runs at ε = 0.001 (scale 33,530) up to it and
    failed one group more every time."""
    limit = 200_000
    for epsilon in (0.05, 0.2, 1.0, 5.0):
        params = DisclosureParams(k=10, epsilon=epsilon)
        plan = next(p for p in noise_plan(COLUMNS, params) if p.column == "__groups")
        cap = group_read_cap(COLUMNS, params, limit, grouped=True)
        b = float(plan.scale)
        tail = math.exp(-(cap - limit) / b)  # P[Z <= -(H - limit)], discrete Laplace
        assert tail <= params.delta * LIMIT_DELTA_SHARE / (1 + math.exp(epsilon))
        assert cap - limit < 40 * b  # and no more than that needs
    assert group_read_cap(COLUMNS, PARAMS, limit, grouped=False) == limit  # one group
    assert group_read_cap(COLUMNS, DisclosureParams(k=10), limit, grouped=True) == limit


def test_an_epsilon_too_small_for_the_read_cap_is_refused_before_the_run() -> None:
    """Data-independent (the plan's noise only): refused before anything is charged."""
    with pytest.raises(QueryRefused) as refused:
        group_read_cap(COLUMNS, DisclosureParams(k=10, epsilon=0.0005), 200_000, grouped=True)
    assert refused.value.rule == "budget.epsilon" and "larger ε" in refused.value.message


def test_an_epsilon_whose_shares_round_to_nothing_is_refused_not_crashed() -> None:
    """At ε = 1e-4 a Gaussian share of rho rounded down to 0 and noise_plan divided by it."""
    columns = [StatColumn("__entities", "entities"), StatColumn("__r1", "rows")]
    tiny = DisclosureParams(
        k=10,
        epsilon=1e-9,
        max_rows_per_entity=9,
        max_groups_per_entity=4,
        max_total_rows_per_entity=9,
    )
    with pytest.raises(QueryRefused) as refused:
        noise_plan(columns, tiny)
    assert refused.value.rule == "budget.epsilon"


def test_without_a_budget_the_true_number_is_not_held_here() -> None:
    """No noise to decide with: the engine's exact limit applies (and a reviewed run that
    crosses it is held for the reviewer: test_held_failure.py)."""
    table = stats_from(_groups(30))
    assert disclose(table, COLUMNS, DisclosureParams(k=10), max_groups=1).table.num_rows == 30


@pytest.fixture(scope="module")
def small_limit(tmp_path_factory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("group-limit") / "home"
    platform, tokens = build_deployment(home)
    platform.close()
    platform = Platform(Settings(home=home, threads=2, max_result_rows=1))  # 20 groups
    yield platform, tokens
    platform.close()


def test_a_dp_run_over_the_limit_fails_as_limits_and_one_under_it_runs(small_limit) -> None:  # type: ignore[no-untyped-def]
    platform, tokens = small_limit
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    service = QueryService(platform, noise=seeded_noise(1))  # seeded: no flaky tail
    with pytest.raises(QueryTimeout) as refused:  # about 1,200 groups, against 20
        service.run(
            insurer,
            "SELECT district, diagnosis_code, gender, count(*) AS n FROM health.claims "
            "GROUP BY 1, 2, 3",
        )
    assert refused.value.rule == "enclave.limits"
    one = service.run(
        insurer, "SELECT gender, count(*) AS n FROM health.claims WHERE gender = 'F' GROUP BY 1"
    )
    assert one.table.num_rows == 1  # max_result_rows 1: the released result fits


def test_explain_and_check_refuse_what_the_run_would(small_limit) -> None:  # type: ignore[no-untyped-def]
    """The read cap and the shares depend on the plan only: refused at authorization, so
    no job is created for a run that would be refused (and explain answers, not raises)."""
    platform, tokens = small_limit
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    service = QueryService(platform)
    sql = "SELECT district, diagnosis_code, count(*) AS n FROM health.claims GROUP BY 1, 2"
    for epsilon in (1e-5, 1e-12):  # the groups' noise too wide; shares round to nothing
        answer = service.explain(insurer, sql, epsilon=epsilon)
        assert answer["accepted"] is False and answer["rule"] == "budget.epsilon"
        with pytest.raises(QueryRefused) as refused:
            service.check(insurer, sql, epsilon=epsilon)
        assert refused.value.rule == "budget.epsilon"


@pytest.mark.parametrize("epsilon", [1.0, 700.0, 1e6])
def test_any_epsilon_a_grant_allows_gives_a_cap(epsilon: float) -> None:
    """ln(1/δ') grows as ε: computed without forming e^ε (which overflowed past ε = 690)."""
    cap = group_read_cap(COLUMNS, DisclosureParams(k=10, epsilon=epsilon), 200_000, grouped=True)
    assert 200_000 < cap < 1_000_000


def test_the_delta_shares_add_up_to_delta_under_the_gaussian() -> None:
    """Conversion (CONVERSION_SHARE), thresholds and the read cap (LIMIT_DELTA_SHARE): the
    thresholds once took 1% of what was left after the conversion, 0.5% over δ."""
    from sandbox.query.accountant import CONVERSION_SHARE
    from sandbox.query.partition import gaussian_threshold

    columns = [StatColumn("__entities", "entities"), StatColumn("__r1", "rows")]
    params = DisclosureParams(k=1, epsilon=1.0, max_groups_per_entity=8, delta=0.02)
    plan = next(p for p in noise_plan(columns, params) if p.selects)
    assert plan.mechanism == "gaussian"
    share = 1 - CONVERSION_SHARE - LIMIT_DELTA_SHARE
    expected = gaussian_threshold(plan.scale, params.groups_alone, params.delta * share)
    assert selection_threshold(plan, params) == max(params.k, expected + plan.lone - 1)
