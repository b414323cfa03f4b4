"""Control-plane tables of the authorization package, declared on :data:`sandbox.core.db.metadata`.

Accounts, tokens, grants and their versions, freezes, the usage and budget
ledgers, and the Casbin rule table the SQLAlchemy adapter reads.  Grants live
in indexed SQL rows (not Casbin lines) so a decision costs an index lookup, not
a scan of every policy line.

``policy_state`` holds one monotonically increasing ``version``.  Every change
that can alter a decision (account, token, grant, freeze, Casbin rule) bumps it
in the same transaction, and every API server compares it before each decision:
that is how a change made on one server takes effect on the next decision
everywhere, with no restart and no message bus.

Timestamps are RFC 3339 strings in UTC (``sandbox.core.timeutil``), which compare
correctly as text on SQLite and PostgreSQL alike.  Money is integer fen (0.01
CNY) and epsilon integer micro-units (1e-6), so ledgers add up exactly.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandbox.core.db import metadata

__all__ = [
    "EPSILON_SCALE",
    "POLICY_VERSION",
    "RULES_VERSION",
    "accounts",
    "budget_spends",
    "bump_policy_version",
    "casbin_rule",
    "enrolments",
    "freezes",
    "grant_budgets",
    "grant_versions",
    "grants",
    "policy_state",
    "tokens",
    "usage_daily",
]

EPSILON_SCALE = 1_000_000
"""Epsilon is stored in integer micro-units: 1.0 == 1_000_000."""

_TS = 40  # an RFC 3339 timestamp

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("organisation", sa.Text, nullable=False),
    sa.Column("domains", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("frozen", sa.Boolean, nullable=False, default=False),
    sa.Column("licence_number", sa.String(64)),
    sa.Column("licence_valid_until", sa.String(_TS)),
    sa.Column("licence_status", sa.String(16)),
    sa.Column("created_at", sa.String(_TS), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("updated_at", sa.String(_TS), nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("account", sa.String(63), sa.ForeignKey("accounts.name"), nullable=False, index=True),
    sa.Column("label", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.String(_TS), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("expires_at", sa.String(_TS), nullable=False),
    sa.Column("revoked_at", sa.String(_TS)),
    sa.Column("revoked_by", sa.String(255)),
    # How it came to be: ``enrolment:en_…`` (an admin's code, redeemed by the holder) or
    # ``token:tk_…`` (the holder's own request, made with that token); NULL before both.
    sa.Column("issued_via", sa.String(40)),
)

enrolments = sa.Table(
    "enrolments",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("code_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("account", sa.String(63), sa.ForeignKey("accounts.name"), nullable=False, index=True),
    sa.Column("label", sa.Text, nullable=False, default=""),
    sa.Column("token_ttl_s", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.String(_TS), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("expires_at", sa.String(_TS), nullable=False),
    sa.Column("used_at", sa.String(_TS)),
    sa.Column("token_id", sa.String(24)),
    sa.Column("voided_at", sa.String(_TS)),
    sa.Column("needs_approval", sa.Boolean),
    sa.Column("token_sha256", sa.String(64)),
    sa.Column("approved_by", sa.String(255)),
    sa.Column("approved_at", sa.String(_TS)),
)
"""One-time enrolment codes: the admin issues one for an account, its holder redeems it
for a token (the admin never sees a token of another account).  Stored as SHA-256.
A code an admin account issued (``needs_approval``) gives no token when redeemed: it
records the SHA-256 of a token the holder made, and a second administrator's approval
(``approved_by``) brings that token about (``policies/enrolments.py``)."""

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("dataset_id", sa.String(130), nullable=False),
    sa.Column("operator", sa.String(63), sa.ForeignKey("accounts.name"), nullable=False),
    sa.Column("issued_by", sa.String(255), nullable=False),
    sa.Column("purpose_code", sa.String(63), nullable=False),
    sa.Column("purpose_text", sa.Text, nullable=False),
    sa.Column("valid_from", sa.String(_TS), nullable=False),
    sa.Column("valid_until", sa.String(_TS), nullable=False),
    sa.Column("max_level", sa.Integer, nullable=False),
    sa.Column("columns", sa.JSON),
    sa.Column("groupable", sa.JSON, nullable=False),
    sa.Column("k", sa.Integer, nullable=False),
    sa.Column("epsilon_total", sa.BigInteger),
    sa.Column("epsilon_per_query", sa.BigInteger),
    sa.Column("queries_per_day", sa.BigInteger),
    sa.Column("rows_per_day", sa.BigInteger),
    sa.Column("review_required", sa.Boolean, nullable=False),
    # ``dp`` or ``reviewed`` (policies.grant_terms.ReleaseMode).  NULL only in a database of
    # the previous schema until policies.grants.migrate_release_modes has run; read as the
    # migration would set it meanwhile (never exact unreviewed).
    sa.Column("release_mode", sa.String(16)),
    # Disclosure terms: the (n, p) dominance rule (p NULL: off) and rounding (NULL: none).
    sa.Column("dominance_n", sa.Integer, nullable=False, server_default="2"),
    sa.Column("dominance_p", sa.Float, server_default="0.9"),
    sa.Column("round_digits", sa.Integer, server_default="2"),
    # Contribution bounds narrower than the dataset's [contribution] (NULL: the dataset's).
    sa.Column("max_rows_per_entity", sa.Integer),
    sa.Column("max_groups_per_entity", sa.Integer),
    sa.Column("use", sa.String(16), nullable=False),
    sa.Column("price_per_query", sa.BigInteger, nullable=False),
    sa.Column("price_per_million_rows", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.String(_TS), nullable=False),
    sa.Column("updated_at", sa.String(_TS), nullable=False),
    sa.Index("ix_grants_operator_dataset", "operator", "dataset_id"),
    sa.Index("ix_grants_dataset", "dataset_id"),
)

grant_versions = sa.Table(
    "grant_versions",
    metadata,
    sa.Column("grant_id", sa.String(24), sa.ForeignKey("grants.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("change", sa.String(16), nullable=False),
    sa.Column("changed_at", sa.String(_TS), nullable=False),
    sa.Column("changed_by", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("terms", sa.JSON, nullable=False),
)

freezes = sa.Table(
    "freezes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("target", sa.String(130), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("at", sa.String(_TS), nullable=False),
    sa.Column("by", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
)

policy_state = sa.Table(
    "policy_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("grant_id", sa.String(24), sa.ForeignKey("grants.id"), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("operator", sa.String(63), nullable=False),
    sa.Column("dataset_id", sa.String(130), nullable=False),
    sa.Column("queries", sa.BigInteger, nullable=False, default=0),
    sa.Column("joined_queries", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_scanned", sa.BigInteger, nullable=False, default=0),
    sa.Column("cpu_ms", sa.BigInteger, nullable=False, default=0),
    sa.Column("epsilon_spent", sa.BigInteger, nullable=False, default=0),
    sa.Column("query_fee", sa.BigInteger, nullable=False, default=0),
    sa.Column("row_fee", sa.BigInteger, nullable=False, default=0),
    sa.Index("ix_usage_operator_day", "operator", "day"),
    sa.Index("ix_usage_dataset_day", "dataset_id", "day"),
)

grant_budgets = sa.Table(
    "grant_budgets",
    metadata,
    sa.Column("grant_id", sa.String(24), sa.ForeignKey("grants.id"), primary_key=True),
    sa.Column("spent", sa.BigInteger, nullable=False, default=0),
)

budget_spends = sa.Table(
    "budget_spends",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("grant_id", sa.String(24), sa.ForeignKey("grants.id"), nullable=False, index=True),
    sa.Column("at", sa.String(_TS), nullable=False),
    sa.Column("epsilon", sa.BigInteger, nullable=False),
    sa.Column("ref", sa.String(255), nullable=False, default=""),
)

casbin_rule = sa.Table(
    "casbin_rule",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ptype", sa.String(255)),
    *(sa.Column(f"v{i}", sa.String(255)) for i in range(6)),
)


POLICY_VERSION, RULES_VERSION = 1, 2
"""Rows of ``policy_state``: every change bumps the first; Casbin rule changes also the second."""

sa.event.listen(
    policy_state,
    "after_create",
    sa.DDL("INSERT INTO policy_state (id, version) VALUES (1, 0), (2, 0)"),
)


def bump_policy_version(conn: Connection, *, rules: bool = False) -> int:
    """Advance the policy version inside the caller's transaction; returns the new version.

    ``rules=True`` also advances the Casbin rules version, which makes every server
    reload its enforcer: pass it after changing ``casbin_rule`` (by hand, too).
    """
    ids = [POLICY_VERSION, RULES_VERSION] if rules else [POLICY_VERSION]
    conn.execute(
        sa.update(policy_state)
        .where(policy_state.c.id.in_(ids))
        .values(version=policy_state.c.version + 1)
    )
    return int(
        conn.execute(
            sa.select(policy_state.c.version).where(policy_state.c.id == POLICY_VERSION)
        ).scalar_one()
    )
