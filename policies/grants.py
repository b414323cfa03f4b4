"""Grant storage: issue, narrow, suspend, resume, revoke; every change a new version.

Each change writes the grant row (optimistically locked on its version), a
``grant_versions`` row holding the full terms as they became, and bumps the
policy version, all in the caller's transaction.  The audit entry for the
change is appended by :class:`policies.admin.Administration` before commit.

Status moves: active <-> suspended, and either -> revoked (final).  The release mode
(``dp`` or ``reviewed``) changes only by the owning bureau's explicit choice
(:func:`set_release_mode`), or once by :func:`migrate_release_modes` for grants stored
before release modes existed.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandbox.core.errors import Conflict, NotFound
from sandbox.core.policy_tables import bump_policy_version, grant_budgets, grant_versions, grants
from sandbox.core.timeutil import to_rfc3339

from .grant_terms import (
    Grant,
    GrantStatus,
    GrantTerms,
    ReleaseMode,
    legacy_release_mode,
    terms_to_row,
)

__all__ = [
    "TRANSITIONS",
    "change_status",
    "get_grant",
    "grant_history",
    "grants_for",
    "insert_grant",
    "list_grants",
    "migrate_release_modes",
    "replace_terms",
    "require_grant",
    "set_release_mode",
]

#: Who made the choice a migration records: the system, pending the owning bureau's own.
MIGRATION_ACTOR = "system"

TRANSITIONS: dict[str, tuple[frozenset[GrantStatus], GrantStatus]] = {
    "suspend": (frozenset({GrantStatus.ACTIVE}), GrantStatus.SUSPENDED),
    "resume": (frozenset({GrantStatus.SUSPENDED}), GrantStatus.ACTIVE),
    "revoke": (frozenset({GrantStatus.ACTIVE, GrantStatus.SUSPENDED}), GrantStatus.REVOKED),
}


def get_grant(conn: Connection, grant_id: str) -> Grant | None:
    row = conn.execute(sa.select(grants).where(grants.c.id == grant_id)).first()
    return None if row is None else Grant.from_row(row)


def require_grant(conn: Connection, grant_id: str) -> Grant:
    grant = get_grant(conn, grant_id)
    if grant is None:
        raise NotFound(f"no grant {grant_id}", rule="grant.unknown")
    return grant


def grants_for(conn: Connection, operator: str, datasets: Iterable[str]) -> dict[str, list[Grant]]:
    """An operator's grants on the given datasets (index on operator, dataset), oldest first."""
    wanted = sorted(set(datasets))
    query = (
        sa.select(grants)
        .where(grants.c.operator == operator, grants.c.dataset_id.in_(wanted))
        .order_by(grants.c.created_at, grants.c.id)
    )
    out: dict[str, list[Grant]] = defaultdict(list)
    for row in conn.execute(query):
        out[row.dataset_id].append(Grant.from_row(row))
    return dict(out)


def list_grants(
    conn: Connection,
    *,
    operator: str | None = None,
    domains: Sequence[str] | None = None,
    dataset: str | None = None,
) -> list[Grant]:
    query = sa.select(grants).order_by(grants.c.dataset_id, grants.c.created_at, grants.c.id)
    if operator is not None:
        query = query.where(grants.c.operator == operator)
    if dataset is not None:
        query = query.where(grants.c.dataset_id == dataset)
    if domains is not None:
        query = query.where(
            sa.or_(sa.false(), *(grants.c.dataset_id.startswith(f"{d}.") for d in domains))
        )
    return [Grant.from_row(row) for row in conn.execute(query)]


