"""The monitor on a real demo deployment: query decisions in, alerts, responses and audit out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from audit import EntryFilter
from policies import Actor, GrantStatus
from policies import grants as grant_store
from policies.accounts import require_account
from sandbox.core.errors import Forbidden, SandboxError
from sandbox.monitoring import (
    AlertFilter,
    Monitor,
    acknowledge,
    list_alerts,
    resolve,
    reverse,
    set_policy,
)
from sandbox.monitoring.alerts import get_alert
from sandbox.query.service import QueryService
from tests.conftest import build_deployment


@pytest.fixture()
def deployment(tmp_path: Path) -> Iterator[tuple[Any, QueryService, Monitor, dict[str, Actor]]]:
    platform, tokens = build_deployment(tmp_path / "home")
    monitor = Monitor(platform, lambda: platform.settings)
    monitor.start()
    service = QueryService(platform)
    service.observer = monitor.observe
    actors = {n: platform.authority.authenticate(t) for n, t in tokens.items()}
    yield platform, service, monitor, actors
    monitor.stop()
    platform.close()


def _query(service: QueryService, actor: Actor, sql: str) -> str:
    """Run ``sql``; the monitor has evaluated it when this returns."""
    try:
        service.run(actor, sql)
        return "ok"
    except SandboxError as exc:
        return exc.rule or exc.code
    finally:
        assert service.observer is not None
        service.observer.__self__.drain()  # type: ignore[attr-defined]


def _alerts(platform: Any, actor: Actor, **filters: Any) -> list[dict[str, Any]]:
    with platform.engine.connect() as conn:
        return list_alerts(conn, actor, AlertFilter(**filters))


def test_refusal_burst_opens_one_alert_that_escalates(deployment) -> None:  # type: ignore[no-untyped-def]
    platform, service, _monitor, actors = deployment
    bank, auditor = actors["op-bank"], actors["auditor"]
    for _ in range(20):
        _query(service, bank, "SELECT person_id, amount FROM health.claims")
    probing = [a for a in _alerts(platform, auditor) if a["detector"] == "probing"]
    assert len(probing) == 1 and probing[0]["severity"] == "high"
    assert probing[0]["operator"] == "op-bank" and probing[0]["dataset"] == "health.claims"
    assert len(probing[0]["evidence"]) >= 20
    trail = platform.audit.entries(EntryFilter(actor="monitor"))
    assert [e.action for e in trail][:2] == ["alert.open", "alert.escalate"]
    # the bureau of the dataset sees it, another bureau and the operator do not
    assert _alerts(platform, actors["bureau-health"])
    assert not _alerts(platform, actors["bureau-market"])
    with pytest.raises(Forbidden):
        _alerts(platform, bank)


def test_differencing_freezes_the_operator_and_the_bureau_reverses_it(deployment) -> None:  # type: ignore[no-untyped-def]
    platform, service, _monitor, actors = deployment
    bank, bureau = actors["op-insurer"], actors["bureau-health"]  # a dp grant with a budget
    now = datetime.now(UTC)
    with platform.engine.begin() as conn:
        set_policy(
            conn,
            bureau,
            scope="dataset",
            target="health.claims",
            action="freeze",
            min_severity="high",
            reason="drill",
            now=now,
        )
    base = "SELECT count(*) AS n FROM health.claims WHERE gender = 'F'"
    assert _query(service, bank, base) == "ok"
    assert _query(service, bank, base + " AND NOT (diagnosis_code = 'J45')") == "ok"
    alert = next(a for a in _alerts(platform, bureau) if a["detector"] == "differencing")
    assert alert["severity"] == "high" and alert["responses"] == [
        {"action": "freeze", "operator": "op-insurer"}
    ]
    assert _query(service, bank, "SELECT count(*) FROM health.claims") != "ok"  # frozen
    now = datetime.now(UTC)
    with platform.engine.begin() as conn:
        acknowledge(conn, bureau, alert["id"], "looking", now)
        current = get_alert(conn, bureau, alert["id"])
        reverse(conn, bureau, current, now, "a mistake in their script")
        done = resolve(conn, bureau, alert["id"], "a mistake in their script", now)
    assert done["state"] == "resolved" and done["resolved_by"] == "bureau-health"
    assert _query(service, bank, "SELECT count(*) AS n FROM health.claims") == "ok"


def test_suspend_response_suspends_the_grant(deployment) -> None:  # type: ignore[no-untyped-def]
    platform, service, _monitor, actors = deployment
    bank, bureau = actors["op-bank"], actors["bureau-health"]
    with platform.engine.begin() as conn:
        grant = grant_store.grants_for(conn, "op-bank", ["health.claims"])["health.claims"][0]
        set_policy(
            conn,
            bureau,
            scope="grant",
            target=grant.id,
            action="suspend",
            min_severity="high",
            reason="drill",
            now=datetime.now(UTC),
        )
    for _ in range(20):
        _query(service, bank, "SELECT person_id FROM health.claims")
    with platform.engine.connect() as conn:
        assert grant_store.require_grant(conn, grant.id).status is GrantStatus.SUSPENDED
        assert require_account(conn, "op-bank").frozen is False
