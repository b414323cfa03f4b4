"""Alerts in the control plane: open or update from a finding, the lifecycle, who sees what.

One alert per (detector, operator, dataset) is open at a time: a later finding of
the same kind adds its evidence (audit seq numbers) and may raise the severity
(an escalation).  The lifecycle is open -> acknowledged -> resolved, each step
with who, when and why.  Visibility: auditors and the admin see every alert, a
bureau the alerts on datasets of its domains, an operator none (rule
``alerts.not_visible``); an alert with no dataset (refusals that named none) is
the auditors' and the admin's only.  Bureaus and the admin acknowledge and resolve;
an auditor only reads (``alerts.auditor_reads_only``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from policies import Actor, Role
from sandbox.core.db import datasets
from sandbox.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from sandbox.core.timeutil import to_rfc3339

from .detectors import SEVERITIES, Finding, severity_rank
from .tables import alerts

__all__ = [
    "EVIDENCE_CAP",
    "STATES",
    "AlertFilter",
    "Change",
    "acknowledge",
    "get_alert",
    "list_alerts",
    "record_finding",
    "require_visible",
    "resolve",
]

STATES = ("open", "acknowledged", "resolved")
EVIDENCE_CAP = 200
"""Seq numbers kept on one alert (the newest; the trail keeps every query's own entry)."""


@dataclass(frozen=True)
class Change:
    """What :func:`record_finding` did: ``opened``, ``escalated``, ``updated`` or ``ignored``
    (evidence already judged by a resolved alert of its kind)."""

    kind: str
    alert: dict[str, Any]


def _key(finding: Finding) -> str:
    return f"{finding.detector}|{finding.operator}|{finding.dataset or ''}"


def _domain(conn: Connection, dataset: str | None) -> str | None:
    if dataset is None:
        return None
    row = conn.execute(sa.select(datasets.c.domain).where(datasets.c.id == dataset)).first()
    return None if row is None else str(row[0])


def record_finding(conn: Connection, finding: Finding, now: datetime) -> Change:
    """Open an alert for ``finding``, or add to the open one of the same kind."""
    stamp = to_rfc3339(now)
    row = conn.execute(
        sa.select(alerts)
        .where(alerts.c.key == _key(finding), alerts.c.state != "resolved")
        .order_by(alerts.c.opened_at.desc())
        .limit(1)
    ).first()
    if row is None:
        if _judged(conn, finding):
            return Change("ignored", {})
        values = {
            "id": "al_" + secrets.token_hex(8),
            "key": _key(finding),
            "detector": finding.detector,
            "severity": finding.severity,
            "operator": finding.operator,
            "dataset": finding.dataset,
            "domain": _domain(conn, finding.dataset),
            "state": "open",
            "summary": finding.summary,
            "evidence": list(finding.evidence),
            "responses": [],
            "opened_at": stamp,
            "updated_at": stamp,
        }
        conn.execute(sa.insert(alerts).values(**values))
        return Change("opened", _public(values))
    current = dict(row._mapping)
    evidence = sorted(set(current["evidence"]) | set(finding.evidence))[-EVIDENCE_CAP:]
    higher = severity_rank(finding.severity) > severity_rank(current["severity"])
    changes: dict[str, Any] = {"evidence": evidence, "updated_at": stamp}
    if higher:
        changes.update(severity=finding.severity, summary=finding.summary)
        if current["state"] == "acknowledged":
            changes["state"] = "open"  # worse than what was acknowledged: look again
    conn.execute(sa.update(alerts).where(alerts.c.id == current["id"]).values(**changes))
    return Change("escalated" if higher else "updated", _public({**current, **changes}))


def _judged(conn: Connection, finding: Finding) -> bool:
    """Most of the finding's evidence was in an alert of its kind already resolved: a
    resolution is a judgement on that evidence, so only fresh evidence opens a new alert."""
    row = conn.execute(
        sa.select(alerts.c.evidence)
        .where(alerts.c.key == _key(finding), alerts.c.state == "resolved")
        .order_by(alerts.c.resolved_at.desc())
        .limit(1)
    ).first()
    if row is None or not row[0]:
        return False
    judged = max(row[0])
    fresh = sum(1 for seq in finding.evidence if seq > judged)
    return 2 * fresh < len(finding.evidence)


def set_responses(conn: Connection, alert_id: str, responses: Sequence[dict[str, Any]]) -> None:
    conn.execute(sa.update(alerts).where(alerts.c.id == alert_id).values(responses=list(responses)))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("key", "domain")}


