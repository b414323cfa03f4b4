"""The jobs' control-plane tables: jobs, their results, and the server processes that run them."""

from __future__ import annotations

import sqlalchemy as sa

from sandbox.core.db import metadata

__all__ = ["job_results", "job_runners", "jobs"]

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("operator", sa.String(255), nullable=False, index=True),
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("sql", sa.Text, nullable=False),
    sa.Column("purpose", sa.String(63), nullable=True),
    sa.Column("format", sa.String(10), nullable=False),
    sa.Column("client", sa.String(255), nullable=True),
    sa.Column("token_id", sa.String(40), nullable=True),
    sa.Column("created_at", sa.String(40), nullable=False, index=True),
    sa.Column("started_at", sa.String(40), nullable=True),
    sa.Column("finished_at", sa.String(40), nullable=True),
    sa.Column("expires_at", sa.String(40), nullable=True, index=True),
    sa.Column("progress", sa.Float, nullable=False, default=0.0),
    sa.Column("runner", sa.String(40), nullable=True, index=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("rule", sa.String(80), nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("datasets", sa.JSON, nullable=False),
    sa.Column("review_datasets", sa.JSON, nullable=False),
    sa.Column("reviews", sa.JSON, nullable=False),
    sa.Column("meta", sa.JSON, nullable=True),
    sa.Column("receipt", sa.JSON, nullable=True),
    sa.Column("version", sa.Integer, nullable=False, default=0),
    # The ε the operator chose for this query (NULL: the grant's per-query ε).
    sa.Column("epsilon", sa.Float, nullable=True),
    # Its result waits for a bureau's review (known when it is submitted): the operator
    # sees one state until it ends (sandbox/jobs/held_view.py).
    sa.Column("review_bound", sa.Boolean, nullable=False, server_default=sa.false()),
    # The ε it was charged when submitted (a review-bound job, whose run waits behind held
    # runs: a charge when it runs would tell when they ended); NULL: charged when it runs.
    sa.Column("prepaid", sa.Float, nullable=True),
    # An operator's latest start, read by every claim (:meth:`JobStore._in_turn`).
    sa.Index("ix_jobs_operator_started", "operator", "started_at"),
    # An operator's queued and running jobs, counted by every submission
    # (:meth:`JobStore.active_count`): a range of this index, not a scan of its history.
    sa.Index("ix_jobs_operator_state", "operator", "state"),
)

job_results = sa.Table(
    "job_results",
    metadata,
    sa.Column("job_id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),  # released | held
    sa.Column("data", sa.LargeBinary, nullable=False),  # Arrow IPC stream
    sa.Column("cache_key", sa.String(64), nullable=True),
    # Null without a budget: no count of withheld groups is reported (docs/disclosure.md).
    sa.Column("groups_suppressed", sa.Integer, nullable=True),
    sa.Column("epsilon", sa.Float, nullable=False, default=0.0),
    sa.Column("cpu_ms", sa.Integer, nullable=False, default=0),
)
"""A job's result: the released table, or the desensitized table held for review."""

job_runners = sa.Table(
    "job_runners",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("heartbeat_at", sa.String(40), nullable=False),
    sa.Column("stopped_at", sa.String(40), nullable=True),
)
"""Server processes running jobs; a runner whose heartbeat stopped has died."""
