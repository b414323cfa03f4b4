"""Control-plane tables of the monitoring package, on :data:`sandbox.core.db.metadata`.

``monitor_alerts``: one row per alert, its lifecycle (open, acknowledged, resolved,
each with who, when and why), its evidence (audit seq numbers) and the responses
applied for it.  ``monitor_policies``: the response a bureau set for a dataset or
a grant (notify, hold, suspend, freeze) and from which severity it acts.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sandbox.core.db import metadata

__all__ = ["alerts", "create_tables", "policies"]

_TS = 40

alerts = sa.Table(
    "monitor_alerts",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("key", sa.String(400), nullable=False, index=True),
    sa.Column("detector", sa.String(40), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("operator", sa.String(63), nullable=False, index=True),
    sa.Column("dataset", sa.String(130), index=True),
    sa.Column("domain", sa.String(63), index=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("evidence", sa.JSON, nullable=False),
    sa.Column("responses", sa.JSON, nullable=False),
    sa.Column("opened_at", sa.String(_TS), nullable=False),
    sa.Column("updated_at", sa.String(_TS), nullable=False),
    sa.Column("acknowledged_by", sa.String(255)),
    sa.Column("acknowledged_at", sa.String(_TS)),
    sa.Column("acknowledged_reason", sa.Text),
    sa.Column("resolved_by", sa.String(255)),
    sa.Column("resolved_at", sa.String(_TS)),
    sa.Column("resolved_reason", sa.Text),
)

policies = sa.Table(
    "monitor_policies",
    metadata,
    sa.Column("scope", sa.String(16), primary_key=True),  # dataset | grant
    sa.Column("target", sa.String(130), primary_key=True),
    sa.Column("domain", sa.String(63), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("min_severity", sa.String(16), nullable=False),
    sa.Column("set_by", sa.String(255), nullable=False),
    sa.Column("set_at", sa.String(_TS), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)


def create_tables(engine: Engine) -> None:
    """Create the monitoring tables if missing (idempotent)."""
    metadata.create_all(engine, tables=[alerts, policies])
