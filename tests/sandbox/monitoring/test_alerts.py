"""Alert lifecycle, visibility and response policies on a demo control plane (no queries)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from policies import Actor
from sandbox.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from sandbox.monitoring import AlertFilter, Finding, acknowledge, list_alerts, resolve, set_policy
from sandbox.monitoring.alerts import get_alert, record_finding
from sandbox.monitoring.tables import create_tables
from tests.conftest import build_deployment

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Actor]]]:
    platform, tokens = build_deployment(tmp_path_factory.mktemp("alerts") / "home")
    create_tables(platform.engine)
    actors = {n: platform.authority.authenticate(t) for n, t in tokens.items()}
    yield platform, actors
    platform.close()


def finding(severity: str, evidence: tuple[int, ...], operator: str = "op-x") -> Finding:
    return Finding("probing", severity, operator, "health.claims", evidence, "3 refusals")


def test_one_open_alert_per_kind_escalates_and_reopens(plane: Any) -> None:
    platform, actors = plane
    bureau = actors["bureau-health"]
    with platform.engine.begin() as conn:
        opened = record_finding(conn, finding("warning", (1, 2), "op-a"), NOW)
        assert opened.kind == "opened"
        acknowledge(conn, bureau, opened.alert["id"], "looking", NOW)
        same = record_finding(conn, finding("warning", (3,), "op-a"), NOW)
        assert same.kind == "updated" and same.alert["evidence"] == [1, 2, 3]
        worse = record_finding(conn, finding("high", (4,), "op-a"), NOW)
        assert worse.kind == "escalated" and worse.alert["state"] == "open"


def test_lifecycle_needs_reasons_and_order(plane: Any) -> None:
    platform, actors = plane
    bureau = actors["bureau-health"]
    with platform.engine.begin() as conn:
        alert = record_finding(conn, finding("warning", (10,), "op-b"), NOW).alert
        with pytest.raises(InvalidInput):
            acknowledge(conn, bureau, alert["id"], "  ", NOW)
        with pytest.raises(Forbidden):  # an auditor changes nothing
            resolve(conn, actors["auditor"], alert["id"], "seen", NOW)
        done = resolve(conn, bureau, alert["id"], "a script error", NOW)
        assert done["resolved_by"] == "bureau-health" and done["state"] == "resolved"
        with pytest.raises(Conflict):
            acknowledge(conn, bureau, alert["id"], "late", NOW)
        # evidence the resolution judged opens nothing new; fresh evidence does
        assert record_finding(conn, finding("warning", (9, 10), "op-b"), NOW).kind == "ignored"
        assert record_finding(conn, finding("warning", (11, 12), "op-b"), NOW).kind == "opened"


def test_who_sees_what(plane: Any) -> None:
    platform, actors = plane
    with platform.engine.begin() as conn:
        alert = record_finding(conn, finding("info", (20,), "op-c"), NOW).alert
        assert get_alert(conn, actors["auditor"], alert["id"])
        assert get_alert(conn, actors["bureau-health"], alert["id"])
        with pytest.raises(NotFound):  # another bureau: not found, not forbidden
            get_alert(conn, actors["bureau-market"], alert["id"])
        with pytest.raises(Forbidden):
            list_alerts(conn, actors["op-bank"], AlertFilter())
        high = list_alerts(conn, actors["auditor"], AlertFilter(severity="high"))
        assert all(a["severity"] == "high" for a in high)
        with pytest.raises(InvalidInput):
            AlertFilter(severity="severe")


def test_only_the_owning_bureau_sets_a_policy(plane: Any) -> None:
    platform, actors = plane
    with platform.engine.begin() as conn:
        for name in ("bureau-market", "op-bank", "auditor", "admin"):
            with pytest.raises(Forbidden):
                set_policy(
                    conn,
                    actors[name],
                    scope="dataset",
                    target="health.claims",
                    action="freeze",
                    min_severity="high",
                    reason="",
                    now=NOW,
                )
        with pytest.raises(InvalidInput):
            set_policy(
                conn,
                actors["bureau-health"],
                scope="dataset",
                target="health.claims",
                action="delete",
                min_severity="high",
                reason="",
                now=NOW,
            )
        policy = set_policy(
            conn,
            actors["bureau-health"],
            scope="dataset",
            target="health.claims",
            action="suspend",
            min_severity="warning",
            reason="drill",
            now=NOW,
        )
        assert policy["domain"] == "health" and policy["set_by"] == "bureau-health"


def test_tables_are_created_once(tmp_path: Path, plane: Any) -> None:
    platform, _actors = plane
    create_tables(platform.engine)  # idempotent
