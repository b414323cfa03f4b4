"""The rows of data products as both sides read them: visibility, ownership, the shapes shown.

A published product is visible to every account; a proposal to its proposer, the owning
bureau, admins and auditors (to anyone else it is answered as unknown:
``product.unknown``).  Usage counts (runs, active subscribers) are in every listing.
Reads are recorded as ``product.read``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from policies import Actor, Role
from sandbox.core.classification import DatasetSpec, parse_classification
from sandbox.core.db import datasets
from sandbox.core.errors import Forbidden, NotFound
from sandbox.core.product_tables import (
    product_purpose,
    product_runs,
    product_subscriptions,
    products,
)
from sandbox.platform import Platform

from .acts import Clock, audited, record_allow, sees_everything
from .product_templates import Template, parse_params, parse_template

__all__ = ["ProductRows", "product_template"]


def product_template(row: Any) -> Template:
    """A stored product's template (its parameters were resolved when it was offered)."""
    return parse_template(row.template, parse_params(row.params, stored=True))


class ProductRows:
    """Reading products and subscriptions (the base of :class:`~.products.Products`)."""

    platform: Platform
    clock: Clock

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
