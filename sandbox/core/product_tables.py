"""Control-plane tables of data products (数据产品), declared on :data:`sandbox.core.db.metadata`.

A product is a bureau's parameterised analysis of one of its datasets (or one an
operator proposed and the bureau approved); a subscription is an operator's use of it,
approved by the bureau with a grant whose purpose code is :data:`PRODUCT_PURPOSE_PREFIX`
followed by the product's id: such a grant is used for that product's queries only
(``policies.rules``, the query service).  Runs are counted per product and subscription.
"""

from __future__ import annotations

import sqlalchemy as sa

from sandbox.core.db import metadata

__all__ = [
    "PRODUCT_PURPOSE_PREFIX",
    "product_purpose",
    "product_runs",
    "product_subscriptions",
    "products",
]

_TS = 40

PRODUCT_PURPOSE_PREFIX = "product-"
"""The purpose code of a subscription's grant starts with this, then the product's id."""


def product_purpose(product_id: str) -> str:
    """The purpose code of the grants of ``product_id``'s subscriptions (``pd_ab12`` ->
    ``product-pd-ab12``: purpose codes take no underscore)."""
    return PRODUCT_PURPOSE_PREFIX + product_id.replace("_", "-")


products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("dataset", sa.String(130), nullable=False, index=True),
    sa.Column("domain", sa.String(63), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),  # proposed|published|rejected|withdrawn
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("template", sa.Text, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("columns", sa.JSON, nullable=False),
    sa.Column("groupable", sa.JSON, nullable=False),
    sa.Column("price_per_run", sa.Integer, nullable=False),  # fen, commercial use
    sa.Column("terms", sa.Text, nullable=False),
    sa.Column("public_interest", sa.Text, nullable=False),  # conditions of free use
    sa.Column("proposed_by", sa.String(255), nullable=False),
    sa.Column("proposed_role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.String(_TS), nullable=False),
    sa.Column("decided_by", sa.String(255)),
    sa.Column("decided_at", sa.String(_TS)),
    sa.Column("reason", sa.Text),
)

product_subscriptions = sa.Table(
    "product_subscriptions",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("product", sa.String(24), sa.ForeignKey("products.id"), nullable=False, index=True),
    sa.Column("operator", sa.String(63), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),  # requested|active|rejected
    sa.Column("use", sa.String(16), nullable=False),
    sa.Column("release_mode", sa.String(16), nullable=False),
    sa.Column("purpose_text", sa.Text, nullable=False),
    sa.Column("duration_days", sa.Integer, nullable=False),
    sa.Column("requested_at", sa.String(_TS), nullable=False),
    sa.Column("decided_by", sa.String(255)),
    sa.Column("decided_at", sa.String(_TS)),
    sa.Column("reason", sa.Text),
    sa.Column("grant_id", sa.String(24)),
)

product_runs = sa.Table(
    "product_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("product", sa.String(24), sa.ForeignKey("products.id"), nullable=False, index=True),
    sa.Column("subscription", sa.String(24), nullable=False),
    sa.Column("operator", sa.String(63), nullable=False),
    sa.Column("at", sa.String(_TS), nullable=False),
    sa.Column("job", sa.String(64), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
)
