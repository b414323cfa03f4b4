"""Release modes (issue 14): dp by default, reviewed on the bureau's choice, the migration of
grants stored before release modes existed (previous schema, SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from policies import GrantTerms, ReleaseMode
from policies.admin import migrate_release_modes
from policies.grant_terms import legacy_release_mode
from policies.grants import grant_history, require_grant
from sandbox.core.classification import Level
from sandbox.core.db import add_missing_columns
from sandbox.core.errors import InvalidInput
from sandbox.core.policy_tables import grants

from .conftest import NOW, World

CLAIMS = "health.claims"


def _terms(**changes: object) -> GrantTerms:
    return GrantTerms(
        purpose_code="epidemiology",
        purpose_text="disease burden by district",
        valid_from=NOW,
        valid_until=NOW + timedelta(days=90),
        max_level=Level.L3,
        k=10,
        **changes,  # type: ignore[arg-type]
    )


def test_a_new_grant_is_dp_with_the_default_budget(world: World) -> None:
    bureau = world.actor("bureau-health")
    grant = world.admin.issue_grant(bureau, CLAIMS, "op-planner", _terms())
    assert grant.release_mode is ReleaseMode.DP and not grant.review_required
    assert (grant.epsilon_total, grant.epsilon_per_query) == world.admin.default_budget
    entry = world.recorder.entries[-1]
    assert entry["action"] == "grant.issue"
    assert entry["details"]["grant"]["release_mode"] == "dp"
    assert entry["details"]["grant"]["epsilon_total"] == world.admin.default_budget[0]


def test_an_explicit_budget_is_kept_and_reviewed_takes_none(world: World) -> None:
    bureau = world.actor("bureau-health")
    grant = world.admin.issue_grant(
        bureau, CLAIMS, "op-planner", _terms(epsilon_total=3.0, epsilon_per_query=0.5)
    )
    assert (grant.epsilon_total, grant.epsilon_per_query) == (3.0, 0.5)
    reviewed = world.admin.issue_grant(
        bureau, CLAIMS, "op-planner", _terms(release_mode=ReleaseMode.REVIEWED)
    )
    assert reviewed.review_required and reviewed.epsilon_total is None


def test_the_bureau_chooses_the_mode_as_a_new_version(world: World) -> None:
    bureau = world.actor("bureau-health")
    grant_id = world.grant_id("op-bank", CLAIMS)  # the demo's: reviewed
    with pytest.raises(InvalidInput) as raised:
        world.admin.set_release_mode(bureau, grant_id, ReleaseMode.REVIEWED, reason="again")
    assert raised.value.rule == "grant.unchanged"
    with pytest.raises(InvalidInput) as raised:
        world.admin.set_release_mode(bureau, grant_id, ReleaseMode.DP)
    assert raised.value.rule == "grant.release_mode"  # a reason is required
    dp = world.admin.set_release_mode(
        bureau, grant_id, ReleaseMode.DP, epsilon_total=4.0, reason="agreement 40: noised"
    )
    assert (dp.release_mode, dp.epsilon_total, dp.version) == (ReleaseMode.DP, 4.0, 2)
    entry = world.recorder.entries[-1]
    assert (entry["action"], entry["actor"], entry["decision"]) == (
        "grant.release_mode",
        "bureau-health",
        "allow",
    )
    assert entry["details"]["reason"] == "agreement 40: noised"
    with pytest.raises(InvalidInput) as raised:  # a dp budget only goes down this way
        world.admin.set_release_mode(
            bureau, grant_id, ReleaseMode.DP, epsilon_total=40.0, reason="more"
        )
    assert raised.value.rule == "grant.narrow_widens"
    back = world.admin.set_release_mode(bureau, grant_id, ReleaseMode.REVIEWED, reason="exact")
    assert back.review_required and back.epsilon_total is None and back.version == 3
    with world.engine.connect() as conn:
        changes = [v["change"] for v in grant_history(conn, grant_id)]
    assert changes == ["issue", "release_mode", "release_mode"]
    with pytest.raises(InvalidInput) as raised:  # narrowing never changes the mode
        world.admin.narrow_grant(bureau, grant_id, release_mode=ReleaseMode.DP)
    assert raised.value.rule == "grant.narrow_widens"


def test_an_operator_cannot_choose_the_mode(world: World) -> None:
    grant_id = world.grant_id("op-bank", CLAIMS)
    with pytest.raises(Exception) as raised:
        world.admin.set_release_mode(
            world.actor("op-bank"), grant_id, ReleaseMode.DP, reason="I want it"
        )
    assert getattr(raised.value, "rule", "") == "role.not_permitted"


@pytest.mark.parametrize(
    ("review_required", "epsilon_total", "mode"),
    [
        (False, None, ReleaseMode.REVIEWED),
        (True, None, ReleaseMode.REVIEWED),
        (False, 10_000_000, ReleaseMode.DP),
        (True, 10_000_000, ReleaseMode.REVIEWED),
    ],
)
def test_legacy_mode_is_conservative(
    review_required: bool, epsilon_total: int | None, mode: ReleaseMode
) -> None:
    assert legacy_release_mode(review_required=review_required, epsilon_total=epsilon_total) is mode


def _previous_schema(world: World, legacy: dict[str, tuple[bool, int | None]]) -> None:
    """Make the world's control plane what the previous release left: no release_mode column,
    the grants' review_required and epsilon_total as given (grant id -> values)."""
    with world.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE grants DROP COLUMN release_mode"))
    with world.engine.begin() as conn:
        for grant_id, (review, epsilon) in legacy.items():
            conn.execute(
                sa.text(
                    "UPDATE grants SET review_required = :r, epsilon_total = :e, "
                    "epsilon_per_query = NULL WHERE id = :id"
                ),
                {"r": review, "e": epsilon, "id": grant_id},
            )


