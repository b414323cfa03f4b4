"""Who a job acts as when it runs or is released: its operator, with the token that submitted it.

A job runs in a worker thread long after its request, so its actor is rebuilt from
the control plane: the operator's account as it is now, and the submitting token
(``jobs.token_id``), whose id and issuer every audit entry of the job names.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from policies import Actor
from policies.accounts import get_account
from sandbox.core.errors import Forbidden
from sandbox.core.policy_tables import tokens
from sandbox.jobs.store import Job

__all__ = ["job_actor", "token_details"]


def job_actor(engine: Engine, job: Job) -> Actor:
    """The job's operator now, acting with the token that submitted the job.

    Refused if the account is gone or the token was revoked.
    """
    with engine.connect() as conn:
        account = get_account(conn, job.operator)
        token = (
            None
            if job.token_id is None
            else conn.execute(
                sa.select(tokens.c.revoked_at, tokens.c.created_by).where(
                    tokens.c.id == job.token_id
                )
            ).first()
        )
    if account is None:
        raise Forbidden(f"account {job.operator} no longer exists", rule="account.unknown")
    if token is not None and token.revoked_at is not None:
        raise Forbidden("the token that submitted the job was revoked", rule="auth.token_revoked")
    return Actor.of(
        account,
        token_id=job.token_id,
        token_issued_by=None if token is None else token.created_by,
    )


def token_details(engine: Engine, job: Job) -> dict[str, str | None]:
    """The audit details naming the token that submitted ``job`` and who issued it."""
    issued_by = None
    if job.token_id is not None:
        with engine.connect() as conn:
            issued_by = conn.execute(
                sa.select(tokens.c.created_by).where(tokens.c.id == job.token_id)
            ).scalar()
    return {"token_id": job.token_id, "token_issued_by": issued_by}
