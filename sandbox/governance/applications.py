"""Grant applications (数据授权申请): an operator asks, the owning bureau decides.

The operator states the purpose, the columns, the duration, public-interest or
commercial use and, if it wants one, the release mode (``dp`` or ``reviewed``; left
out, the bureau chooses).  The bureau approves (the grant is issued through
:meth:`policies.Administration.issue_grant`, with its own decision and audit entry),
approves with amended terms (each difference recorded, with a reason), or rejects
with a reason.  Applicant, bureau, admins and auditors see the whole exchange.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from policies import Actor, Administration, Role, Target
from policies.grant_controls import CoApproval, check_grant_controls
from policies.grant_terms import ReleaseMode, validate_terms
from sandbox.core.classification import DatasetSpec, parse_classification
from sandbox.core.data_controls import load_controls
from sandbox.core.db import datasets
from sandbox.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Withheld
from sandbox.core.governance_tables import grant_application_events as events
from sandbox.core.governance_tables import grant_applications as apps
from sandbox.core.timeutil import to_rfc3339
from sandbox.platform import Platform

from .acts import (
    Clock,
    audited,
    audited_read,
    new_id,
    record_allow,
    sees_everything,
    step_out,
    system_clock,
)
from .application_states import AppState, AppStep, advance_application
from .application_terms import Asked, Decided, amendments_of, grant_terms_for

__all__ = ["Applications", "Asked", "Decided"]

MAX_DAYS = 3660
CLAIM_TTL = timedelta(hours=1)
"""An approval's claim older than this was left by a killed process."""