def grant_history(conn: Connection, grant_id: str) -> list[dict[str, Any]]:
    query = (
        sa.select(grant_versions)
        .where(grant_versions.c.grant_id == grant_id)
        .order_by(grant_versions.c.version)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def _record_version(
    conn: Connection, grant: Grant, *, change: str, by: str, now: datetime, reason: str
) -> None:
    conn.execute(
        sa.insert(grant_versions).values(
            grant_id=grant.id,
            version=grant.version,
            change=change,
            changed_at=to_rfc3339(now),
            changed_by=by,
            reason=reason,
            terms={"status": grant.status.value, **grant.terms_dict()},
        )
    )
    bump_policy_version(conn)


def insert_grant(
    conn: Connection,
    *,
    dataset: str,
    operator: str,
    terms: GrantTerms,
    issued_by: str,
    now: datetime,
    reason: str = "",
) -> Grant:
    """Store validated terms as a new grant, version 1."""
    grant_id = "gr_" + secrets.token_hex(8)
    stamp = to_rfc3339(now)
    conn.execute(
        sa.insert(grants).values(
            id=grant_id,
            dataset_id=dataset,
            operator=operator,
            issued_by=issued_by,
            status=GrantStatus.ACTIVE.value,
            version=1,
            created_at=stamp,
            updated_at=stamp,
            **terms_to_row(terms),
        )
    )
    _ensure_budget(conn, grant_id, terms)
    grant = require_grant(conn, grant_id)
    _record_version(conn, grant, change="issue", by=issued_by, now=now, reason=reason)
    return grant


def _update(conn: Connection, grant: Grant, now: datetime, **values: Any) -> Grant:
    result = conn.execute(
        sa.update(grants)
        .where(grants.c.id == grant.id, grants.c.version == grant.version)
        .values(version=grant.version + 1, updated_at=to_rfc3339(now), **values)
    )
    if result.rowcount != 1:
        raise Conflict(
            f"grant {grant.id} changed concurrently; read it again", rule="grant.concurrent_change"
        )
    return require_grant(conn, grant.id)


def replace_terms(
    conn: Connection, grant: Grant, terms: GrantTerms, *, by: str, now: datetime, reason: str
) -> Grant:
    """Store narrowed terms (the caller checked they only narrow) as the next version."""
    if grant.status is GrantStatus.REVOKED:
        raise Conflict(f"grant {grant.id} is revoked", rule="grant.transition")
    updated = _update(conn, grant, now, **terms_to_row(terms))
    _ensure_budget(conn, grant.id, terms)
    _record_version(conn, updated, change="narrow", by=by, now=now, reason=reason)
    return updated


def _ensure_budget(conn: Connection, grant_id: str, terms: GrantTerms) -> None:
    """A budget ledger row for a grant with a budget (kept, never reset, once it exists)."""
    if terms.epsilon_total is None:
        return
    present = conn.execute(
        sa.select(grant_budgets.c.grant_id).where(grant_budgets.c.grant_id == grant_id)
    ).first()
    if present is None:
        conn.execute(sa.insert(grant_budgets).values(grant_id=grant_id, spent=0))


def set_release_mode(
    conn: Connection, grant: Grant, terms: GrantTerms, *, by: str, now: datetime, reason: str
) -> Grant:
    """Store the owning bureau's choice of release mode (validated ``terms``) as the next
    version.  What was spent of a budget stays spent: the ledger is never reset."""
    if grant.status is GrantStatus.REVOKED:
        raise Conflict(f"grant {grant.id} is revoked", rule="grant.transition")
    updated = _update(conn, grant, now, **terms_to_row(terms))
    _ensure_budget(conn, grant.id, terms)
    _record_version(conn, updated, change="release_mode", by=by, now=now, reason=reason)
    return updated


def migrate_release_modes(conn: Connection, *, now: datetime) -> list[tuple[Grant, str]]:
    """Give every grant stored before release modes existed its mode; each a new version.

    Review required: ``reviewed``; a budget: ``dp``; neither (exact and unreviewed, which
    no longer exists): ``reviewed``, the conservative mode that keeps its exactness.
    Returns each migrated grant with what it was (``review_required``, ``budget``,
    ``exact_unreviewed``), for the caller's audit entries.
    """
    rows = conn.execute(
        sa.select(grants).where(grants.c.release_mode.is_(None)).order_by(grants.c.id)
    ).all()
    out: list[tuple[Grant, str]] = []
    for row in rows:
        mode = legacy_release_mode(
            review_required=bool(row.review_required), epsilon_total=row.epsilon_total
        )
        was = (
            "review_required"
            if row.review_required
            else "budget"
            if row.epsilon_total is not None
            else "exact_unreviewed"
        )
        grant = Grant.from_row(row)  # read as ``mode`` already (NULL is read conservatively)
        updated = _update(
            conn,
            grant,
            now,
            release_mode=mode.value,
            review_required=mode is ReleaseMode.REVIEWED,
        )
        reason = (
            f"release modes introduced: {was.replace('_', ' ')} became {mode.value}, "
            "pending the owning bureau's choice"
        )
        _record_version(conn, updated, change="migrate", by=MIGRATION_ACTOR, now=now, reason=reason)
        out.append((updated, was))
    return out


def change_status(
    conn: Connection, grant: Grant, change: str, *, by: str, now: datetime, reason: str
) -> Grant:
    """Suspend, resume or revoke."""
    allowed_from, to = TRANSITIONS[change]
    if grant.status not in allowed_from:
        raise Conflict(
            f"cannot {change} a grant that is {grant.status.value}", rule="grant.transition"
        )
    updated = _update(conn, grant, now, status=to.value)
    _record_version(conn, updated, change=change, by=by, now=now, reason=reason)
    return updated
