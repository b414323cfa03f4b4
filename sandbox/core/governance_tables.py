"""Control-plane tables of the governance procedures, declared on :data:`sandbox.core.db.metadata`.

Registration applications with their objections and steps, grant applications with
their steps.  Every step is one row in an ``*_events`` table written in the same
transaction as the state it changes (and its audit entry): the record both sides see.
Timestamps are RFC 3339 strings in UTC, as in ``sandbox.core.policy_tables``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from sandbox.core.db import metadata

__all__ = [
    "grant_application_events",
    "grant_applications",
    "registration_applications",
    "registration_events",
    "registration_objections",
]

_TS = 40


def _step_columns() -> list[sa.Column[Any]]:
    """What every ``*_events`` row records: when, who (name and role), the step, and the
    state it moved the application from and to."""
    return [
        sa.Column("at", sa.String(_TS), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16), nullable=False),
    ]


registration_applications = sa.Table(
    "registration_applications",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("dataset", sa.String(130), nullable=False, index=True),
    sa.Column("domain", sa.String(63), nullable=False, index=True),
    sa.Column("form", sa.String(8), nullable=False),  # full | short
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("applicant", sa.String(255), nullable=False),
    sa.Column("applied_at", sa.String(_TS), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("update_frequency", sa.String(40), nullable=False),
    sa.Column("listing", sa.JSON, nullable=False),  # price terms the bureau offers
    sa.Column("classification", sa.JSON, nullable=False),
    sa.Column("classification_sha256", sa.String(64), nullable=False),
    sa.Column("source", sa.JSON, nullable=False),  # staged file, name, format, sha256, bytes
    # Where the issued version's rows go: "duckdb" (the enclave) or "spark" (the warehouse).
    sa.Column("engine", sa.String(16), nullable=False, server_default="duckdb"),
    sa.Column("accepted_by", sa.String(255)),
    sa.Column("accepted_at", sa.String(_TS)),
    sa.Column("reviewed_by", sa.String(255)),
    sa.Column("reviewed_at", sa.String(_TS)),
    sa.Column("review_comment", sa.Text),
    sa.Column("publicity_from", sa.String(_TS)),
    sa.Column("publicity_until", sa.String(_TS)),
    sa.Column("issued_by", sa.String(255)),
    sa.Column("issued_at", sa.String(_TS)),
    sa.Column("version", sa.Integer),  # the dataset version the certificate names
    # Set while one administrator's issue loads the file: a second one is refused.
    sa.Column("issuing_since", sa.String(_TS)),
    sa.Column("updated_at", sa.String(_TS), nullable=False),
)

registration_objections = sa.Table(
    "registration_objections",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column(
        "application",
        sa.String(24),
        sa.ForeignKey("registration_applications.id"),
        nullable=False,
        index=True,
    ),
    sa.Column("filed_by", sa.String(255), nullable=False),
    sa.Column("filed_role", sa.String(16), nullable=False),
    sa.Column("filed_at", sa.String(_TS), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open | upheld | dismissed
    sa.Column("resolved_by", sa.String(255)),
    sa.Column("resolved_at", sa.String(_TS)),
    sa.Column("resolution", sa.Text),
)

registration_events = sa.Table(
    "registration_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "application",
        sa.String(24),
        sa.ForeignKey("registration_applications.id"),
        nullable=False,
        index=True,
    ),
    *_step_columns(),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("objection", sa.String(24)),
)

grant_applications = sa.Table(
    "grant_applications",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("dataset", sa.String(130), nullable=False, index=True),
    sa.Column("domain", sa.String(63), nullable=False, index=True),
    sa.Column("operator", sa.String(63), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("submitted_at", sa.String(_TS), nullable=False),
    sa.Column("asked", sa.JSON, nullable=False),  # purpose, columns, duration, use, mode
    sa.Column("decided_by", sa.String(255)),
    sa.Column("decided_at", sa.String(_TS)),
    sa.Column("reason", sa.Text),
    sa.Column("amendments", sa.JSON),  # {term: {"asked": …, "granted": …}}
    sa.Column("grant_id", sa.String(24)),
    # Set while the bureau's approval issues the grant: nothing else decides it meanwhile.
    sa.Column("deciding_since", sa.String(_TS)),
    sa.Column("updated_at", sa.String(_TS), nullable=False),
    # The admin's approval of strictly limited items (negative list): admin, at, items, reason.
    sa.Column("co_approval", sa.JSON),
)

grant_application_events = sa.Table(
    "grant_application_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("application", sa.String(24), sa.ForeignKey("grant_applications.id"), nullable=False),
    *_step_columns(),
    sa.Column("reason", sa.Text, nullable=False),
)

# The negative list and the important-data catalog declare their tables on import.
from sandbox.core import data_controls as _data_controls  # noqa: E402, F401
