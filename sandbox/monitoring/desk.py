"""The alert desk: listing, acknowledging and resolving alerts, and setting response policies,
each act audited (allow or deny, with its rule) in the transaction that makes it.

The HTTP routes (``sandbox/api/alerts.py``) and the CLI (``sandbox/cli/alerts.py``) call
this; nothing else changes an alert but the monitor itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from policies import Actor
from sandbox.core.errors import SandboxError
from sandbox.platform import Platform

from . import alerts as store
from . import responses
from .tables import create_tables

__all__ = ["AlertDesk"]

T = TypeVar("T")


class AlertDesk:
    """Every act on alerts and response policies, for one actor at a time, audited."""

    def __init__(self, platform: Platform, *, create: bool = False) -> None:
        self.platform = platform
        if create:  # a server's monitor creates them at start
            create_tables(platform.engine)

    def _act(
        self,
        actor: Actor,
        action: str,
        target: str,
        rule: str,
        change: Callable[[Any, datetime], T],
        details: Callable[[T], dict[str, Any]],
        *,
        dataset: Callable[[T], str | None] = lambda _r: None,
    ) -> T:
        now = datetime.now(UTC)
        try:
            with self.platform.engine.begin() as conn:
                result = change(conn, now)
                self.platform.record_act(
                    actor,
                    action,
                    target,
                    "allow",
                    rule,
                    dataset=dataset(result),
                    details=details(result),
                )
        except SandboxError as exc:
            if exc.rule != "audit.unavailable":
                self.platform.record_act(
                    actor,
                    action,
                    target,
                    "deny",
                    exc.rule or exc.code,
                    details={"reason": exc.message},
                )
            raise
        return result

    def list_alerts(self, actor: Actor, filters: store.AlertFilter) -> list[dict[str, Any]]:
        return self._act(
            actor,
            "alert.read",
            "platform",
            "alerts.read",
            lambda conn, _now: store.list_alerts(conn, actor, filters),
            lambda found: {"rows": len(found)},
        )

    def acknowledge(self, actor: Actor, alert_id: str, reason: str) -> dict[str, Any]:
        return self._act(
            actor,
            "alert.acknowledge",
            f"alert:{alert_id}",
            "alerts.acknowledge",
            lambda conn, now: store.acknowledge(conn, actor, alert_id, reason, now),
            lambda alert: {"alert": alert_id, "reason": alert["acknowledged_reason"]},
            dataset=lambda alert: alert["dataset"],
        )

    def resolve(
        self, actor: Actor, alert_id: str, reason: str, *, reverse: bool = False
    ) -> dict[str, Any]:
        """Resolve; with ``reverse``, undo the responses it set off first."""

        def change(conn: Any, now: datetime) -> dict[str, Any]:
            alert = store.get_alert(conn, actor, alert_id)
            undone = responses.reverse(conn, actor, alert, now, reason) if reverse else []
            done = store.resolve(conn, actor, alert_id, reason, now)
            return {**done, "reversed": undone}

        return self._act(
            actor,
            "alert.resolve",
            f"alert:{alert_id}",
            "alerts.resolve",
            change,
            lambda alert: {
                "alert": alert_id,
                "reason": alert["resolved_reason"],
                "reversed": alert["reversed"],
            },
            dataset=lambda alert: alert["dataset"],
        )

    def set_policy(
        self,
        actor: Actor,
        *,
        scope: str,
        target: str,
        action: str,
        min_severity: str = "high",
        reason: str = "",
    ) -> dict[str, Any]:
        return self._act(
            actor,
            "alert.policy",
            f"{scope}:{target}",
            "alerts.policy",
            lambda conn, now: responses.set_policy(
                conn,
                actor,
                scope=scope,
                target=target,
                action=action,
                min_severity=min_severity,
                reason=reason,
                now=now,
            ),
            lambda policy: {
                "action": policy["action"],
                "min_severity": policy["min_severity"],
                "reason": policy["reason"],
            },
            dataset=lambda policy: policy["target"] if policy["scope"] == "dataset" else None,
        )

    def policies(self, actor: Actor) -> list[dict[str, Any]]:
        return self._act(
            actor,
            "alert.read",
            "platform",
            "alerts.read",
            lambda conn, _now: responses.list_policies(conn, actor),
            lambda found: {"policies": len(found)},
        )
