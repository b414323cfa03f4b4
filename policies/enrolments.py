"""One-time enrolment codes: how an account gets its first token without the admin holding it.

The admin (管理方) creates accounts but never acts as them (管运分离), so it never
holds another account's token.  Instead it issues an enrolment code for the
account: ``sbe_`` and 43 base64url characters (32 random bytes), short-lived
(:data:`MAX_CODE_TTL`), single-use, shown once and stored only as its SHA-256;
issuing a new code voids the account's unused ones.

A code alone would not keep the admin out: it sees the code before the holder does
and could redeem it first.  So a code issued by an admin *account* gives no token.
Its redemption (``sandbox token redeem``, ``POST /v1/enrol`` with ``token_sha256``)
carries the SHA-256 of a token the holder made on its own machine, and is only a
pending request.  A second administrator (another admin account, or the host
console) approves it (:func:`approve_enrolment`), typing the request's fingerprint as
the holder reads it to them; the administrator who issued the code may not
(``enrolment.same_admin``).  The token then exists as the holder made it: the server,
the issuing admin and the approver never see it, and no single administrator can
bring about a token of another account (every account, admin accounts included, so
an admin cannot enrol a second admin of its own to approve for it).

A code the host console issues (the deployment's owner on the enclave host, who holds
the keys and databases and so cannot be bound by the application) is redeemed for a
token at once, as before; that is how the first administrators and the demo start.

:func:`insert_enrolment`, :func:`redeem_enrolment` and :func:`approve_enrolment` run
inside the caller's transaction and do no authorization
(:class:`policies.admin.Administration` decides and audits issue and approval);
:func:`redeem` is the whole redemption, audited either way.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandbox.core.errors import AuthenticationError, Conflict, Forbidden, InvalidInput, NotFound
from sandbox.core.policy_tables import enrolments, tokens
from sandbox.core.timeutil import to_rfc3339

from .accounts import require_account
from .actors import AccountStatus
from .bearer import DIGEST_SHAPE, fingerprint, new_secret, same_fingerprint, secret_sha256
from .tokens import MAX_TTL, IssuedToken, insert_token

if TYPE_CHECKING:
    from .authority import Authority

__all__ = [
    "CODE_PREFIX",
    "MAX_CODE_TTL",
    "EnrolmentRefused",
    "IssuedEnrolment",
    "Redeemed",
    "approve_enrolment",
    "enrolment_account",
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
    needs_approval: bool = True


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
    needs_approval: bool = True,
) -> IssuedEnrolment:
    """A new code for ``account``; the account's earlier unused codes are voided.

    ``needs_approval``: its redemption is a pending request that a second administrator
    approves (every code but the host console's)."""
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
            needs_approval=needs_approval,
        )
    )
    return IssuedEnrolment(enrolment_id, account, code, expires, token_ttl, needs_approval)


class EnrolmentRefused(AuthenticationError):
    """A code that gives no token; names the enrolment when the code was a real one."""

    def __init__(self, message: str, *, rule: str, enrolment: str | None = None) -> None:
        super().__init__(message, rule=rule)
        self.enrolment = enrolment


@dataclass(frozen=True)
class Redeemed:
    """A redeemed code: the token it gave (None while a second approval is pending), who
    issued the code, and the fingerprint of a holder-made token."""

    enrolment: str
    account: str
    issued_by: str
    token: IssuedToken | None
    fingerprint: str | None = None

    @property
    def pending(self) -> bool:
        return self.token is None


def _holder_digest(token_sha256: str | None, enrolment: str) -> str | None:
    if token_sha256 is None:
        return None
    if not DIGEST_SHAPE.match(token_sha256):
        raise EnrolmentRefused(
            "enrolment refused: token_sha256 must be the SHA-256 of your token, as 64 "
            "lowercase hexadecimal digits",
            rule="enrolment.token_hash",
            enrolment=enrolment,
        )
    return token_sha256


