"""Grants: validation against the classification, narrowing only narrows, status moves,
every change versioned and audited."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from policies import GrantStatus, GrantTerms, ReleaseMode, Tariff, Use
from policies.grant_terms import widenings
from sandbox.core.classification import Level
from sandbox.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from sandbox.core.policy_tables import grant_versions

from .conftest import NOW, World

CLAIMS = "health.claims"


def terms(**changes: Any) -> GrantTerms:
    base = GrantTerms(
        purpose_code="epidemiology",
        purpose_text="disease burden by district",
        valid_from=NOW,
        valid_until=NOW + timedelta(days=90),
        max_level=Level.L3,
        groupable=frozenset({"age"}),
        k=10,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"k": 5}, "platform floor 10"),
        ({"max_level": Level.L4}, "L4 columns never leave"),
        ({"columns": frozenset({"salary"})}, "'salary' is not in health.claims"),
        ({"max_level": Level.L2, "groupable": frozenset()}, None),
        ({"max_level": Level.L1, "groupable": frozenset()}, None),
        ({"columns": frozenset({"id_number"})}, "'id_number' is L4"),
        ({"groupable": frozenset({"district"})}, "'district' is dimension"),
        ({"groupable": frozenset({"person_id"})}, "'person_id' is identifier"),
        ({"max_level": Level.L2, "groupable": frozenset({"diagnosis_code"})}, "outside the grant"),
        (
            {"columns": frozenset({"age", "person_id"}), "groupable": frozenset({"gender"})},
            "outside the grant",
        ),
        ({"valid_until": NOW - timedelta(days=1)}, "valid_from must be before"),
        (
            {"epsilon_per_query": 1.0, "release_mode": ReleaseMode.REVIEWED},
            "needs an epsilon_total",
        ),
        ({"epsilon_total": 1.0, "epsilon_per_query": 2.0}, "cannot exceed"),
        ({"epsilon_total": -1.0}, "positive number"),
        ({"queries_per_day": 0}, "queries_per_day must be positive"),
        ({"purpose_code": "Bad Code"}, "purpose code"),
        ({"purpose_text": " "}, "purpose text"),
        ({"tariff": Tariff(use=Use.PUBLIC_INTEREST, price_per_query=100)}, "free of charge"),
        ({"tariff": Tariff.commercial(per_query=-1, per_million_rows=0)}, "negative"),
        ({"dominance_n": 3}, "dominance_n is 1 or 2"),
        ({"dominance_p": 0.0}, "dominance_p is a share"),
        ({"dominance_p": 1.5}, "dominance_p is a share"),
        ({"round_digits": 12}, "round_digits is between"),
    ],
)
def test_terms_are_checked_against_the_classification(
    world: World, changes: dict[str, Any], problem: str | None
) -> None:
    bureau = world.actor("bureau-health")
    if problem is None:
        grant = world.admin.issue_grant(bureau, CLAIMS, "op-planner", terms(**changes))
        assert grant.max_level == changes["max_level"]
        return
    with pytest.raises(InvalidInput, match=problem) as raised:
        world.admin.issue_grant(bureau, CLAIMS, "op-planner", terms(**changes))
    assert raised.value.rule == "grant.terms"
    entry = world.recorder.entries[-1]
    assert (entry["action"], entry["decision"], entry["rule"]) == (
        "grant.issue",
        "deny",
        "grant.terms",
    )


def test_issue_checks_operator_and_dataset(world: World) -> None:
    bureau = world.actor("bureau-health")
    with pytest.raises(InvalidInput, match="not an operator"):
        world.admin.issue_grant(bureau, CLAIMS, "auditor", terms())
    with pytest.raises(NotFound):
        world.admin.issue_grant(bureau, "health.nothing", "op-planner", terms())
    world.admin.set_licence(world.host, "op-planner", valid_until=NOW - timedelta(seconds=1))
    with pytest.raises(InvalidInput, match="no valid licence"):
        world.admin.issue_grant(bureau, CLAIMS, "op-planner", terms())


def test_only_the_owning_bureau_issues(world: World) -> None:
    with pytest.raises(Forbidden) as raised:
        world.admin.issue_grant(world.actor("bureau-market"), CLAIMS, "op-planner", terms())
    assert raised.value.rule == "domain.outside"
    with pytest.raises(Forbidden) as raised:
        world.admin.issue_grant(world.host, CLAIMS, "op-planner", terms())
    assert raised.value.rule == "role.not_permitted"
    with pytest.raises(Forbidden):
        world.admin.issue_grant(world.actor("admin"), CLAIMS, "op-planner", terms())


def test_issue_is_versioned_and_audited(world: World) -> None:
    grant = world.admin.issue_grant(
        world.actor("bureau-health"), CLAIMS, "op-planner", terms(), reason="MoU 2026-17"
    )
    assert (grant.version, grant.status, grant.issued_by) == (
        1,
        GrantStatus.ACTIVE,
        "bureau-health",
    )
    entry = world.recorder.entries[-1]
    assert entry["action"] == "grant.issue" and entry["decision"] == "allow"
    assert entry["details"]["grant"]["id"] == grant.id and entry["target"] == f"dataset:{CLAIMS}"
    _, history = world.admin.show_grant(world.actor("op-planner"), grant.id)
    assert [h["change"] for h in history] == ["issue"]
    assert history[0]["reason"] == "MoU 2026-17"


@pytest.mark.parametrize(
    ("changes", "widened"),
    [
        ({"valid_until": NOW + timedelta(days=400)}, "valid_until later"),
        ({"valid_from": NOW - timedelta(days=2)}, "valid_from earlier"),
        ({"k": 11}, None),
        ({"max_level": Level.L2, "groupable": frozenset({"age", "gender"})}, None),
        ({"columns": frozenset({"age", "person_id"}), "groupable": frozenset({"age"})}, None),
        ({"purpose_code": "marketing"}, "purpose cannot change"),
        ({"tariff": Tariff.commercial(per_query=1, per_million_rows=1)}, "tariff cannot change"),
        ({"queries_per_day": 5}, None),
        ({"dominance_p": 0.8, "dominance_n": 2}, None),
        ({"round_digits": 0}, None),
        ({"dominance_p": 0.95}, "dominance rule relaxed"),
        ({"dominance_p": None}, "dominance rule relaxed"),
        ({"dominance_n": 1}, "dominance rule relaxed"),
        ({"round_digits": 4}, "rounding made finer"),
        ({"round_digits": None}, "rounding made finer"),
    ],
)
def test_narrowing_never_widens(world: World, changes: dict[str, Any], widened: str | None) -> None:
    bureau = world.actor("bureau-health")
    grant_id = world.grant_id("op-bank", CLAIMS)
    if widened is None:
        grant = world.admin.narrow_grant(bureau, grant_id, reason="tighten", **changes)
        assert grant.version == 2
        for name, value in changes.items():
            assert getattr(grant, name) == value
        return
    with pytest.raises(InvalidInput, match=widened) as raised:
        world.admin.narrow_grant(bureau, grant_id, **changes)
    assert raised.value.rule in ("grant.narrow_widens", "grant.terms")


def test_widenings_lists_everything_that_widens() -> None:
    old = terms(
        columns=frozenset({"age", "person_id"}),
        epsilon_total=5.0,
        queries_per_day=10,
        release_mode=ReleaseMode.REVIEWED,
    )
    new = terms(
        max_level=Level.L3,
        columns=None,
        k=10,
        groupable=frozenset({"age", "gender"}),
        epsilon_total=None,
        queries_per_day=20,
        release_mode=ReleaseMode.DP,
    )
    found = widenings(old, new)
    assert {
        "columns added",
        "groupable columns added",
        "epsilon_total raised or removed",
        "queries_per_day raised or removed",
        "release mode changed (the bureau changes it with `grant release-mode`)",
    } <= set(found)
    assert widenings(old, old) == []


def test_status_moves_and_history(world: World) -> None:
    bureau = world.actor("bureau-health")
    grant_id = world.grant_id("op-bank", CLAIMS)
    assert (
        world.admin.suspend_grant(bureau, grant_id, reason="review").status is GrantStatus.SUSPENDED
    )
    with pytest.raises(Conflict):
        world.admin.suspend_grant(bureau, grant_id)
    assert world.admin.resume_grant(bureau, grant_id).status is GrantStatus.ACTIVE
    world.admin.narrow_grant(bureau, grant_id, k=20)
    revoked = world.admin.revoke_grant(bureau, grant_id, reason="contract ended")
    assert (revoked.status, revoked.version) == (GrantStatus.REVOKED, 5)
    for change in ("resume", "suspend", "revoke"):
        with pytest.raises(Conflict):
            getattr(world.admin, f"{change}_grant")(bureau, grant_id)
    with pytest.raises(Conflict):
        world.admin.narrow_grant(bureau, grant_id, k=30)
    with world.engine.connect() as conn:
        rows = conn.execute(
            sa.select(grant_versions.c.version, grant_versions.c.change, grant_versions.c.terms)
            .where(grant_versions.c.grant_id == grant_id)
            .order_by(grant_versions.c.version)
        ).all()
    assert [(r.version, r.change) for r in rows] == [
        (1, "issue"),
        (2, "suspend"),
        (3, "resume"),
        (4, "narrow"),
        (5, "revoke"),
    ]
    assert rows[3].terms["k"] == 20 and rows[4].terms["status"] == "revoked"
    actions = [e["action"] for e in world.recorder.entries if e["target"] == f"grant:{grant_id}"]
    assert actions[:5] == [
        "grant.suspend",
        "grant.suspend",
        "grant.resume",
        "grant.narrow",
        "grant.revoke",
    ]


def test_listing_is_scoped_to_what_the_actor_may_read(world: World) -> None:
    mine = world.admin.list_grants(world.actor("op-bank"))
    assert {g.operator for g in mine} == {"op-bank"} and len(mine) == 3
    health = world.admin.list_grants(world.actor("bureau-health"))
    assert {g.dataset for g in health} == {CLAIMS} and len(health) == 2
    with pytest.raises(Forbidden):
        world.admin.list_grants(world.actor("op-bank"), operator="op-insurer")
    with pytest.raises(Forbidden):
        world.admin.list_grants(world.actor("bureau-health"), domain="market")
    with pytest.raises(Forbidden):
        world.admin.list_grants(world.host)  # an admin does not manage grants
    # Another operator's grant is answered as one that does not exist; the trail knows why.
    other = world.grant_id("op-insurer", CLAIMS)
    with pytest.raises(NotFound) as raised:
        world.admin.show_grant(world.actor("op-bank"), other)
    with pytest.raises(NotFound) as missing:
        world.admin.show_grant(world.actor("op-bank"), "gr_0000000000000000")
    assert raised.value.to_dict() == {
        **missing.value.to_dict(),
        "message": f"no grant {other}",
    }
    assert raised.value.rule == "grant.unknown"
    assert world.recorder.entries[-2]["rule"] == "grant.not_own"


def test_narrowing_k_below_the_floor_says_grants_only_narrow(world: World) -> None:
    """A lower k is a widening first: the refusal says so, not what the floor is."""
    bureau = world.actor("bureau-health")
    grant_id = world.grant_id("op-bank", CLAIMS)
    with pytest.raises(InvalidInput) as raised:
        world.admin.narrow_grant(bureau, grant_id, k=5)
    assert raised.value.rule == "grant.narrow_widens"
    assert "can only be narrowed" in raised.value.message and "k lowered" in raised.value.message
    assert "floor" not in raised.value.message


def test_upper_case_column_names_are_not_a_widening(world: World) -> None:
    bureau = world.actor("bureau-health")
    grant_id = world.grant_id("op-bank", CLAIMS)
    grant = world.admin.narrow_grant(bureau, grant_id, groupable=frozenset({"AGE"}))
    assert grant.groupable == frozenset({"age"}) and grant.version == 2


def test_a_narrowing_that_changes_nothing_is_refused_without_a_new_version(world: World) -> None:
    bureau = world.actor("bureau-health")
    grant_id = world.grant_id("op-bank", CLAIMS)
    bank = world.actor("op-bank")
    grant, _ = world.admin.show_grant(bank, grant_id)
    entries = len(world.recorder.entries)
    with pytest.raises(InvalidInput) as raised:
        world.admin.narrow_grant(bureau, grant_id, k=grant.k, max_level=grant.max_level)
    assert raised.value.rule == "grant.unchanged" and "changes nothing" in raised.value.message
    again, history = world.admin.show_grant(bank, grant_id)
    assert again.version == grant.version and len(history) == 1
    refusal = world.recorder.entries[entries]
    assert (refusal["action"], refusal["decision"], refusal["rule"]) == (
        "grant.narrow",
        "deny",
        "grant.unchanged",
    )
