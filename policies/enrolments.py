"""One-time enrolment codes: how an account gets its first token without the admin seeing it.

The admin (管理方) creates accounts but never acts as them (管运分离), so it never
holds another account's token.  Instead it issues an enrolment code for the
account: ``sbe_`` and 43 base64url characters (32 random bytes), short-lived
(:data:`MAX_CODE_TTL`), single-use, shown once and stored only as its SHA-256.
The account's holder redeems it for a token (``POST /v1/enrol`` or ``sandbox
token redeem``); issuing a new code voids the account's unused ones.

What remains: the admin sees the code before the holder does and could redeem it
first.  That cannot go unnoticed: the code is then spent for the real holder,
and every audit entry of the token it gave names the enrolment and the admin who
issued it (``token_issued_by``).

:func:`insert_enrolment` and :func:`redeem_enrolment` run inside the caller's
transaction and do no authorization (:class:`policies.admin.Administration` decides
and audits the issue); :func:`redeem` is the whole redemption, audited either way.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandbox.core.errors import AuthenticationError, InvalidInput
from sandbox.core.policy_tables import enrolments
from sandbox.core.timeutil import to_rfc3339

from .accounts import require_account
from .actors import AccountStatus
from .bearer import new_secret, secret_sha256
from .tokens import MAX_TTL, IssuedToken, insert_token

if TYPE_CHECKING:
    from .authority import Authority

__all__ = [
    "CODE_PREFIX",
    "MAX_CODE_TTL",
    "EnrolmentRefused",
    "IssuedEnrolment",
    "Redeemed",
    "hash_code",
    "insert_enrolment",
    "redeem",
    "redeem_enrolment",
]

CODE_PREFIX = "sbe_"
CODE_SHAPE = re.compile(r"^sbe_[A-Za-z0-9_-]{43}$")
MAX_CODE_TTL = timedelta(days=7)
"""The longest an enrolment code may wait for its holder."""


@dataclass(frozen=True)
class IssuedEnrolment:
    """The one moment a code exists in clear: returned to the admin, for the holder."""

    id: str
    account: str
    code: str
    expires_at: datetime
    token_ttl: timedelta


def hash_code(code: str) -> str | None:
    """SHA-256 of a well-formed code; None for anything that cannot be one."""
    return secret_sha256(code, CODE_SHAPE)


def insert_enrolment(
    conn: Connection,
    account: str,
    *,
    ttl: timedelta,
    token_ttl: timedelta,
    by: str,
    now: datetime,
    label: str = "",
) -> IssuedEnrolment:
    """A new code for ``account``; the account's earlier unused codes are voided."""
    if not timedelta(0) < ttl <= MAX_CODE_TTL:
        raise InvalidInput("an enrolment code lives between 1 second and 7 days", rule="token.ttl")
    if not timedelta(0) < token_ttl <= MAX_TTL:
        raise InvalidInput("a token lives between 1 second and 366 days", rule="token.ttl")
    stamp = to_rfc3339(now)
    conn.execute(
        sa.update(enrolments)
        .where(
            enrolments.c.account == account,
            enrolments.c.used_at.is_(None),
            enrolments.c.voided_at.is_(None),
        )
        .values(voided_at=stamp)
    )
    code = new_secret(CODE_PREFIX)
    digest = hash_code(code)
    assert digest is not None
    enrolment_id = "en_" + secrets.token_hex(8)
    expires = now + ttl
    conn.execute(
        sa.insert(enrolments).values(
            id=enrolment_id,
            code_sha256=digest,
            account=account,
            label=label,
            token_ttl_s=int(token_ttl.total_seconds()),
            created_at=stamp,
            created_by=by,
            expires_at=to_rfc3339(expires),
        )
    )
    return IssuedEnrolment(enrolment_id, account, code, expires, token_ttl)


class EnrolmentRefused(AuthenticationError):
    """A code that gives no token; names the enrolment when the code was a real one."""

    def __init__(self, message: str, *, rule: str, enrolment: str | None = None) -> None:
        super().__init__(message, rule=rule)
        self.enrolment = enrolment


