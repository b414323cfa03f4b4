"""Under a budget, a query without GROUP BY: its one group exists whatever the data.

So the stats query returns its row even over no entity (no HAVING), and disclosure holds
the noisy count against the grant's ``k`` alone: no partition-selection threshold, which
is for groups whose existence is data.  (Before, ``COUNT(*) ... WHERE income > 100000``
over 84 persons was released in 10% of runs at C = 2, G = 3, ε = 1.)
"""

from __future__ import annotations

from sandbox.query.disclosure import ENTITIES, DisclosureParams, disclose, selection_threshold
from sandbox.query.disclosure import noise_plan as plan_of
from sandbox.query.guard import check_query
from sandbox.query.noise import seeded_noise
from sandbox.query.parse import parse_query
from sandbox.query.rewrite import ContributionBounds, build_plan
from tests.sandbox.query.test_disclosure import COLUMNS, people, stats_from
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

PARAMS = DisclosureParams(
    k=10, epsilon=1.0, max_rows_per_entity=2, max_groups_per_entity=3, delta=1e-6
)


def test_the_threshold_is_above_k_for_groups() -> None:
    (selecting,) = [p for p in plan_of(COLUMNS, PARAMS, grouped=True) if p.selects]
    assert selection_threshold(selecting, PARAMS) > 2 * PARAMS.k  # what grouped pays


def test_one_group_of_a_few_dozen_is_released_against_k_alone() -> None:
    def rate(grouped: bool) -> float:
        stats = stats_from(people("A", 40), grouped=grouped)
        runs = [disclose(stats, COLUMNS, PARAMS, noise=seeded_noise(s)) for s in range(100)]
        return sum(r.table.num_rows for r in runs) / len(runs)

    # 40 entities, a noise deviation of about 23 on the count at this split: the noisy count reaches
    # k = 10 about nine times in ten; as one group among possible others (GROUP BY) it
    # must also reach the partition-selection threshold, which it almost never does.
    assert rate(grouped=False) >= 0.75
    assert rate(grouped=True) <= 0.1


def test_one_group_of_nobody_is_mostly_withheld_and_never_says_why() -> None:
    stats = stats_from(people("A", 1), grouped=False)
    stats = stats.set_column(0, ENTITIES, [[0]])  # what a WHERE matching nobody gives
    for seed in range(20):
        result = disclose(stats, COLUMNS, PARAMS, noise=seeded_noise(seed))
        assert result.table.num_rows in (0, 1)
        assert result.groups_suppressed == 1 - result.table.num_rows


def test_the_stats_query_keeps_the_one_group_without_having() -> None:
    bounds = ContributionBounds(max_rows_per_entity=2, max_groups_per_entity=3)
    grants = access()

    def stats_sql(sql: str) -> str:
        checked = check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), grants)
        return build_plan(checked, grants, bounds=bounds, k=10).stats_sql.upper()

    assert "HAVING" not in stats_sql(
        "SELECT count(*) FROM health.claims WHERE claim_amount > 100000"
    )
    assert "HAVING COUNT(*) >= 10" in stats_sql(
        "SELECT gender, count(*) FROM health.claims GROUP BY gender"
    )


def test_one_group_takes_c_times_g_rows_per_entity() -> None:
    """Without group keys an entity's C rows in each of G groups are C·G rows in the one
    group: the same sensitivity, and no rows lost to the per-group cap (the demo's count
    of women's claims was 9.9% low at C = 6)."""
    from sandbox.query.release import prepare

    params = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=2, max_groups_per_entity=3)
    total = prepare(
        "SELECT count(*) FROM health.claims", access(), params, max_sql_length=MAX_SQL_LENGTH
    )
    assert (total.params.max_rows_per_entity, total.params.max_groups_per_entity) == (6, 1)
    assert "LEAST(COUNT(*), 6)" in total.plan.stats_sql.upper().replace('"', "")
    grouped = prepare(
        "SELECT diagnosis_code, count(*) FROM health.claims GROUP BY 1",
        access(),
        params,
        max_sql_length=MAX_SQL_LENGTH,
    )  # diagnosis_code declares no values per person: the dataset's G (key_groups)
    assert (grouped.params.max_rows_per_entity, grouped.params.max_groups_per_entity) == (2, 3)
