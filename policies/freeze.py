"""Emergency freeze (应急处置) of a dataset or an operator: state, history, version bump.

A frozen dataset refuses every query that touches it; a frozen operator
refuses every query it submits.  Reading one's own records, and a bureau's
grant management, go on (they release no data).  The freeze takes effect on
the next decision on every API server because it bumps the policy version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandbox.core.db import datasets
from sandbox.core.errors import InvalidInput, NotFound
from sandbox.core.policy_tables import bump_policy_version, freezes
from sandbox.core.timeutil import to_rfc3339

from .accounts import require_account, set_account_frozen
from .actors import Role

__all__ = ["freeze_history", "set_dataset_frozen", "set_operator_frozen"]


def _log(
    conn: Connection, kind: str, target: str, frozen: bool, by: str, now: datetime, reason: str
) -> None:
    conn.execute(
        sa.insert(freezes).values(
            kind=kind,
            target=target,
            action="freeze" if frozen else "unfreeze",
            at=to_rfc3339(now),
            by=by,
            reason=reason,
        )
    )


def set_dataset_frozen(
    conn: Connection, dataset_id: str, frozen: bool, *, by: str, now: datetime, reason: str = ""
) -> bool:
    """Freeze or unfreeze; returns whether the state changed."""
    current = conn.execute(sa.select(datasets.c.frozen).where(datasets.c.id == dataset_id)).first()
    if current is None:
        raise NotFound(f"dataset {dataset_id} is not registered", rule="dataset.unknown")
    if bool(current[0]) == frozen:
        return False
    conn.execute(sa.update(datasets).where(datasets.c.id == dataset_id).values(frozen=frozen))
    _log(conn, "dataset", dataset_id, frozen, by, now, reason)
    bump_policy_version(conn)
    return True


def set_operator_frozen(
    conn: Connection, name: str, frozen: bool, *, by: str, now: datetime, reason: str = ""
) -> bool:
    account = require_account(conn, name)
    if account.role is not Role.OPERATOR:
        raise InvalidInput(f"'{name}' is not an operator", rule="freeze.not_operator")
    if account.frozen == frozen:
        return False
    set_account_frozen(conn, name, frozen, now=now)
    _log(conn, "operator", name, frozen, by, now, reason)
    return True


def freeze_history(conn: Connection, target: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(freezes).order_by(freezes.c.id)
    if target is not None:
        query = query.where(freezes.c.target == target)
    return [dict(row._mapping) for row in conn.execute(query)]