class Applications:
    """Grant applications over the control plane; ``clock`` is injected."""

    def __init__(
        self, platform: Platform, administration: Administration, *, clock: Clock = system_clock
    ) -> None:
        self.platform = platform
        self.administration = administration
        self.clock = clock

    def apply(self, actor: Actor, asked: Asked) -> dict[str, Any]:
        target = Target.dataset(asked.dataset)
        decision = self.platform.authority.decide(actor, "catalog.read", target, audit=False)
        with audited(self.platform, actor, "grant.apply", str(target), dataset=asked.dataset):
            if actor.role is not Role.OPERATOR:
                raise Forbidden("only an operator applies for a grant", rule="application.role")
            if not decision.allowed:
                raise decision.error()
            if not asked.columns:
                raise InvalidInput("name the columns the purpose needs", rule="application.columns")
            if not 1 <= asked.duration_days <= MAX_DAYS:
                raise InvalidInput(f"duration: 1 to {MAX_DAYS} days", rule="application.duration")
            now = self.clock()
            spec = self._spec(asked.dataset)
            # The asked terms must make a valid grant (unknown or L4 columns, a bad purpose):
            # every problem at once, as grant.terms, before the bureau sees them.  The
            # budget of a dp grant is the bureau's to set on approval, so it is not asked.
            terms = grant_terms_for(asked.to_dict(), Decided(), now, spec, k_floor=self._k_floor)
            validate_terms(
                replace(terms, release_mode=ReleaseMode.REVIEWED), spec, k_floor=self._k_floor
            )
            # Prohibited items are never asked for; important data is never asked exact.
            # Strictly limited items wait for the admin's co-approval (co_approve).
            with self.platform.engine.connect() as conn:
                controls = load_controls(conn, [asked.dataset])[asked.dataset]
            check_grant_controls(terms, spec, controls, limited=False)
            app_id = new_id("ga")
            with self.platform.engine.begin() as conn:
                conn.execute(
                    sa.insert(apps).values(
                        id=app_id,
                        dataset=asked.dataset,
                        domain=asked.dataset.split(".", 1)[0],
                        operator=actor.name,
                        state=AppState.SUBMITTED.value,
                        submitted_at=to_rfc3339(now),
                        asked=asked.to_dict(),
                        updated_at=to_rfc3339(now),
                    )
                )
                self._event(conn, app_id, actor, "apply", None, AppState.SUBMITTED, now, "")
                record_allow(
                    self.platform,
                    actor,
                    "grant.apply",
                    f"application:{app_id}",
                    "allow.role",
                    dataset=asked.dataset,
                    details={"application": app_id, "asked": asked.to_dict()},
                )
        return self.show(actor, app_id)

    @property
    def _k_floor(self) -> int:
        return self.platform.settings.k_floor

    def _spec(self, dataset: str) -> DatasetSpec:
        with self.platform.engine.connect() as conn:
            row = conn.execute(
                sa.select(datasets.c.classification).where(datasets.c.id == dataset)
            ).first()
        if row is None:
            raise NotFound(f"dataset {dataset} is not registered", rule="dataset.unknown")
        return parse_classification(row.classification, source_name=f"catalog:{dataset}")

    def approve(
        self, actor: Actor, app_id: str, decided: Decided, *, reason: str = ""
    ) -> dict[str, Any]:
        """Issue the grant (amended where ``decided`` changes what was asked)."""
        target = f"application:{app_id}"
        with audited(self.platform, actor, "grant.approve", target):
            row = self._row(actor, app_id)
            amendments = amendments_of(row.asked, decided)
            new = advance_application(
                AppState(row.state),
                AppStep.APPROVE,
                actor.role,
                own=self._owns(actor, row),
                amended=bool(amendments),
                reason=reason,
            )
            now = self.clock()
            terms = grant_terms_for(
                row.asked, decided, now, self._spec(row.dataset), k_floor=self._k_floor
            )
            claimed = self._claim(app_id, now)
            co = row.co_approval
            try:
                grant = self.administration.issue_grant(
                    actor,
                    row.dataset,
                    row.operator,
                    terms,
                    reason=f"application {app_id}" + (f": {reason}" if reason else ""),
                    co_approval=None
                    if not co
                    else CoApproval(co["admin"], app_id, frozenset(co["items"])),
                )
            except BaseException:
                with self.platform.engine.begin() as conn:
                    conn.execute(
                        sa.update(apps)
                        .where(apps.c.id == app_id, apps.c.deciding_since == claimed)
                        .values(deciding_since=None)
                    )
                raise
            self._decide(
                claimed=claimed,
                conn_values={
                    "state": new.value,
                    "decided_by": actor.name,
                    "decided_at": to_rfc3339(now),
                    "reason": reason,
                    "amendments": amendments,
                    "grant_id": grant.id,
                    "updated_at": to_rfc3339(now),
                },
                actor=actor,
                row=row,
                new=new,
                now=now,
                reason=reason,
                step="approve",
                extra={"grant": grant.id, "amendments": amendments},
            )
        return self.show(actor, app_id)

    def reject(self, actor: Actor, app_id: str, *, reason: str) -> dict[str, Any]:
        return self._close(actor, app_id, AppStep.REJECT, reason, "grant.reject")

    def withdraw(self, actor: Actor, app_id: str, *, reason: str = "") -> dict[str, Any]:
        return self._close(actor, app_id, AppStep.WITHDRAW, reason, "grant.withdraw_application")

    def _close(
        self, actor: Actor, app_id: str, step: AppStep, reason: str, action: str
    ) -> dict[str, Any]:
        with audited(self.platform, actor, action, f"application:{app_id}"):
            row = self._row(actor, app_id)
            own = self._owns(actor, row) if step is AppStep.REJECT else row.operator == actor.name
            new = advance_application(AppState(row.state), step, actor.role, own=own, reason=reason)
            now = self.clock()
            values = {
                "state": new.value,
                "decided_by": actor.name,
                "decided_at": to_rfc3339(now),
                "reason": reason,
                "updated_at": to_rfc3339(now),
            }
            self._decide(
                conn_values=values,
                actor=actor,
                row=row,
                new=new,
                now=now,
                reason=reason,
                step=step.value,
                extra={},
                action=action,
            )
        return self.show(actor, app_id)

    def _decide(
        self,
        *,
        conn_values: dict[str, Any],
        actor: Actor,
        row: Any,
        new: AppState,
        now: datetime,
        reason: str,
        step: str,
        extra: dict[str, Any],
        action: str = "grant.approve",
        claimed: str | None = None,
    ) -> None:
        """Write the decision, if the application still waits and nobody else's approval
        holds it (``claimed``: this approval's own claim)."""
        held = (
            apps.c.deciding_since == claimed
            if claimed is not None
            else sa.or_(
                apps.c.deciding_since.is_(None),
                apps.c.deciding_since < to_rfc3339(now - CLAIM_TTL),
            )
        )
        with self.platform.engine.begin() as conn:
            done = conn.execute(
                sa.update(apps)
                .where(apps.c.id == row.id, apps.c.state == AppState.SUBMITTED.value, held)
                .values(**conn_values, deciding_since=None)
            )
            if done.rowcount != 1:  # decided by someone else meanwhile
                raise Conflict(
                    "the application was decided, or is being decided, meanwhile",
                    rule="application.state",
                )
            self._event(conn, row.id, actor, step, AppState(row.state), new, now, reason)
            record_allow(
                self.platform,
                actor,
                action,
                f"application:{row.id}",
                "application.transition",
                dataset=row.dataset,
                details={"application": row.id, "to": new.value, "reason": reason, **extra},
            )

    def _claim(self, app_id: str, now: datetime) -> str:
        """Hold a waiting application while its grant is issued; returns the claim."""
        stamp = to_rfc3339(now)
        stale = to_rfc3339(now - CLAIM_TTL)
        with self.platform.engine.begin() as conn:
            done = conn.execute(
                sa.update(apps)
                .where(
                    apps.c.id == app_id,
                    apps.c.state == AppState.SUBMITTED.value,
                    sa.or_(apps.c.deciding_since.is_(None), apps.c.deciding_since < stale),
                )
                .values(deciding_since=stamp)
            )
        if done.rowcount != 1:
            raise Conflict(
                "the application is being decided by someone else right now",
                rule="application.deciding",
            )
        return stamp

    @staticmethod
    def _owns(actor: Actor, row: Any) -> bool:
        return actor.role is Role.BUREAU and row.domain in actor.domains

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def _visible(actor: Actor, row: Any) -> bool:
        return (
            sees_everything(actor)
            or row.operator == actor.name
            or (actor.role is Role.BUREAU and row.domain in actor.domains)
        )

    def _row(self, actor: Actor, app_id: str) -> Any:
        with self.platform.engine.connect() as conn:
            row = conn.execute(sa.select(apps).where(apps.c.id == app_id)).first()
        if row is None:
            raise NotFound(f"no grant application {app_id}", rule="application.unknown")
        if not self._visible(actor, row):
            # Another bureau's or operator's application answers as one that does not
            # exist; the trail keeps the real rule.
            bureau = actor.role is Role.BUREAU
            raise Withheld(
                f"no grant application {app_id}",
                rule="application.unknown",
                actual_rule="application.domain" if bureau else "application.not_own",
                actual_reason="the dataset is another bureau's"
                if bureau
                else "the application is another operator's",
            )
        return row

    def read(
        self, actor: Actor, app_id: str | None = None, *, state: str | None = None
    ) -> list[dict[str, Any]]:
        """What the API and the command line answer (one application, or the listing), the
        read recorded as ``application.read`` with the number of rows (a refusal with its rule)."""
        return audited_read(
            self.platform,
            actor,
            "application",
            app_id,
            lambda: self.visible(actor, state=state),
            lambda one: self.show(actor, one),
        )

    def visible(self, actor: Actor, *, state: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(apps).order_by(apps.c.submitted_at, apps.c.id)
        if state is not None:
            query = query.where(apps.c.state == AppState(state).value)
        with self.platform.engine.connect() as conn:
            rows = [r for r in conn.execute(query) if self._visible(actor, r)]
            return [self._out(conn, r) for r in rows]

    def show(self, actor: Actor, app_id: str) -> dict[str, Any]:
        row = self._row(actor, app_id)
        with self.platform.engine.connect() as conn:
            return self._out(conn, row)

    @staticmethod
    def _out(conn: sa.Connection, row: Any) -> dict[str, Any]:
        steps = conn.execute(
            sa.select(events).where(events.c.application == row.id).order_by(events.c.id)
        ).all()
        return {
            "id": row.id,
            "dataset": row.dataset,
            "domain": row.domain,
            "operator": row.operator,
            "state": row.state,
            "submitted_at": row.submitted_at,
            "asked": row.asked,
            "decided_by": row.decided_by,
            "decided_at": row.decided_at,
            "reason": row.reason,
            "amendments": row.amendments,
            "grant": row.grant_id,
            "co_approval": row.co_approval,
            "steps": [{**step_out(e), "reason": e.reason} for e in steps],
        }

    @staticmethod
    def _event(
        conn: sa.Connection,
        app_id: str,
        actor: Actor,
        step: str,
        before: AppState | None,
        after: AppState,
        now: datetime,
        reason: str,
    ) -> None:
        conn.execute(
            sa.insert(events).values(
                application=app_id,
                at=to_rfc3339(now),
                actor=actor.name,
                role=actor.role.value,
                step=step,
                from_state=None if before is None else before.value,
                to_state=after.value,
                reason=reason,
            )
        )
