"""DP quantiles of measures: the exponential mechanism (permute-and-flip) under a budget.

Without a budget a quantile is refused with ``guard.quantile_needs_budget``; with one
it is one of the measure's declared bins (a whole number for a whole-number measure,
else a bin's midpoint), chosen so that ε is spent as planned.
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import pytest

from sandbox.core.errors import QueryRefused
from sandbox.query.disclosure import QUANTILE_BINS, DisclosureParams, noise_plan
from sandbox.query.noise import seeded_noise
from sandbox.query.release import prepare, release
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

BUDGET = DisclosureParams(
    k=10, epsilon=4.0, max_rows_per_entity=2, max_groups_per_entity=1, dominance_p=None
)


def run(platform, sql: str, params: DisclosureParams = BUDGET, seed: int = 1):
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    stats = platform.enclave.query(prepared.plan.stats_sql)
    return prepared, release(stats, prepared, noise=seeded_noise(seed))


def share_at_or_below(platform, value: float, where: str = "") -> float:
    with platform.enclave.cursor() as cur:
        below, total = cur.sql(
            "SELECT count(*) FILTER (WHERE least(claim_amount, 13000) <= ?), count(*) "
            f"FROM health.claims {where}",
            params=[value],
        ).fetchall()[0]
    return below / total


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT median(claim_amount) FROM health.claims",
        "SELECT quantile_cont(claim_amount, 0.9) FROM health.claims",
        "SELECT district, quantile_disc(claim_amount, 0.25) FROM health.claims GROUP BY 1",
        "SELECT quantile(claim_amount, 0.5) FROM health.claims",
    ],
)
def test_without_a_budget_a_quantile_is_refused_saying_why(sql: str) -> None:
    with pytest.raises(QueryRefused) as info:
        prepare(sql, access(), DisclosureParams(k=10), max_sql_length=MAX_SQL_LENGTH)
    assert info.value.rule == "guard.quantile_needs_budget"
    assert "privacy budget" in info.value.message
    written = sql.split("(")[0].split()[-1]
    assert f"{written}()" in info.value.message


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("SELECT median(district) FROM health.claims", "guard.aggregate_argument"),
        ("SELECT median(person_id) FROM health.claims", "guard.identifier"),
        ("SELECT quantile_cont(claim_amount, 1.5) FROM health.claims", "guard.aggregate_argument"),
        (
            "SELECT quantile_cont(claim_amount, age) FROM health.claims",
            "guard.aggregate_argument",
        ),
        ("SELECT median(claim_amount * 2) FROM health.claims", "guard.aggregate_argument"),
    ],
)
def test_a_quantile_takes_a_measure_and_a_constant(sql: str, rule: str) -> None:
    with pytest.raises(QueryRefused) as info:
        prepare(sql, access(), BUDGET, max_sql_length=MAX_SQL_LENGTH)
    assert info.value.rule == rule, info.value.message


def test_median_and_p90_under_a_budget_are_close_and_spend_the_planned_epsilon(
    demo_platform,
) -> None:
    sql = (
        "SELECT median(claim_amount) AS m, quantile_cont(claim_amount, 0.9) AS p90, "
        "count(*) AS n FROM health.claims"
    )
    prepared, released = run(demo_platform, sql)
    assert released.epsilon_spent == prepared.epsilon == 4.0
    plans = {p.column: p for p in noise_plan(prepared.columns, prepared.params, grouped=False)}
    quantiles = [c for c in prepared.columns if c.kind == "quantile"]
    assert len(quantiles) == 2
    assert Fraction(4) - Fraction(1, 10**8) <= sum(p.epsilon for p in plans.values()) <= 4
    ((m, p90, _n),) = [tuple(r.values()) for r in released.table.to_pylist()]
    width = 13_000 / QUANTILE_BINS  # the demo's declared bounds [0, 13000]
    for value in (m, p90):  # the midpoint of one of the declared bins
        assert value / width - 0.5 == pytest.approx(round(value / width - 0.5))
    # Against every claim, not the C = 2 claims per person the mechanism saw, and on a
    # grid of 13-yuan bins: close, not exact.
    assert 0.3 <= share_at_or_below(demo_platform, m) <= 0.7
    assert 0.8 <= share_at_or_below(demo_platform, p90) <= 0.97


def test_a_quantile_is_randomised_and_reproducible_with_a_seed(demo_platform) -> None:
    sql = "SELECT median(claim_amount) AS m FROM health.claims"
    small = DisclosureParams(k=10, epsilon=0.05, dominance_p=None)
    draws = [run(demo_platform, sql, small, seed=s)[1].table["m"][0].as_py() for s in range(8)]
    again = [run(demo_platform, sql, small, seed=s)[1].table["m"][0].as_py() for s in range(8)]
    assert draws == again
    assert len(set(draws)) > 1, "no randomness: the true median would be released exactly"


def test_filtered_and_grouped_quantiles(demo_platform) -> None:
    sql = (
        "SELECT median(claim_amount) FILTER (WHERE age >= 60) AS old, "
        "median(claim_amount) AS everyone FROM health.claims"
    )
    _, released = run(demo_platform, sql)
    (row,) = released.table.to_pylist()
    assert row["old"] is not None
    assert 0.3 <= share_at_or_below(demo_platform, row["old"], "WHERE age >= 60") <= 0.7
    grouped = "SELECT gender, median(claim_amount) AS m FROM health.claims GROUP BY 1"
    _, by_gender = run(demo_platform, grouped)
    assert by_gender.table.num_rows == 2


def test_permute_and_flip_matches_its_distribution() -> None:
    """Two candidates d apart at temperature T: the worse is chosen with e^{-d/T} / 2."""
    noise = seeded_noise(3)
    picks = Counter(
        noise.permute_and_flip([Fraction(0), Fraction(-2)], Fraction(2)) for _ in range(20_000)
    )
    expected = math.exp(-1) / 2
    assert picks[1] / 20_000 == pytest.approx(expected, abs=0.01)
    # A candidate far below the best is (almost) never chosen, and fast.
    far = [
        noise.permute_and_flip([Fraction(0), Fraction(-(10**6))], Fraction(1)) for _ in range(200)
    ]
    assert far == [0] * 200


def _choose(histogram: list[tuple[int, int]], q: float, **column: float) -> list[float]:
    """Forty draws of one group's quantile at temperature 2 (ε 1, one row per entity)."""
    from sandbox.query.disclosure import NoisePlan, StatColumn, _quantile

    stat = StatColumn("__h0", "quantile", q=q, **column)  # type: ignore[arg-type]
    plan = NoisePlan("__h0", Fraction(1), Fraction(1), Fraction(1), Fraction(2))
    return [_quantile(histogram, stat, plan, seeded_noise(seed)) for seed in range(40)]


