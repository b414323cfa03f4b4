"""The admin's co-approval of a grant application's strictly limited items (负面清单).

A strictly limited item (dataset or column) is granted only with the admin's approval
besides the owning bureau's.  The admin co-approves a submitted application that asks
for such items (``grant.co_approve``, a step of the exchange both sides read); the
bureau's approval then issues the grant with the co-approval recorded beside it
(``policies.grant_controls``).  Without it the bureau's approval is refused
(``negative.limited``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from policies import Actor, Role
from policies.grant_controls import limited_items
from sandbox.core.data_controls import load_controls
from sandbox.core.errors import Conflict, Forbidden, InvalidInput
from sandbox.core.governance_tables import grant_applications as apps
from sandbox.core.timeutil import to_rfc3339

from .acts import audited, record_allow
from .application_states import AppState
from .application_terms import Decided, grant_terms_for
from .applications import Applications

__all__ = ["co_approve"]


def co_approve(
    applications: Applications, actor: Actor, app_id: str, *, reason: str
) -> dict[str, Any]:
    """Record the admin's approval of the limited items ``app_id`` asks for."""
    platform = applications.platform
    target = f"application:{app_id}"
    with audited(platform, actor, "grant.co_approve", target):
        if actor.role is not Role.ADMIN:
            raise Forbidden(
                "only the admin co-approves strictly limited items", rule="application.role"
            )
        row = applications._row(actor, app_id)
        if row.state != AppState.SUBMITTED.value:
            raise Conflict(
                f"the application is already {row.state}: only a submitted one can change",
                rule="application.state",
            )
        if not reason.strip():
            raise InvalidInput(
                "a co-approval needs a reason both sides can read", rule="application.reason"
            )
        now = applications.clock()
        spec = applications._spec(row.dataset)
        terms = grant_terms_for(row.asked, Decided(), now, spec, k_floor=platform.settings.k_floor)
        with platform.engine.connect() as conn:
            controls = load_controls(conn, [row.dataset])[row.dataset]
        items = sorted(limited_items(terms, controls))
        if not items:
            raise Conflict(
                "the application asks for nothing strictly limited: the bureau alone decides it",
                rule="negative.not_limited",
            )
        approval = {"admin": actor.name, "at": to_rfc3339(now), "items": items, "reason": reason}
        with platform.engine.begin() as conn:
            done = conn.execute(
                sa.update(apps)
                .where(apps.c.id == app_id, apps.c.state == AppState.SUBMITTED.value)
                .values(co_approval=approval, updated_at=to_rfc3339(now))
            )
            if done.rowcount != 1:
                raise Conflict("the application was decided meanwhile", rule="application.state")
            state = AppState.SUBMITTED
            applications._event(conn, app_id, actor, "co_approve", state, state, now, reason)
            record_allow(
                platform,
                actor,
                "grant.co_approve",
                target,
                "application.transition",
                dataset=row.dataset,
                details={"application": app_id, "items": items, "reason": reason},
            )
    return applications.show(actor, app_id)
