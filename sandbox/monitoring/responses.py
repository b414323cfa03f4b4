"""Response policies (应急处置): what a severe alert does at once, and how it is undone.

A bureau sets, per dataset of its domains or per grant on one, an action and the
severity from which it acts (``high`` unless said otherwise):

- ``notify``: the alert only (the default where nothing is set);
- ``hold``: the operator's grants on the dataset release only after review
  (their release mode becomes ``reviewed``, a new grant version);
- ``suspend``: the operator's grants on the dataset are suspended;
- ``freeze``: the operator is frozen (every query refused, ``policies/freeze.py``).

Each acts in the control-plane transaction that records the alert and bumps the
policy version, so every server process applies it on its next decision.  Each
applied response is listed on the alert; resolving the alert with ``reverse``
undoes them (resume, unfreeze, the release mode before the hold), with the
resolver's name and reason in the grant or freeze history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from policies import Actor, Grant, GrantStatus, GrantTerms, ReleaseMode, Role
from policies import freeze as freezing
from policies import grants as grant_store
from sandbox.core.db import datasets
from sandbox.core.errors import Forbidden, InvalidInput, NotFound
from sandbox.core.policy_tables import bump_policy_version
from sandbox.core.timeutil import to_rfc3339

from .detectors import SEVERITIES, severity_rank
from .tables import policies

__all__ = ["ACTIONS", "MONITOR", "apply_responses", "list_policies", "reverse", "set_policy"]

ACTIONS = ("notify", "hold", "suspend", "freeze")
MONITOR = "monitor"
"""The actor the monitor's own acts are recorded under."""


def _dataset_domain(conn: Connection, dataset: str) -> str:
    row = conn.execute(sa.select(datasets.c.domain).where(datasets.c.id == dataset)).first()
    if row is None:
        raise NotFound(f"dataset {dataset} is not registered", rule="dataset.unknown")
    return str(row[0])


def set_policy(
    conn: Connection,
    actor: Actor,
    *,
    scope: str,
    target: str,
    action: str,
    min_severity: str,
    reason: str,
    now: datetime,
) -> dict[str, Any]:
    """Set (replace) the response for a dataset or grant; only its bureau may."""
    if scope not in ("dataset", "grant"):
        raise InvalidInput("scope is dataset or grant", rule="alerts.policy")
    if action not in ACTIONS:
        raise InvalidInput(f"action is one of {', '.join(ACTIONS)}", rule="alerts.policy")
    if min_severity not in SEVERITIES[1:]:
        raise InvalidInput("a response acts from warning or high", rule="alerts.policy")
    if scope == "grant":
        grant = grant_store.require_grant(conn, target)
        domain = _dataset_domain(conn, grant.dataset)
    else:
        domain = _dataset_domain(conn, target)
    if actor.role is not Role.BUREAU or domain not in actor.domains:
        raise Forbidden(
            "only the bureau that holds the dataset sets its response policy",
            rule="alerts.policy_not_owner",
        )
    values = {
        "scope": scope,
        "target": target,
        "domain": domain,
        "action": action,
        "min_severity": min_severity,
        "set_by": actor.name,
        "set_at": to_rfc3339(now),
        "reason": reason.strip()[:2000],
    }
    conn.execute(sa.delete(policies).where(policies.c.scope == scope, policies.c.target == target))
    conn.execute(sa.insert(policies).values(**values))
    return values


def list_policies(conn: Connection, actor: Actor) -> list[dict[str, Any]]:
    if actor.role is Role.OPERATOR:
        raise Forbidden("alerts are for bureaus, auditors and the admin", rule="alerts.not_visible")
    query = sa.select(policies).order_by(policies.c.scope, policies.c.target)
    if actor.role is Role.BUREAU:
        query = query.where(policies.c.domain.in_(list(actor.domains)))
    return [dict(row._mapping) for row in conn.execute(query)]