def test_a_value_many_rows_share_is_the_quantile_not_a_random_bin() -> None:
    """All 5,355 rows hold 13 (years of schooling of one degree): the median is 13.  A
    score over the edges between bins tied on every edge there and chose at random
    (an outside rehearsal drew 5.35, 13.33, 15.04, 2.27 on UCI Adult)."""
    whole = _choose([(12, 5355)], 0.5, lower=1, upper=16, bins=16)
    assert Counter(whole).most_common(1)[0] == (13.0, 40)
    # Equal bins (a DOUBLE measure): the midpoint of the bin holding 13
    width = 15 / QUANTILE_BINS
    bin_ = int((13 - 1) / width)
    fine = _choose([(bin_, 5355)], 0.5, lower=1, upper=16)
    assert set(fine) == {1 + width * (bin_ + 0.5)}
    # Half the rows at 3, half at 9: every value from 3 to 9 splits them in halves
    split = _choose([(3, 500), (9, 500)], 0.5, lower=0, upper=20, bins=21)
    assert set(split) <= {3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0}
    # The 85th percentile of 1..10, 100 rows each: 9 (the rank 850 is inside its rows)
    spread = _choose([(v, 100) for v in range(1, 11)], 0.85, lower=0, upper=10, bins=11)
    assert Counter(spread).most_common(1)[0][0] == 9.0


def test_an_empty_group_still_gets_a_random_bin() -> None:
    draws = _choose([], 0.5, lower=0, upper=20, bins=21)
    assert len(set(draws)) > 5
    assert all(d == int(d) and 0 <= d <= 20 for d in draws)


def test_a_whole_number_measure_has_a_whole_number_quantile(demo_platform) -> None:
    """``age`` is an INTEGER with bounds [0, 110]: one bin per year, so its median is a
    year of age, as the data's own values are."""
    prepared, released = run(demo_platform, "SELECT median(age) AS m FROM health.claims")
    (stat,) = [c for c in prepared.columns if c.kind == "quantile"]
    assert stat.bins == 111
    ((m,),) = [tuple(r.values()) for r in released.table.to_pylist()]
    assert m == int(m)
    with demo_platform.enclave.cursor() as cur:
        truth = cur.sql("SELECT median(age) FROM health.claims").fetchall()[0][0]
    assert abs(m - truth) <= 3


