"""Subscriptions to data products and runs (the steps of :class:`~.products.Products`).

An operator subscribes (public-interest use free on the product's conditions, commercial
use at its price per run); the owning bureau approves, which issues a grant through
:meth:`policies.Administration.issue_grant` (its own decision and entry, the grant rules,
the negative list's grant-time checks) with purpose :func:`product_purpose`, the
product's columns and the subscription's release mode and tariff, so runs are metered
and billed by the existing statements.  A run binds the parameters as literals and
submits the job under that purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from policies import Actor, Administration, Role
from policies.grant_terms import GrantTerms, ReleaseMode, Tariff, Use
from sandbox.core.classification import DatasetSpec, Level
from sandbox.core.errors import Conflict, Forbidden, InvalidInput
from sandbox.core.product_tables import product_purpose, product_runs, product_subscriptions
from sandbox.core.timeutil import to_rfc3339

from .acts import audited, new_id, record_allow
from .product_rows import ProductRows, product_template
from .product_templates import bind

__all__ = ["MAX_DAYS", "Submit", "SubscriptionSteps"]

Submit = Callable[[Actor, str, str], dict[str, Any]]
"""Submit ``sql`` under a purpose code as ``actor``'s job; the job as the API shows it."""

MAX_DAYS = 3660


class SubscriptionSteps(ProductRows):
    """Subscribing, deciding subscriptions, running."""

    administration: Administration
    submit: Submit | None

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(
        self,
        actor: Actor,
        pid: str,
        *,
        use: Use,
        release_mode: ReleaseMode,
        purpose_text: str,
        duration_days: int,
    ) -> dict[str, Any]:
        """An operator asks to use a published product; the owning bureau approves."""
        with audited(self.platform, actor, "product.subscribe", f"product:{pid}"):
            if actor.role is not Role.OPERATOR:
                raise Forbidden("only an operator subscribes", rule="product.role")
            row = self._visible_row(actor, pid)
            if row.state != "published":
                raise Conflict(f"product {pid} is {row.state}", rule="product.state")
            if not purpose_text.strip():
                raise InvalidInput("state the purpose of the use", rule="product.purpose")
            if not 1 <= duration_days <= MAX_DAYS:
                raise InvalidInput(f"duration: 1 to {MAX_DAYS} days", rule="product.duration")
            sid = new_id("ps")
            now = to_rfc3339(self.clock())
            with self.platform.engine.begin() as conn:
                open_one = conn.execute(
                    sa.select(product_subscriptions.c.id).where(
                        product_subscriptions.c.product == pid,
                        product_subscriptions.c.operator == actor.name,
                        product_subscriptions.c.state.in_(("requested", "active")),
                    )
                ).first()
                if open_one is not None:
                    raise Conflict(
                        f"you already have subscription {open_one.id} to product {pid}",
                        rule="product.subscribed",
                    )
                conn.execute(
                    sa.insert(product_subscriptions).values(
                        id=sid,
                        product=pid,
                        operator=actor.name,
                        state="requested",
                        use=use.value,
                        release_mode=release_mode.value,
                        purpose_text=purpose_text.strip(),
                        duration_days=duration_days,
                        requested_at=now,
                    )
                )
                record_allow(
                    self.platform,
                    actor,
                    "product.subscribe",
                    f"subscription:{sid}",
                    "product.transition",
                    dataset=row.dataset,
                    details={"product": pid, "use": use.value, "release_mode": release_mode.value},
                )
        return self._subscription_out(self._subscription(sid))

    def decide_subscription(
        self, actor: Actor, sid: str, *, approve: bool, reason: str = ""
    ) -> dict[str, Any]:
        """The owning bureau approves (a grant is issued for the product) or rejects."""
        action = "product.approve_subscription" if approve else "product.reject_subscription"
        with audited(self.platform, actor, action, f"subscription:{sid}"):
            sub = self._subscription(sid)
            row = self._own_row(actor, sub.product, unknown=f"subscription {sid}")
            if sub.state != "requested":
                raise Conflict(f"subscription {sid} is {sub.state}", rule="product.state")
            if not approve and not reason.strip():
                raise InvalidInput("a rejection needs a reason", rule="product.reason")
            grant_id = None
            if approve:
                if row.state != "published":
                    raise Conflict(f"product {row.id} is {row.state}", rule="product.state")
                spec = self._spec(row.dataset)
                terms = self._terms(
                    spec,
                    tuple(row.columns),
                    tuple(row.groupable),
                    product_purpose(row.id),
                    Use(sub.use),
                    ReleaseMode(sub.release_mode),
                    sub.duration_days,
                    row.price_per_run,
                    purpose_text=f"{row.title}: {sub.purpose_text}"[:2000],
                )
                grant = self.administration.issue_grant(
                    actor, row.dataset, sub.operator, terms, reason=f"subscription {sid}"
                )
                grant_id = grant.id
            now = to_rfc3339(self.clock())
            with self.platform.engine.begin() as conn:
                conn.execute(
                    sa.update(product_subscriptions)
                    .where(product_subscriptions.c.id == sid)
                    .values(
                        state="active" if approve else "rejected",
                        decided_by=actor.name,
                        decided_at=now,
                        reason=reason,
                        grant_id=grant_id,
                    )
                )
                record_allow(
                    self.platform,
                    actor,
                    action,
                    f"subscription:{sid}",
                    "product.transition",
                    dataset=row.dataset,
                    details={"product": row.id, "grant": grant_id, "reason": reason},
                )
        return self._subscription_out(self._subscription(sid))

    def _terms(
        self,
        spec: DatasetSpec,
        columns: tuple[str, ...],
        groupable: tuple[str, ...],
        purpose: str,
        use: Use,
        mode: ReleaseMode,
        days: int,
        price: int,
        *,
        purpose_text: str = "data product",
    ) -> GrantTerms:
        levels = []
        for name in columns:
            try:
                levels.append(spec.column(name).level)
            except KeyError:
                raise InvalidInput(
                    f"column '{name}' is not a column of {spec.id}", rule="product.columns"
                ) from None
        now = self.clock()
        terms = GrantTerms(
            purpose_code=purpose,
            purpose_text=purpose_text,
            valid_from=now,
            valid_until=now + timedelta(days=days),
            max_level=max(levels, default=Level.L1),
            columns=frozenset(columns),
            groupable=frozenset(groupable),
            release_mode=mode,
            tariff=Tariff.free()
            if use is Use.PUBLIC_INTEREST
            else Tariff.commercial(per_query=price, per_million_rows=0),
        )
        return terms  # validated where it is issued (Administration.issue_grant)

    # -- running -----------------------------------------------------------------------------

    def run(self, actor: Actor, pid: str, values: dict[str, Any]) -> dict[str, Any]:
        """Bind ``values`` and submit the product's query as the operator's job."""
        assert self.submit is not None, "a runner needs submit"
        with audited(self.platform, actor, "product.run", f"product:{pid}"):
            if actor.role is not Role.OPERATOR:
                raise Forbidden("only a subscribed operator runs a product", rule="product.role")
            row = self._visible_row(actor, pid)
            if row.state != "published":
                raise Conflict(f"product {pid} is {row.state}", rule="product.state")
            with self.platform.engine.connect() as conn:
                sub = conn.execute(
                    sa.select(product_subscriptions).where(
                        product_subscriptions.c.product == pid,
                        product_subscriptions.c.operator == actor.name,
                        product_subscriptions.c.state == "active",
                    )
                ).first()
            if sub is None:
                raise Forbidden(
                    f"no active subscription to product {pid}", rule="product.not_subscribed"
                )
            sql = bind(product_template(row), values)
            # The job's own check (authorization, the guard with these values, the budget)
            # is also audited as the query's; the run is counted once the job is accepted.
            job = self.submit(actor, sql, product_purpose(pid))
        with self.platform.engine.begin() as conn:
            conn.execute(
                sa.insert(product_runs).values(
                    product=pid,
                    subscription=sub.id,
                    operator=actor.name,
                    at=to_rfc3339(self.clock()),
                    job=str(job.get("id")),
                    params={k: str(v) for k, v in values.items()},
                )
            )
            record_allow(
                self.platform,
                actor,
                "product.run",
                f"product:{pid}",
                "product.subscribed",
                dataset=row.dataset,
                details={"subscription": sub.id, "job": job.get("id")},
            )
        return {"product": pid, "subscription": sub.id, "job": job}