def _live_grants(conn: Connection, operator: str, dataset: str) -> list[Grant]:
    found = grant_store.grants_for(conn, operator, [dataset]).get(dataset, [])
    return [g for g in found if g.status is GrantStatus.ACTIVE]


def _chosen(conn: Connection, severity: str, dataset: str, grants: Sequence[Grant]) -> str:
    """The strongest action the dataset's and the grants' policies call for at ``severity``."""
    targets = [("dataset", dataset), *(("grant", g.id) for g in grants)]
    rows = conn.execute(
        sa.select(policies).where(
            sa.or_(*(sa.and_(policies.c.scope == s, policies.c.target == t) for s, t in targets))
        )
    ).all()
    action = "notify"
    for row in rows:
        if severity_rank(severity) >= severity_rank(row.min_severity):
            if ACTIONS.index(row.action) > ACTIONS.index(action):
                action = row.action
    return action


def _reviewed(grant: Grant) -> GrantTerms:
    return dataclasses.replace(grant.terms, release_mode=ReleaseMode.REVIEWED)


def apply_responses(conn: Connection, alert: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """Apply the response the policies call for on a (new or escalated) alert.

    Returns what was done, one item per act (none for ``notify``).
    """
    dataset, operator = alert.get("dataset"), alert["operator"]
    if dataset is None:
        return []
    live = _live_grants(conn, operator, dataset)
    action = _chosen(conn, alert["severity"], dataset, live)
    why = f"alert {alert['id']} ({alert['detector']}, {alert['severity']})"
    done: list[dict[str, Any]] = []
    if action == "freeze":
        if freezing.set_operator_frozen(conn, operator, True, by=MONITOR, now=now, reason=why):
            done.append({"action": "freeze", "operator": operator})
    elif action == "suspend":
        for grant in live:
            grant_store.change_status(conn, grant, "suspend", by=MONITOR, now=now, reason=why)
            done.append({"action": "suspend", "grant": grant.id})
    elif action == "hold":
        for grant in live:
            if grant.review_required:
                continue
            grant_store.replace_terms(
                conn, grant, _reviewed(grant), by=MONITOR, now=now, reason=why
            )
            done.append({"action": "hold", "grant": grant.id, "terms": grant.terms_dict()})
    if done:
        bump_policy_version(conn)
    return done


def reverse(
    conn: Connection, actor: Actor, alert: dict[str, Any], now: datetime, reason: str
) -> list[dict[str, Any]]:
    """Undo the responses applied for ``alert`` (a bureau of its domain, or the admin)."""
    if actor.role not in (Role.ADMIN, Role.BUREAU):
        raise Forbidden(
            "a bureau or the admin reverses a response", rule="alerts.reverse_not_allowed"
        )
    why = f"alert {alert['id']} resolved: {reason}"
    undone: list[dict[str, Any]] = []
    for act in alert.get("responses") or []:
        if act["action"] == "freeze":
            if freezing.set_operator_frozen(
                conn, act["operator"], False, by=actor.name, now=now, reason=why
            ):
                undone.append(act)
        elif act["action"] == "suspend":
            grant = grant_store.require_grant(conn, act["grant"])
            if grant.status is GrantStatus.SUSPENDED:
                grant_store.change_status(conn, grant, "resume", by=actor.name, now=now, reason=why)
                undone.append(act)
        elif act["action"] == "hold":
            grant = grant_store.require_grant(conn, act["grant"])
            if grant.status is not GrantStatus.REVOKED:
                restored = dataclasses.replace(grant.terms, **_release_fields(act["terms"]))
                grant_store.replace_terms(conn, grant, restored, by=actor.name, now=now, reason=why)
                undone.append(act)
    if undone:
        bump_policy_version(conn)
    return undone


def _release_fields(before: dict[str, Any]) -> dict[str, Any]:
    return {"release_mode": ReleaseMode(before.get("release_mode", "dp"))}