def test_migration_of_a_previous_schema(any_world: World) -> None:
    world = any_world
    exact = world.grant_id("op-bank", CLAIMS)
    budget = world.grant_id("op-insurer", CLAIMS)
    reviewed = world.grant_id("op-bank", "market.enterprises")
    _previous_schema(
        world, {exact: (False, None), budget: (False, 10_000_000), reviewed: (True, None)}
    )
    assert "grants.release_mode" in add_missing_columns(world.engine)
    with world.engine.connect() as conn:
        # Before the migration ran, a NULL mode is read as it will be set: never exact unreviewed.
        assert require_grant(conn, exact).release_mode is ReleaseMode.REVIEWED
        versions = {g: require_grant(conn, g).version for g in (exact, budget, reviewed)}
    before = len(world.recorder.entries)
    migrated = migrate_release_modes(world.authority)
    assert {g.id for g in migrated} >= {exact, budget, reviewed}
    expected = {exact: "reviewed", budget: "dp", reviewed: "reviewed"}
    was = {exact: "exact_unreviewed", budget: "budget", reviewed: "review_required"}
    with world.engine.connect() as conn:
        for grant_id, mode in expected.items():
            grant = require_grant(conn, grant_id)
            assert grant.release_mode.value == mode
            assert grant.version == versions[grant_id] + 1
            last = grant_history(conn, grant_id)[-1]
            assert (last["change"], last["changed_by"]) == ("migrate", "system")
            assert last["terms"]["release_mode"] == mode
        stored = conn.execute(sa.select(grants.c.release_mode).where(grants.c.id == exact))
        assert stored.scalar_one() == "reviewed"
    entries = {e["target"]: e for e in world.recorder.entries[before:]}
    for grant_id, mode in expected.items():
        entry = entries[f"grant:{grant_id}"]
        assert (entry["actor"], entry["action"], entry["rule"]) == (
            "system",
            "grant.release_mode",
            "grant.release_mode.migrated",
        )
        assert entry["details"]["release_mode"] == mode
        assert entry["details"]["was"] == was[grant_id]
        assert entry["details"]["chosen_by"] == "system"
    # Done once: opening again migrates nothing and records nothing.
    count = len(world.recorder.entries)
    assert migrate_release_modes(world.authority) == []
    assert len(world.recorder.entries) == count
    # The owning bureau then records its own choice.
    chosen = world.admin.set_release_mode(
        world.actor("bureau-health"), exact, ReleaseMode.DP, reason="noised from now on"
    )
    assert chosen.release_mode is ReleaseMode.DP and chosen.epsilon_total is not None


def test_migration_is_not_committed_without_its_audit_entry(world: World) -> None:
    exact = world.grant_id("op-bank", CLAIMS)
    _previous_schema(world, {exact: (False, None)})
    add_missing_columns(world.engine)

    class Down:
        def append(self, **fields: object) -> int:
            raise OSError("disk full")

    world.authority.recorder = Down()
    assert migrate_release_modes(world.authority) == []
    with world.engine.connect() as conn:
        stored = conn.execute(sa.select(grants.c.release_mode).where(grants.c.id == exact))
        assert stored.scalar_one() is None  # not migrated unrecorded; read as reviewed meanwhile
        assert require_grant(conn, exact).release_mode is ReleaseMode.REVIEWED