def redeem_enrolment(
    conn: Connection, code: str, *, now: datetime, token_sha256: str | None = None
) -> Redeemed:
    """Spend ``code`` (one conditional UPDATE: once only): a token of its account, or, for
    a code that needs approval, a pending request for the holder-made ``token_sha256``.

    Refusals are :class:`EnrolmentRefused` (an authentication error: the code is a
    credential) with the rule ``enrolment.unknown``, ``enrolment.used`` (also a voided
    code), ``enrolment.expired``, ``enrolment.token_hash`` (a malformed digest) or
    ``enrolment.holder_token`` (a code that needs approval, redeemed without a digest:
    the code is not spent).
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
    holder_digest = _holder_digest(token_sha256, row.id)
    if row.needs_approval and holder_digest is None:
        raise EnrolmentRefused(
            "enrolment refused: this code gives a token only with a second administrator's "
            "approval, for a token you make yourself; redeem it with `sandbox token redeem`, "
            "or send token_sha256 (the SHA-256 of your sbx_ token)",
            rule="enrolment.holder_token",
            enrolment=row.id,
        )
    if (
        holder_digest is not None
        and conn.execute(
            sa.select(tokens.c.id).where(tokens.c.token_sha256 == holder_digest)
        ).first()
    ):
        raise EnrolmentRefused(
            "enrolment refused: that token is already in use; make a new one",
            rule="enrolment.token_hash",
            enrolment=row.id,
        )
    claimed = conn.execute(
        sa.update(enrolments)
        .where(
            enrolments.c.id == row.id,
            enrolments.c.used_at.is_(None),
            enrolments.c.voided_at.is_(None),
        )
        .values(used_at=to_rfc3339(now), token_sha256=holder_digest)
    ).rowcount
    if claimed != 1:
        raise used
    told = None if holder_digest is None else fingerprint(holder_digest)
    if row.needs_approval:
        return Redeemed(row.id, row.account, row.created_by, None, told)
    token = _enrolment_token(conn, row, holder_digest, now)
    return Redeemed(row.id, row.account, row.created_by, token, told)


def _enrolment_token(
    conn: Connection, row: Any, token_sha256: str | None, now: datetime
) -> IssuedToken:
    """The token an enrolment gives (by whoever issued the code), recorded on the enrolment."""
    token = insert_token(
        conn,
        row.account,
        ttl=timedelta(seconds=row.token_ttl_s),
        by=row.created_by,
        now=now,
        label=row.label,
        via=f"enrolment:{row.id}",
        token_sha256=token_sha256,
    )
    conn.execute(sa.update(enrolments).where(enrolments.c.id == row.id).values(token_id=token.id))
    return token


def enrolment_account(conn: Connection, enrolment_id: str) -> str:
    """The account an enrolment is for (``enrolment.unknown`` if there is none)."""
    account = conn.execute(
        sa.select(enrolments.c.account).where(enrolments.c.id == enrolment_id)
    ).scalar()
    if account is None:
        raise NotFound(f"no enrolment {enrolment_id}", rule="enrolment.unknown")
    return str(account)


def approve_enrolment(
    conn: Connection, enrolment_id: str, told: str, *, by: str, now: datetime
) -> tuple[IssuedToken, str]:
    """A second administrator's approval of a redeemed code: the holder-made token comes
    into existence (returned with an empty ``token``), with the code's issuer.

    ``told`` is the fingerprint as the holder read it to ``by``.  Refused: by the code's
    issuer (``enrolment.same_admin``), for a code not waiting for approval
    (``enrolment.not_pending``), past the code's expiry (``enrolment.expired``), or with
    another fingerprint (``enrolment.fingerprint``).
    """
    row = conn.execute(sa.select(enrolments).where(enrolments.c.id == enrolment_id)).first()
    if row is None:
        raise NotFound(f"no enrolment {enrolment_id}", rule="enrolment.unknown")
    if by == row.created_by:
        raise Forbidden(
            f"you issued enrolment {enrolment_id}: another administrator approves it "
            "(two people bring a token of another account about, never one)",
            rule="enrolment.same_admin",
        )
    if (
        not row.needs_approval
        or row.used_at is None
        or row.token_sha256 is None
        or (row.token_id is not None or row.voided_at is not None)
    ):
        raise Conflict(
            f"enrolment {enrolment_id} is not waiting for approval (not redeemed yet, "
            "already approved, or a code that needs none)",
            rule="enrolment.not_pending",
        )
    if now >= datetime.fromisoformat(row.expires_at):
        raise Conflict(
            f"enrolment {enrolment_id} expired before its approval: issue a new code",
            rule="enrolment.expired",
        )
    if not same_fingerprint(told, row.token_sha256):
        raise Forbidden(
            "that is not the fingerprint of the token redeemed with this code: ask its "
            "holder to read it again (sandbox token redeem printed it); if the holder never "
            "redeemed this code, someone else did: issue a new one",
            rule="enrolment.fingerprint",
        )
    claimed = conn.execute(
        sa.update(enrolments)
        .where(enrolments.c.id == row.id, enrolments.c.approved_at.is_(None))
        .values(approved_by=by, approved_at=to_rfc3339(now))
    ).rowcount
    if claimed != 1:
        raise Conflict(
            f"enrolment {enrolment_id} is not waiting for approval", rule="enrolment.not_pending"
        )
    return _enrolment_token(conn, row, row.token_sha256, now), row.created_by


def redeem(
    authority: Authority,
    code: str,
    *,
    token_sha256: str | None = None,
    request_id: str | None = None,
    client: str | None = None,
) -> Redeemed:
    """Spend an enrolment code: the token row (or the pending request) and the
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
            redeemed = redeem_enrolment(
                conn, code, now=authority.clock(), token_sha256=token_sha256
            )
            holder = require_account(conn, redeemed.account)
            if holder.status is not AccountStatus.ACTIVE:
                raise AuthenticationError(
                    "enrolment refused: account disabled", rule="account.disabled"
                )
            token = redeemed.token
            authority.record(
                **entry,
                actor=holder.name,
                role=holder.role.value,
                target=f"account:{holder.name}",
                decision="allow",
                rule="allow.enrolment" if token else "allow.enrolment_pending",
                details={
                    "enrolment": redeemed.enrolment,
                    "new_token_id": token.id if token else None,
                    "expires_at": token.expires_at.isoformat() if token else None,
                    "holder_made": token_sha256 is not None,
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
    return redeemed