@dataclass(frozen=True)
class Redeemed:
    """A redeemed code: the token it gave, and who issued the code."""

    enrolment: str
    issued_by: str
    token: IssuedToken


def redeem_enrolment(conn: Connection, code: str, *, now: datetime) -> Redeemed:
    """Spend ``code`` for a token of its account (one conditional UPDATE: once only).

    Refusals are :class:`EnrolmentRefused` (an authentication error: the code is a
    credential) with the rule ``enrolment.unknown``, ``enrolment.used`` (also a voided
    code) or ``enrolment.expired``.
    """
    digest = hash_code(code)
    row = None
    if digest is not None:
        row = conn.execute(sa.select(enrolments).where(enrolments.c.code_sha256 == digest)).first()
    if row is None:
        raise EnrolmentRefused("enrolment refused: unknown code", rule="enrolment.unknown")
    used = EnrolmentRefused(
        "enrolment refused: code already used", rule="enrolment.used", enrolment=row.id
    )
    if row.used_at is not None or row.voided_at is not None:
        raise used
    if now >= datetime.fromisoformat(row.expires_at):
        raise EnrolmentRefused(
            "enrolment refused: code expired", rule="enrolment.expired", enrolment=row.id
        )
    claimed = conn.execute(
        sa.update(enrolments)
        .where(
            enrolments.c.id == row.id,
            enrolments.c.used_at.is_(None),
            enrolments.c.voided_at.is_(None),
        )
        .values(used_at=to_rfc3339(now))
    ).rowcount
    if claimed != 1:
        raise used
    token = insert_token(
        conn,
        row.account,
        ttl=timedelta(seconds=row.token_ttl_s),
        by=row.created_by,
        now=now,
        label=row.label,
        via=f"enrolment:{row.id}",
    )
    conn.execute(sa.update(enrolments).where(enrolments.c.id == row.id).values(token_id=token.id))
    return Redeemed(enrolment=row.id, issued_by=row.created_by, token=token)


def redeem(
    authority: Authority, code: str, *, request_id: str | None = None, client: str | None = None
) -> IssuedToken:
    """Spend an enrolment code for a token of its account: the token row and the
    ``enrolment.redeem`` entry in one transaction (no entry, no token).

    A refusal is audited and raised as an :class:`AuthenticationError` with its rule; an
    unknown code goes through :meth:`Authority.refuse_anonymous`, like an unknown token.
    """
    entry: dict[str, Any] = {
        "action": "enrolment.redeem",
        "request_id": request_id,
        "client": client,
    }
    try:
        with authority.engine.begin() as conn:
            redeemed = redeem_enrolment(conn, code, now=authority.clock())
            holder = require_account(conn, redeemed.token.account)
            if holder.status is not AccountStatus.ACTIVE:
                raise AuthenticationError(
                    "enrolment refused: account disabled", rule="account.disabled"
                )
            authority.record(
                **entry,
                actor=holder.name,
                role=holder.role.value,
                target=f"account:{holder.name}",
                decision="allow",
                rule="allow.enrolment",
                details={
                    "enrolment": redeemed.enrolment,
                    "new_token_id": redeemed.token.id,
                    "expires_at": redeemed.token.expires_at.isoformat(),
                    "token_id": None,  # a code acted, not a token
                    "token_issued_by": None,
                    "enrolment_issued_by": redeemed.issued_by,
                },
            )
    except AuthenticationError as exc:
        if exc.rule == "enrolment.unknown":
            authority.refuse_anonymous(
                "enrolment.redeem", "enrolment", exc, request_id=request_id, client=client
            )
        else:
            enrolment = getattr(exc, "enrolment", None)
            authority.record(
                **entry,
                actor="anonymous",
                role="-",
                target=f"enrolment:{enrolment}" if enrolment else "enrolment",
                decision="deny",
                rule=exc.rule or exc.code,
                details={"reason": exc.message},
            )
        raise
    return redeemed.token