def test_under_a_binding_total_bound_a_quantile_sees_t_rows_of_an_entity() -> None:
    """Where T < C·G binds, each entity's histograms hold at most T rows' bins over all
    groups (``entity_caps.total_cap``), so the temperature is 2·T/ε_j, not 2·C·G/ε_j."""
    import duckdb

    sql = "SELECT diagnosis_code, median(claim_amount) AS m FROM health.claims GROUP BY 1"
    bound = DisclosureParams(
        k=1,
        epsilon=1.0,
        max_rows_per_entity=3,
        max_groups_per_entity=4,
        max_total_rows_per_entity=5,
        dominance_p=None,
    )
    prepared = prepare(sql, access(), bound, max_sql_length=MAX_SQL_LENGTH)
    (plan,) = [
        p for p in noise_plan(prepared.columns, bound, grouped=True) if p.column.startswith("__h")
    ]
    assert plan.scale == Fraction(2 * 5) / plan.epsilon  # 2·T/ε_j
    wide = DisclosureParams(
        k=1, epsilon=1.0, max_rows_per_entity=3, max_groups_per_entity=4, dominance_p=None
    )
    (free,) = [
        p for p in noise_plan(prepared.columns, wide, grouped=True) if p.column.startswith("__h")
    ]
    assert free.scale == Fraction(2 * 3 * 4) / free.epsilon  # 2·C·G/ε_j without T
    # one person's 24 claims over six diagnoses: 5 of their bins in all, at most 3 in one
    con = duckdb.connect()
    con.execute("CREATE SCHEMA health")
    con.execute(
        "CREATE TABLE health.claims AS SELECT 'P1' AS person_id, 'D' || (i % 6) AS "
        "diagnosis_code, (i * 37 % 1000)::DECIMAL(12, 2) AS claim_amount FROM range(24) t(i)"
    )
    (histogram,) = [c.name for c in prepared.columns if c.kind == "quantile"]
    rows = con.sql(prepared.plan.stats_sql).to_arrow_table().to_pylist()
    kept = [sum(n for _, n in row[histogram] or []) for row in rows]  # a MAP: (bin, rows)
    assert sum(kept) == 5 and max(kept) == 3, rows  # the crossing cell's first 2 of 3
    without = prepare(sql, access(), wide, max_sql_length=MAX_SQL_LENGTH)
    rows = con.sql(without.plan.stats_sql).to_arrow_table().to_pylist()
    assert sum(n for row in rows for _, n in row[histogram] or []) == 3 * 4  # C·G


def test_a_quantiles_statement_is_in_rows_of_rank_and_holds(demo_platform) -> None:
    """``rank_half_width = ⌈T·ln(20·B)⌉`` (β = 0.05 over B bins) for each quantile, and
    over many draws at a small ε the released median's rank (among the rows the
    mechanism saw: each person's first C) is off by more than that at most about 5% of
    the time (here: never, the bound is a union bound)."""
    from sandbox.query.cell_accuracy import output_accuracy

    sql = "SELECT median(claim_amount) AS m FROM health.claims"
    small = DisclosureParams(
        k=10, epsilon=0.05, max_rows_per_entity=2, max_groups_per_entity=1, dominance_p=None
    )
    prepared, _ = run(demo_platform, sql, small)
    (quantile,) = [c.name for c in prepared.columns if c.kind == "quantile"]
    plans = noise_plan(prepared.columns, prepared.params, grouped=False)
    (plan,) = [p for p in plans if p.column == quantile]
    entry = output_accuracy(prepared)["m"]  # type: ignore[index]
    expected = math.ceil(float(plan.scale) * math.log(20 * QUANTILE_BINS))
    assert entry["kind"] == "quantile" and entry["half_width"] is None
    assert (entry["rank_half_width"], entry["bins"]) == (expected, QUANTILE_BINS)
    # about what the mechanism sees: 2 claims a person (it keeps those of smallest hash)
    with demo_platform.enclave.cursor() as cur:
        seen = [
            v
            for (v,) in cur.sql(
                "SELECT least(claim_amount, 13000) FROM (SELECT claim_amount, row_number() "
                "OVER (PARTITION BY person_id ORDER BY claim_id) AS r FROM health.claims) "
                "WHERE r <= 2"
            ).fetchall()
        ]
    seen.sort()
    target = len(seen) / 2
    width = 13_000 / QUANTILE_BINS
    off = []
    for seed in range(40):
        m = run(demo_platform, sql, small, seed=seed)[1].table["m"][0].as_py()
        lo, hi = m - width / 2, m + width / 2  # the released bin
        below = sum(1 for v in seen if v < lo)
        inside = sum(1 for v in seen if lo <= v < hi)
        off.append(max(0, below - target, target - (below + inside)))
    assert max(off) <= expected, (max(off), expected)
    assert sum(1 for o in off if o > 0) > 0, "at ε 0.05 some draws miss the median's bin"
