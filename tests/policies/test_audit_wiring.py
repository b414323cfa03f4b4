"""Every decision and administrative act lands in the real audit trail; no record, no act."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from audit import AuditTrail, EntryFilter, KeyRing
from policies import Actor, Administration, Authority, Role
from policies.demo import create_demo
from sandbox.core.db import open_control_db
from sandbox.core.errors import AuditUnavailable, AuthenticationError
from sandbox.core.policy_tables import accounts

from .conftest import NOW, Clock, add_catalog_rows


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[AuditTrail]:
    opened = AuditTrail.open(f"sqlite:///{tmp_path / 'audit.db'}", KeyRing(tmp_path / "keys"))
    yield opened
    opened.close()


def test_decisions_and_acts_are_in_the_real_trail(tmp_path: Path, trail: AuditTrail) -> None:
    engine = open_control_db(f"sqlite:///{tmp_path / 'control.db'}")
    add_catalog_rows(engine)
    authority = Authority(engine, recorder=trail, clock=Clock())
    admin = Administration(authority)
    try:
        tokens = create_demo(admin, Actor.host("ops"), now=NOW)
        bank = authority.authenticate(tokens["op-bank"], request_id="req-1", client="10.0.0.7")
        d = authority.decide(
            bank,
            "dataset.query",
            "query:job-9",
            datasets=["health.claims"],
            columns={"health.claims": ["age"]},
            request_id="req-1",
            client="10.0.0.7",
        )
        authority.decide(bank, "dataset.query", datasets=["transport.trips"])
        with pytest.raises(AuthenticationError):
            authority.authenticate("sbx_" + "x" * 43)
    finally:
        authority.close()
        engine.dispose()
    assert d.allowed
    (allow,) = trail.entries(EntryFilter(action="dataset.query", decision="allow"))
    assert (allow.actor, allow.role, allow.target, allow.rule) == (
        "op-bank",
        "operator",
        "query:job-9",
        "allow.grant",
    )
    assert allow.dataset == "health.claims" and allow.request_id == "req-1"
    assert allow.details["grants"][0]["id"] == d.grants[0].id
    # Which token acted, and who set its issue in motion (the host's enrolment code).
    assert (allow.details["token_id"], allow.details["token_issued_by"]) == (
        bank.token_id,
        "host:ops",
    )
    (deny,) = trail.entries(EntryFilter(action="dataset.query", decision="deny"))
    assert deny.rule == "grant.missing"
    issued = trail.entries(EntryFilter(action="grant.issue"), limit=100)
    assert {e.actor for e in issued} == {
        "bureau-health",
        "bureau-market",
        "bureau-hrss",
        "bureau-transport",
    }
    assert len(trail.entries(EntryFilter(action="account.create"), limit=100)) == 9
    assert all(e.details["token_issued_by"] == "host:ops" for e in issued)
    assert len({e.details["token_id"] for e in issued}) == 4
    assert len(trail.entries(EntryFilter(action="enrolment.issue"), limit=100)) == 9
    redeemed = trail.entries(EntryFilter(action="enrolment.redeem"), limit=100)
    assert len(redeemed) == 9 and {e.decision for e in redeemed} == {"allow"}
    assert not trail.entries(EntryFilter(action="token.issue"), limit=100)
    assert trail.entries(EntryFilter(action="auth.authenticate"))[0].rule == "auth.token_unknown"
    assert trail.verify().ok


class FailingRecorder:
    def __init__(self) -> None:
        self.fail = False

    def append(self, **fields: Any) -> None:
        if self.fail:
            raise OSError("disk full")


def test_no_audit_record_means_no_change(tmp_path: Path) -> None:
    engine = open_control_db(f"sqlite:///{tmp_path / 'control.db'}")
    recorder = FailingRecorder()
    authority = Authority(engine, recorder=recorder, clock=Clock())
    admin = Administration(authority)
    host = Actor.host("ops")
    try:
        admin.create_account(host, "auditor", role=Role.AUDITOR, organisation="A")
        recorder.fail = True
        with pytest.raises(AuditUnavailable):
            admin.create_account(host, "admin", role=Role.ADMIN, organisation="B")
        with pytest.raises(AuditUnavailable):
            admin.disable_account(host, "auditor")
        with pytest.raises(AuditUnavailable):
            authority.decide(host, "account.list", "platform")
        with engine.connect() as conn:
            rows = conn.execute(sa.select(accounts.c.name, accounts.c.status)).all()
        assert [tuple(r) for r in rows] == [("auditor", "active")]
        recorder.fail = False
        code = admin.issue_enrolment(host, "auditor", token_ttl=timedelta(days=1)).code
        recorder.fail = True
        with pytest.raises(AuditUnavailable):  # no record, no token: the code stays unspent
            admin.redeem_enrolment(code)
        recorder.fail = False
        token = admin.redeem_enrolment(code)
        assert authority.authenticate(token.token).name == "auditor"
    finally:
        authority.close()
        engine.dispose()
