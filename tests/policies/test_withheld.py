""" "Not yours" is answered exactly as "does not exist"; the audit trail keeps the real rule."""

from __future__ import annotations

from policies import Role
from sandbox.core.errors import NotFound, Withheld

from .conftest import World


def _answer(world: World, operator: str, datasets: list[str]) -> dict[str, str]:
    decision = world.authority.decide(world.actor(operator), "dataset.query", datasets=datasets)
    assert not decision.allowed
    error = decision.error()
    assert isinstance(error, NotFound) and error.status == 404
    return {**error.to_dict(), "message": error.message.replace(datasets[0], "X")}


def test_a_dataset_without_a_grant_answers_as_a_missing_one(world: World) -> None:
    missing = _answer(world, "op-planner", ["health.nothing"])
    ungranted = _answer(world, "op-planner", ["health.claims"])
    assert missing == ungranted
    assert ungranted["rule"] == "dataset.unknown"
    # Even frozen, a dataset the operator holds no grant on says nothing about itself.
    world.admin.set_dataset_frozen(world.host, "health.claims", True, reason="drill")
    assert _answer(world, "op-planner", ["health.claims"]) == missing
    rules = [e["rule"] for e in world.recorder.entries if e["action"] == "dataset.query"]
    assert rules[-3:] == ["dataset.unknown", "grant.missing", "grant.missing"]
    # The holder of a grant is told the truth.
    frozen = world.authority.decide(
        world.actor("op-bank"), "dataset.query", datasets=["health.claims"]
    )
    assert frozen.rule == "dataset.frozen" and not isinstance(frozen.error(), Withheld)


def test_a_dataset_target_is_checked_for_the_role_before_it_exists(world: World) -> None:
    bureau = world.actor("bureau-market")
    existing = world.authority.decide(bureau, "dataset.classify", "dataset:health.claims")
    missing = world.authority.decide(bureau, "dataset.classify", "dataset:health.nothing")
    assert existing.rule == missing.rule == "domain.outside"
    operator = world.actor("op-bank")
    assert world.authority.decide(operator, "dataset.freeze", "dataset:health.nothing").rule == (
        "role.not_permitted"
    )
    own = world.authority.decide(
        world.actor("bureau-health"), "dataset.classify", "dataset:health.nothing"
    )
    assert own.rule == "dataset.unknown"


def test_another_bureaus_grant_answers_as_a_missing_one(world: World) -> None:
    world.admin.create_account(
        world.host, "bureau-other", role=Role.BUREAU, organisation="O", domains=["transport"]
    )
    other = world.authority.authenticate(world.enrol("bureau-other").token)
    grant = world.grant_id("op-bank", "health.claims")
    outside = world.authority.decide(other, "grant.suspend", f"grant:{grant}")
    assert outside.rule == "domain.outside"
    assert outside.error().to_dict() == {
        "code": "not_found",
        "message": f"no grant {grant}",
        "rule": "grant.unknown",
    }
