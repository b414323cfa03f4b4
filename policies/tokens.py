"""API tokens: 256 random bits, shown once, stored only as SHA-256, expiring, revocable.

A token is ``sbx_`` followed by 43 base64url characters (32 random bytes).
Because it is uniformly random, a plain SHA-256 is as strong as a slow
password hash here and costs microseconds per request.  The token's public id
(``tk_...``) names it for listing and revocation without revealing it.

A token is only ever shown to its own account: the holder asks for one with a
token it already has, or redeems an enrolment code the admin issued
(:mod:`policies.enrolments`).  ``created_by`` names who set its issue in motion
(the holder, or the admin who issued the code) and ``issued_via`` how; every
audit entry of its holder carries both (:meth:`policies.actors.Actor.audit_details`).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandbox.core.errors import InvalidInput, NotFound
from sandbox.core.policy_tables import bump_policy_version, tokens
from sandbox.core.timeutil import to_rfc3339

from .bearer import SECRET_BYTES, new_secret, secret_sha256

__all__ = [
    "MAX_TTL",
    "TOKEN_BYTES",
    "IssuedToken",
    "TokenRecord",
    "find_token",
    "hash_token",
    "insert_token",
    "list_tokens",
    "revoke_token",
    "token_account",
]

TOKEN_BYTES = SECRET_BYTES
TOKEN_PREFIX = "sbx_"
TOKEN_SHAPE = re.compile(r"^sbx_[A-Za-z0-9_-]{43}$")
MAX_TTL = timedelta(days=366)


@dataclass(frozen=True)
class IssuedToken:
    """The one moment a token exists in clear: returned to its holder, never stored."""

    id: str
    account: str
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenRecord:
    id: str
    account: str
    label: str
    created_at: str
    expires_at: datetime
    revoked_at: str | None
    created_by: str = ""
    issued_via: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> TokenRecord:
        return cls(
            id=row.id,
            account=row.account,
            label=row.label,
            created_at=row.created_at,
            expires_at=datetime.fromisoformat(row.expires_at),
            revoked_at=row.revoked_at,
            created_by=row.created_by,
            issued_via=row.issued_via,
        )


def hash_token(token: str) -> str | None:
    """SHA-256 of a well-formed token; None for anything that cannot be a token."""
    return secret_sha256(token, TOKEN_SHAPE)


def insert_token(
    conn: Connection,
    account: str,
    *,
    ttl: timedelta,
    by: str,
    now: datetime,
    label: str = "",
    via: str | None = None,
    token_sha256: str | None = None,
) -> IssuedToken:
    """Store a new token for ``account`` (the caller has checked who may receive it).

    With ``token_sha256`` the token was made by its holder and only its digest is
    stored: the returned ``token`` is empty (the server never knew it).
    """
    if not timedelta(0) < ttl <= MAX_TTL:
        raise InvalidInput("a token lives between 1 second and 366 days", rule="token.ttl")
    token = "" if token_sha256 is not None else new_secret(TOKEN_PREFIX)
    digest = token_sha256 if token_sha256 is not None else hash_token(token)
    assert digest is not None
    token_id = "tk_" + secrets.token_hex(8)
    expires = now + ttl
    conn.execute(
        sa.insert(tokens).values(
            id=token_id,
            token_sha256=digest,
            account=account,
            label=label,
            created_at=to_rfc3339(now),
            created_by=by,
            expires_at=to_rfc3339(expires),
            issued_via=via,
        )
    )
    return IssuedToken(id=token_id, account=account, token=token, expires_at=expires)


def revoke_token(conn: Connection, token_id: str, *, by: str, now: datetime) -> TokenRecord:
    result = conn.execute(
        sa.update(tokens)
        .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=to_rfc3339(now), revoked_by=by)
    )
    row = conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).first()
    if row is None:
        raise NotFound(f"no token {token_id}", rule="token.unknown")
    if result.rowcount:
        bump_policy_version(conn)
    return TokenRecord.from_row(row)


def find_token(conn: Connection, digest: str) -> TokenRecord | None:
    row = conn.execute(sa.select(tokens).where(tokens.c.token_sha256 == digest)).first()
    return None if row is None else TokenRecord.from_row(row)


def token_account(conn: Connection, token_id: str) -> str | None:
    return conn.execute(sa.select(tokens.c.account).where(tokens.c.id == token_id)).scalar()


def list_tokens(conn: Connection, account: str | None = None) -> list[TokenRecord]:
    query = sa.select(tokens).order_by(tokens.c.created_at)
    if account is not None:
        query = query.where(tokens.c.account == account)
    return [TokenRecord.from_row(row) for row in conn.execute(query)]
