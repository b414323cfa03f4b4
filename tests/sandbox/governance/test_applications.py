"""Grant applications' guards against concurrent decisions and failed issues, in Python
(the HTTP walk-through is tests/api/test_governance.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from policies import Administration, Use
from sandbox.core.errors import SandboxError
from sandbox.core.governance_tables import grant_applications
from sandbox.core.timeutil import to_rfc3339
from sandbox.governance.applications import Applications, Asked, Decided
from sandbox.platform import Platform
from tests.api.test_governance import Clock
from tests.conftest import build_deployment

ASK = Asked(
    dataset="health.claims",
    purpose_code="clinic-planning",
    purpose_text="claims per district",
    columns=("district",),
    duration_days=30,
    use=Use.PUBLIC_INTEREST,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, dict[str, str]]]:
    platform, tokens = build_deployment(tmp_path_factory.mktemp("applications") / "home")
    yield platform, tokens
    platform.close()


def _refused(call: Any) -> SandboxError:
    with pytest.raises(SandboxError) as raised:
        call()
    return raised.value


def test_a_decision_meanwhile_is_refused_and_a_failed_issue_releases(
    world: tuple[Platform, dict[str, str]],
) -> None:
    platform, tokens = world
    clock = Clock()
    admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
    procedure = Applications(platform, admin, clock=clock)
    planner = platform.authority.authenticate(tokens["op-planner"])
    bureau = platform.authority.authenticate(tokens["bureau-health"])
    app_id = procedure.apply(planner, ASK)["id"]
    table = grant_applications

    def claim(at: Any) -> None:
        with platform.engine.begin() as conn:
            conn.execute(
                sa.update(table).where(table.c.id == app_id).values(deciding_since=to_rfc3339(at))
            )

    claim(clock.now - timedelta(minutes=1))  # another approval is issuing the grant
    assert _refused(lambda: procedure.approve(bureau, app_id, Decided())).rule == (
        "application.deciding"
    )
    assert _refused(lambda: procedure.reject(bureau, app_id, reason="no")).rule == (
        "application.state"
    )
    assert _refused(lambda: procedure.withdraw(planner, app_id)).rule == "application.state"
    claim(clock.now - timedelta(hours=2))  # left by a killed process
    # An issue the grant rules refuse releases the claim: an L4 column is never granted.
    bad = Decided(columns=("district", "id_number"))
    assert _refused(lambda: procedure.approve(bureau, app_id, bad, reason="more")).rule == (
        "grant.terms"
    )
    with platform.engine.connect() as conn:
        assert (
            conn.execute(sa.select(table.c.deciding_since).where(table.c.id == app_id)).scalar_one()
            is None
        )
    done = procedure.approve(bureau, app_id, Decided(k=12))
    assert done["state"] == "approved" and done["grant"].startswith("gr_")
    grants = [g for g in admin.list_grants(planner) if g.dataset == "health.claims"]
    assert [g.id for g in grants] == [done["grant"]] and grants[0].k == 12
