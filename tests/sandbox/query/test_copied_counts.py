"""At C = 1 a count of rows is the count of entities: released as that one noisy value."""

from __future__ import annotations

from fractions import Fraction

from sandbox.query.disclosure import (
    ENTITIES,
    GROUPS,
    DisclosureParams,
    StatColumn,
    noise_plan,
)
from sandbox.query.noise import seeded_noise
from sandbox.query.release import prepare, release
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

ROWS = [StatColumn(ENTITIES, "entities"), StatColumn("__r1", "rows")]


def test_at_one_row_per_entity_count_star_costs_nothing_extra() -> None:
    one = DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=1)
    plans = {p.column: p for p in noise_plan(ROWS, one)}
    assert plans["__r1"].copy_of == ENTITIES and plans["__r1"].epsilon == 0
    assert plans["__r1"].scale == plans[ENTITIES].scale  # its accuracy is the source's
    alone = {p.column: p for p in noise_plan(ROWS[:1], one)}
    assert plans[ENTITIES].epsilon == alone[ENTITIES].epsilon  # all the entity count had
    assert sum(p.epsilon for p in plans.values()) <= Fraction(1)
    assert set(plans) == {ENTITIES, "__r1", GROUPS}
    # At C = 2 they differ (an entity adds up to 2 rows): the row count is noised, and
    # selects the groups in the entity count's place (test_row_gate.py).
    two = {
        p.column: p
        for p in noise_plan(ROWS, DisclosureParams(k=10, epsilon=1.0, max_rows_per_entity=2))
    }
    assert two["__r1"].copy_of is None and two["__r1"].epsilon > 0 and two["__r1"].selects
    assert set(two) == {"__r1", GROUPS}
    # At C = 1 with T binding (T < G) the row count keeps an entity's cells within T rows
    # and the entity count its first G cells: different values, so no copy (review,
    # December 2026).
    bound = DisclosureParams(
        k=10,
        epsilon=1.0,
        max_rows_per_entity=1,
        max_groups_per_entity=3,
        max_total_rows_per_entity=2,
    )
    plans_t = {p.column: p for p in noise_plan(ROWS, bound)}
    assert plans_t["__r1"].copy_of is None and plans_t["__r1"].epsilon > 0


def _released(demo_platform, sql: str, seed: int):  # type: ignore[no-untyped-def]
    params = DisclosureParams(
        k=10, epsilon=1.0, max_rows_per_entity=1, max_groups_per_entity=1, dominance_p=None
    )
    prepared = prepare(sql, access(), params, max_sql_length=MAX_SQL_LENGTH)
    stats = demo_platform.enclave.query(prepared.plan.stats_sql)
    return prepared, release(stats, prepared, noise=seeded_noise(seed))


def test_released_counts_equal_the_entity_counts_they_copy(demo_platform) -> None:  # type: ignore[no-untyped-def]
    sql = (
        "SELECT gender, count(*) AS n, count(DISTINCT person_id) AS persons, "
        "count(*) FILTER (WHERE age >= 60) AS old, "
        "count(DISTINCT person_id) FILTER (WHERE age >= 60) AS old_persons "
        "FROM health.claims GROUP BY 1"
    )
    seen = set()
    for seed in range(5):
        _, released = _released(demo_platform, sql, seed)
        assert released.epsilon_spent == 1.0
        rows = released.table.to_pylist()
        assert len(rows) == 2
        for row in rows:
            assert row["n"] == row["persons"] and row["old"] == row["old_persons"]
            seen.add(row["n"])
    # Noisy (not the true count of persons, which is one value per gender).
    with demo_platform.enclave.cursor() as cur:
        true = {
            n
            for (n,) in cur.sql(
                "SELECT count(DISTINCT person_id) FROM health.claims GROUP BY gender"
            ).fetchall()
        }
    assert len(seen) > 2 and seen != true
