"""Data products (数据产品): parameterised analyses a bureau publishes, operators subscribe to.

Steps, who takes them, and their rules:

| step | who | from | to |
|---|---|---|---|
| publish | the bureau owning the dataset | — | ``published`` |
| propose | an operator (``catalog.read`` on the dataset) | — | ``proposed`` |
| approve / reject | the owning bureau | ``proposed`` | ``published`` / ``rejected`` |
| withdraw | the owning bureau | ``published`` | ``withdrawn`` |
| subscribe | an operator | a ``published`` product | subscription ``requested`` |
| approve / reject a subscription | the owning bureau | ``requested`` | ``active`` / ``rejected`` |
| run | the subscribed operator | an ``active`` subscription | a job |

Publishing (or approving) checks the template with the guard for every parameter's
sample values (:func:`product_templates.samples`) under the product's columns, the
negative list included (``guard``, injected: :mod:`sandbox.query.product_guard`).
Approving a subscription issues a grant through
:meth:`policies.Administration.issue_grant` (the bureau's own decision, the grant
rules and the negative list's grant-time checks): the product's columns, the
subscription's release mode, purpose code :func:`product_purpose`, and the tariff:
free for public-interest use (on the product's conditions), the price per run for
commercial use, so runs are metered and billed by the existing statements.  A run
binds the parameters as literals and submits the job (``submit``, injected) under
that purpose; the query service accepts such a purpose only for the template's own
bindings, and checks the guard again with the actual values.  Every step is an
audit entry (``product.*``); refusals carry their rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from policies import Actor, Administration, Role, Target
from policies.grant_controls import check_grant_controls
from policies.grant_terms import GrantTerms, ReleaseMode, Tariff, Use, validate_terms
from sandbox.core.classification import DatasetSpec, Level, parse_classification
from sandbox.core.data_controls import load_controls
from sandbox.core.db import datasets
from sandbox.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from sandbox.core.product_tables import (
    product_purpose,
    product_runs,
    product_subscriptions,
    products,
)
from sandbox.core.timeutil import to_rfc3339
from sandbox.platform import Platform

from .acts import Clock, audited, new_id, record_allow, sees_everything, system_clock
from .product_templates import Template, bind, parse_params, parse_template

__all__ = ["Guard", "Offer", "Products", "Submit", "product_template"]

Guard = Callable[[DatasetSpec, Template, tuple[str, ...], tuple[str, ...]], None]
"""Check every sample binding of a template with the guard (raise the guard's refusal)."""
Submit = Callable[[Actor, str, str], dict[str, Any]]
"""Submit ``sql`` under a purpose code as ``actor``'s job; the job as the API shows it."""

MAX_DAYS = 3660


@dataclass(frozen=True)
class Offer:
    """What a bureau publishes, or an operator proposes."""

    dataset: str
    title: str
    description: str
    template: str
    params: dict[str, Any]
    columns: tuple[str, ...]
    groupable: tuple[str, ...] = ()
    price_per_run: int = 0
    terms: str = ""
    public_interest: str = "free for public-interest use stated in the subscription"


def product_template(row: Any) -> Template:
    """A stored product's template (its parameters were resolved when it was offered)."""
    return parse_template(row.template, parse_params(row.params, stored=True))


class Products:
    """Data products over the control plane; ``guard`` and ``submit`` come from above."""

    def __init__(
        self,
        platform: Platform,
        administration: Administration,
        *,
        guard: Guard,
        submit: Submit | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.platform = platform
        self.administration = administration
        self.guard = guard
        self.submit = submit
        self.clock = clock

    # -- offering ----------------------------------------------------------------------------

    def publish(self, actor: Actor, offer: Offer) -> dict[str, Any]:
        """The owning bureau publishes a product (checked as a grant of its columns would be)."""
        with audited(self.platform, actor, "product.publish", f"dataset:{offer.dataset}"):
            if actor.role is not Role.BUREAU:
                raise Forbidden("only the owning bureau publishes a product", rule="product.role")
            self._require(actor, "grant.issue", offer.dataset)
            return self._offer(actor, offer, "published", "product.publish")

    def propose(self, actor: Actor, offer: Offer) -> dict[str, Any]:
        """An operator proposes a product; the owning bureau approves or rejects it."""
        with audited(self.platform, actor, "product.propose", f"dataset:{offer.dataset}"):
            if actor.role is not Role.OPERATOR:
                raise Forbidden("only an operator proposes a product", rule="product.role")
            self._require(actor, "catalog.read", offer.dataset)
            return self._offer(actor, offer, "proposed", "product.propose")

    def _require(self, actor: Actor, action: str, dataset: str) -> None:
        decision = self.platform.authority.decide(
            actor, action, Target.dataset(dataset), audit=False
        )
        if not decision.allowed:
            raise decision.error()

    def _checked(self, offer: Offer) -> tuple[DatasetSpec, Template, dict[str, Any]]:
        spec = self._spec(offer.dataset)
        if not offer.title.strip() or not offer.description.strip():
            raise InvalidInput("a product needs a title and a description", rule="product.text")
        if offer.price_per_run < 0:
            raise InvalidInput("the price per run is not negative", rule="product.price")
        domains = {f"{spec.id}.{c.name}": c.values for c in spec.columns}
        params = parse_params(offer.params, domains)
        template = parse_template(offer.template, params)
        columns = tuple(c.lower() for c in offer.columns)
        groupable = tuple(c.lower() for c in offer.groupable)
        if not columns:
            raise InvalidInput("name the columns the template reads", rule="product.columns")
        # The grant a subscription gets must be one the rules allow (unknown or L4 columns,
        # prohibited items), and the guard must accept the template for every parameter's
        # samples (the negative list included).
        terms = self._terms(
            spec, columns, groupable, "product-check", Use.PUBLIC_INTEREST, ReleaseMode.DP, 1, 0
        )
        validate_terms(
            replace(terms, release_mode=ReleaseMode.REVIEWED),
            spec,
            k_floor=self.platform.settings.k_floor,
        )
        with self.platform.engine.connect() as conn:
            controls = load_controls(conn, [spec.id])[spec.id]
        check_grant_controls(terms, spec, controls)
        self.guard(spec, template, columns, groupable)
        stored = {p.name: p.to_dict() for p in params}
        return spec, template, stored

    def _offer(self, actor: Actor, offer: Offer, state: str, action: str) -> dict[str, Any]:
        spec, _, stored = self._checked(offer)
        now = to_rfc3339(self.clock())
        pid = new_id("pd")
        published = state == "published"
        with self.platform.engine.begin() as conn:
            conn.execute(
                sa.insert(products).values(
                    id=pid,
                    dataset=spec.id,
                    domain=spec.domain,
                    state=state,
                    title=offer.title.strip(),
                    description=offer.description.strip(),
                    template=offer.template,
                    params=stored,
                    columns=[c.lower() for c in offer.columns],
                    groupable=[c.lower() for c in offer.groupable],
                    price_per_run=offer.price_per_run,
                    terms=offer.terms,
                    public_interest=offer.public_interest,
                    proposed_by=actor.name,
                    proposed_role=actor.role.value,
                    created_at=now,
                    decided_by=actor.name if published else None,
                    decided_at=now if published else None,
                )
            )
            record_allow(
                self.platform,
                actor,
                action,
                f"product:{pid}",
                "product.transition",
                dataset=spec.id,
                details={"product": pid, "to": state, "params": stored},
            )
        return self.show(actor, pid, record=False)

    def decide(self, actor: Actor, pid: str, *, approve: bool, reason: str = "") -> dict[str, Any]:
        """The owning bureau approves a proposed product (checked again) or rejects it."""
        action = "product.approve" if approve else "product.reject"
        with audited(self.platform, actor, action, f"product:{pid}"):
            row = self._own_row(actor, pid)
            if row.state != "proposed":
                raise Conflict(f"product {pid} is {row.state}, not proposed", rule="product.state")
            if not approve and not reason.strip():
                raise InvalidInput("a rejection needs a reason", rule="product.reason")
            if approve:
                self.guard(
                    self._spec(row.dataset),
                    product_template(row),
                    tuple(row.columns),
                    tuple(row.groupable),
                )
            to = "published" if approve else "rejected"
            self._move(actor, row, to, action, reason)
        return self.show(actor, pid, record=False)

    def withdraw(self, actor: Actor, pid: str, *, reason: str) -> dict[str, Any]:
        """The owning bureau withdraws a published product: no new subscription or run."""
        with audited(self.platform, actor, "product.withdraw", f"product:{pid}"):
            row = self._own_row(actor, pid)
            if row.state != "published":
                raise Conflict(f"product {pid} is {row.state}", rule="product.state")
            if not reason.strip():
                raise InvalidInput("a withdrawal needs a reason", rule="product.reason")
            self._move(actor, row, "withdrawn", "product.withdraw", reason)
        return self.show(actor, pid, record=False)

    def _move(self, actor: Actor, row: Any, to: str, action: str, reason: str) -> None:
        now = to_rfc3339(self.clock())
        with self.platform.engine.begin() as conn:
            moved = conn.execute(
                sa.update(products)
                .where(products.c.id == row.id, products.c.state == row.state)
                .values(state=to, decided_by=actor.name, decided_at=now, reason=reason)
            ).rowcount
            if moved != 1:
                raise Conflict(f"product {row.id} changed meanwhile", rule="product.state")
            record_allow(
                self.platform,
                actor,
                action,
                f"product:{row.id}",
                "product.transition",
                dataset=row.dataset,
                details={"from": row.state, "to": to, "reason": reason},
            )

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

    # -- reading -----------------------------------------------------------------------------

    def listing(self, actor: Actor) -> list[dict[str, Any]]:
        """Published products (anyone with an account), and the proposals one is party to."""
        with self.platform.engine.connect() as conn:
            rows = conn.execute(sa.select(products).order_by(products.c.created_at)).all()
        shown = [self._out(r) for r in rows if self._sees(actor, r)]
        record_allow(
            self.platform,
            actor,
            "product.read",
            "platform",
            "allow.read",
            details={"rows": len(shown)},
        )
        return shown

    def show(self, actor: Actor, pid: str, *, record: bool = True) -> dict[str, Any]:
        with audited(self.platform, actor, "product.read", f"product:{pid}"):
            row = self._visible_row(actor, pid)
            out = self._out(row)
            if self._party(actor, row):
                with self.platform.engine.connect() as conn:
                    subs = conn.execute(
                        sa.select(product_subscriptions).where(
                            product_subscriptions.c.product == pid
                        )
                    ).all()
                out["subscriptions"] = [
                    self._subscription_out(s)
                    for s in subs
                    if actor.role is not Role.OPERATOR or s.operator == actor.name
                ]
            if record:
                record_allow(self.platform, actor, "product.read", f"product:{pid}", "allow.read")
        return out

    def _out(self, row: Any) -> dict[str, Any]:
        with self.platform.engine.connect() as conn:
            runs = conn.execute(
                sa.select(sa.func.count()).where(product_runs.c.product == row.id)
            ).scalar_one()
            subscribers = conn.execute(
                sa.select(sa.func.count()).where(
                    product_subscriptions.c.product == row.id,
                    product_subscriptions.c.state == "active",
                )
            ).scalar_one()
        return {
            "id": row.id,
            "dataset": row.dataset,
            "state": row.state,
            "title": row.title,
            "description": row.description,
            "template": row.template,
            "params": row.params,
            "columns": row.columns,
            "groupable": row.groupable,
            "price_per_run_fen": row.price_per_run,
            "terms": row.terms,
            "public_interest": row.public_interest,
            "proposed_by": row.proposed_by,
            "decided_by": row.decided_by,
            "reason": row.reason,
            "usage": {"runs": int(runs), "subscribers": int(subscribers)},
            "purpose_code": product_purpose(row.id),
        }

    @staticmethod
    def _subscription_out(sub: Any) -> dict[str, Any]:
        return {
            "id": sub.id,
            "product": sub.product,
            "operator": sub.operator,
            "state": sub.state,
            "use": sub.use,
            "release_mode": sub.release_mode,
            "purpose_text": sub.purpose_text,
            "duration_days": sub.duration_days,
            "requested_at": sub.requested_at,
            "decided_by": sub.decided_by,
            "reason": sub.reason,
            "grant": sub.grant_id,
        }

    # -- rows --------------------------------------------------------------------------------

    def _spec(self, dataset: str) -> DatasetSpec:
        with self.platform.engine.connect() as conn:
            row = conn.execute(
                sa.select(datasets.c.classification).where(datasets.c.id == dataset)
            ).first()
        if row is None:
            raise NotFound(f"dataset {dataset} is not registered", rule="dataset.unknown")
        return parse_classification(row.classification, source_name=f"catalog:{dataset}")

    def _row(self, pid: str) -> Any:
        with self.platform.engine.connect() as conn:
            row = conn.execute(sa.select(products).where(products.c.id == pid)).first()
        if row is None:
            raise NotFound(f"product {pid} does not exist", rule="product.unknown")
        return row

    @staticmethod
    def _party(actor: Actor, row: Any) -> bool:
        if sees_everything(actor):
            return True
        if actor.role is Role.BUREAU:
            return row.domain in actor.domains
        return True  # an operator sees its own subscriptions only (filtered by the caller)

    def _sees(self, actor: Actor, row: Any) -> bool:
        if row.state == "published" or sees_everything(actor):
            return True
        if actor.role is Role.BUREAU:
            return row.domain in actor.domains
        return bool(row.proposed_by == actor.name)

    def _visible_row(self, actor: Actor, pid: str) -> Any:
        row = self._row(pid)
        if not self._sees(actor, row):  # another's proposal: answered as unknown
            raise NotFound(f"product {pid} does not exist", rule="product.unknown")
        return row

    def _own_row(self, actor: Actor, pid: str, *, unknown: str | None = None) -> Any:
        if actor.role is not Role.BUREAU:
            raise Forbidden("only the owning bureau decides", rule="product.role")
        row = self._row(pid)
        if row.domain not in actor.domains:
            raise NotFound(f"{unknown or 'product ' + pid} does not exist", rule="product.unknown")
        return row

    def _subscription(self, sid: str) -> Any:
        with self.platform.engine.connect() as conn:
            sub = conn.execute(
                sa.select(product_subscriptions).where(product_subscriptions.c.id == sid)
            ).first()
        if sub is None:
            raise NotFound(f"subscription {sid} does not exist", rule="product.unknown")
        return sub
