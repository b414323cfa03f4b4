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
from typing import Any

import sqlalchemy as sa

from policies import Actor, Administration, Role, Target
from policies.grant_controls import check_grant_controls
from policies.grant_terms import ReleaseMode, Use, validate_terms
from sandbox.core.classification import DatasetSpec
from sandbox.core.data_controls import load_controls
from sandbox.core.errors import Conflict, Forbidden, InvalidInput
from sandbox.core.product_tables import (
    products,
)
from sandbox.core.timeutil import to_rfc3339
from sandbox.platform import Platform

from .acts import Clock, audited, new_id, record_allow, system_clock
from .product_rows import product_template
from .product_subscriptions import Submit, SubscriptionSteps
from .product_templates import Template, parse_params, parse_template

__all__ = ["Guard", "Offer", "Products", "Submit", "product_template"]

Guard = Callable[[DatasetSpec, Template, tuple[str, ...], tuple[str, ...]], None]
"""Check every sample binding of a template with the guard (raise the guard's refusal)."""


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


class Products(SubscriptionSteps):
    """Data products over the control plane; ``guard`` and ``submit`` come from above.

    Offering here; subscriptions and runs in :mod:`.product_subscriptions`, reading in
    :mod:`.product_rows`."""

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
