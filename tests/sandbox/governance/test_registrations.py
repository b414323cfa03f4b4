"""The registration procedure's guards on the certificate's bytes and on concurrent issues,
in Python with a test clock (the HTTP walk-through is tests/api/test_governance.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from audit import EntryFilter
from policies import Actor
from sandbox.core.errors import SandboxError
from sandbox.core.governance_tables import registration_applications
from sandbox.core.timeutil import to_rfc3339
from sandbox.governance.registration_states import RegStep
from sandbox.governance.registrations import Registrations, SourceFile
from sandbox.platform import Platform
from tests.api.test_governance import CSV, VISITS, Clock
from tests.conftest import build_deployment


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, dict[str, str]]]:
    home = tmp_path_factory.mktemp("registrations") / "home"
    platform, tokens = build_deployment(home)
    (home.parent / "visits.csv").write_text(CSV)
    yield platform, tokens
    platform.close()


def _reviewed(platform: Platform, tokens: dict[str, str], clock: Clock, name: str) -> str:
    procedure = Registrations(platform, clock=clock)
    bureau = platform.authority.authenticate(tokens["bureau-health"])
    app = procedure.apply(
        bureau,
        classification=VISITS.replace("health.visits", f"health.{name}"),
        source=SourceFile(path=platform.settings.home.parent / "visits.csv", name="visits.csv"),
        update_frequency="monthly",
    )
    host = Actor.host("tests")
    procedure.step(host, app["id"], RegStep.ACCEPT)
    procedure.step(host, app["id"], RegStep.APPROVE, comment="fine")
    clock.now += timedelta(days=8)
    return str(app["id"])


def _refused(call: Any) -> SandboxError:
    with pytest.raises(SandboxError) as raised:
        call()
    return raised.value


def test_the_certificate_is_for_the_reviewed_bytes(world: tuple[Platform, dict[str, str]]) -> None:
    platform, tokens = world
    clock = Clock()
    app_id = _reviewed(platform, tokens, clock, "tampered")
    kept = platform.settings.staging_dir / "registrations" / app_id / "visits.csv"
    kept.write_text(CSV.replace("d1", "d9"))
    procedure = Registrations(platform, clock=clock)
    refused = _refused(lambda: procedure.issue(Actor.host("tests"), app_id))
    assert refused.rule == "registration.source_changed"
    assert not platform.catalog.exists("health.tampered")
    denied = platform.audit.entries(EntryFilter(action="registration.issue"), limit=100)
    assert any(e.rule == "registration.source_changed" for e in denied)


def test_a_second_issue_meanwhile_is_refused_and_a_stale_claim_taken_over(
    world: tuple[Platform, dict[str, str]],
) -> None:
    platform, tokens = world
    clock = Clock()
    app_id = _reviewed(platform, tokens, clock, "claimed")
    table = registration_applications

    def claim(at: Any) -> None:
        with platform.engine.begin() as conn:
            conn.execute(
                sa.update(table).where(table.c.id == app_id).values(issuing_since=to_rfc3339(at))
            )

    procedure = Registrations(platform, clock=clock)
    claim(clock.now - timedelta(minutes=5))  # another administrator's issue is loading
    refused = _refused(lambda: procedure.issue(Actor.host("tests"), app_id))
    assert refused.rule == "registration.issuing"
    claim(clock.now - timedelta(hours=2))  # left by a killed process
    shown, reg = procedure.issue(Actor.host("tests"), app_id)
    assert shown["state"] == "issued" and reg.record.version == 1
    with platform.engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == app_id)).one()
    assert row.issuing_since is None
    assert not (Path(platform.settings.staging_dir) / "registrations" / app_id).exists()


def test_the_admins_steps_are_a_policy_line(world: tuple[Platform, dict[str, str]]) -> None:
    """Without the policy's `registration.decide` line the admin's steps are refused."""
    from sandbox.core.policy_tables import bump_policy_version, casbin_rule

    platform, tokens = world
    clock = Clock()
    procedure = Registrations(platform, clock=clock)
    bureau = platform.authority.authenticate(tokens["bureau-health"])
    app = procedure.apply(
        bureau,
        classification=VISITS.replace("health.visits", "health.unpermitted"),
        source=SourceFile(path=platform.settings.home.parent / "visits.csv", name="visits.csv"),
        update_frequency="monthly",
    )
    line = (casbin_rule.c.ptype == "p") & (casbin_rule.c.v2 == "registration")
    with platform.engine.begin() as conn:
        removed = [dict(r._mapping) for r in conn.execute(sa.select(casbin_rule).where(line))]
        conn.execute(sa.delete(casbin_rule).where(line))
        bump_policy_version(conn, rules=True)
    try:
        refused = _refused(lambda: procedure.step(Actor.host("tests"), app["id"], RegStep.ACCEPT))
        assert refused.rule == "role.not_permitted"
    finally:
        with platform.engine.begin() as conn:
            conn.execute(sa.insert(casbin_rule), removed)
            bump_policy_version(conn, rules=True)
    assert procedure.step(Actor.host("tests"), app["id"], RegStep.ACCEPT)["state"] == "accepted"