# -- who sees what ---------------------------------------------------------------------------


def require_visible(actor: Actor) -> None:
    """Operators see no alert (nor whether there is one)."""
    if actor.role not in (Role.AUDITOR, Role.ADMIN, Role.BUREAU):
        raise Forbidden("alerts are for bureaus, auditors and the admin", rule="alerts.not_visible")


def _scope(actor: Actor) -> list[Any]:
    require_visible(actor)
    if actor.role is Role.BUREAU:
        return [alerts.c.domain.in_(list(actor.domains))]
    return []


@dataclass(frozen=True)
class AlertFilter:
    state: str | None = None
    severity: str | None = None
    dataset: str | None = None
    operator: str | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATES:
            raise InvalidInput(f"state is one of {', '.join(STATES)}", rule="alerts.filter")
        if self.severity is not None and self.severity not in SEVERITIES:
            raise InvalidInput(f"severity is one of {', '.join(SEVERITIES)}", rule="alerts.filter")

    def conditions(self) -> list[Any]:
        out = []
        for name in ("state", "dataset", "operator"):
            value = getattr(self, name)
            if value is not None:
                out.append(alerts.c[name] == value)
        if self.severity is not None:  # this severity and above
            out.append(alerts.c.severity.in_(SEVERITIES[severity_rank(self.severity) :]))
        return out


def list_alerts(
    conn: Connection, actor: Actor, filters: AlertFilter, *, limit: int = 500
) -> list[dict[str, Any]]:
    """The alerts ``actor`` may see that match ``filters``, newest first."""
    query = (
        sa.select(alerts)
        .where(*_scope(actor), *filters.conditions())
        .order_by(alerts.c.opened_at.desc(), alerts.c.id)
        .limit(limit)
    )
    return [_public(dict(row._mapping)) for row in conn.execute(query)]


def get_alert(conn: Connection, actor: Actor, alert_id: str) -> dict[str, Any]:
    """One alert ``actor`` may see; one it may not see is not found (no oracle)."""
    row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id, *_scope(actor))).first()
    if row is None:
        raise NotFound(f"no alert {alert_id}", rule="alerts.unknown")
    return dict(row._mapping)


def _may_act(actor: Actor) -> None:
    """Bureaus (on their domains' alerts) and the admin act on alerts; auditors only read
    (an auditor changes nothing), operators do not see them."""
    require_visible(actor)
    if actor.role is Role.AUDITOR:
        raise Forbidden(
            "an auditor reads alerts; the bureau or the admin acknowledges and resolves them",
            rule="alerts.auditor_reads_only",
        )


def _reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise InvalidInput("say why (--reason)", rule="alerts.reason")
    return text[:2000]


def acknowledge(
    conn: Connection, actor: Actor, alert_id: str, reason: str, now: datetime
) -> dict[str, Any]:
    """open -> acknowledged."""
    return _move(conn, actor, alert_id, reason, now, ("open",), "acknowledged")


def resolve(
    conn: Connection, actor: Actor, alert_id: str, reason: str, now: datetime
) -> dict[str, Any]:
    """open or acknowledged -> resolved (the responses are reversed by the caller)."""
    return _move(conn, actor, alert_id, reason, now, ("open", "acknowledged"), "resolved")


def _move(
    conn: Connection,
    actor: Actor,
    alert_id: str,
    reason: str,
    now: datetime,
    sources: tuple[str, ...],
    target: str,
) -> dict[str, Any]:
    """An alert in one of ``sources`` to ``target``, with who moved it, when and why
    (the ``<target>_by``, ``_at`` and ``_reason`` columns)."""
    _may_act(actor)
    alert = get_alert(conn, actor, alert_id)
    why = _reason(reason)
    if alert["state"] not in sources:
        raise Conflict(f"alert {alert_id} is {alert['state']}", rule="alerts.transition")
    changes = {
        "state": target,
        f"{target}_by": actor.name,
        f"{target}_at": to_rfc3339(now),
        f"{target}_reason": why,
        "updated_at": to_rfc3339(now),
    }
    conn.execute(sa.update(alerts).where(alerts.c.id == alert_id).values(**changes))
    return _public({**alert, **changes})
