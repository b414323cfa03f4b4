"""Account storage: rows in ``accounts`` plus their Casbin role links, changed together.

These functions run inside the caller's transaction and do no authorization;
:class:`policies.admin.Administration` authorizes and audits each change.
Every change bumps the policy version so cached decisions everywhere drop.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandbox.core.errors import Conflict, InvalidInput, NotFound
from sandbox.core.policy_tables import accounts, bump_policy_version
from sandbox.core.timeutil import to_rfc3339

from .actors import (
    Account,
    AccountStatus,
    Licence,
    LicenceStatus,
    Role,
    validate_account_name,
    validate_domain,
)
from .enforcer import role_links, write_role_links

__all__ = [
    "get_account",
    "insert_account",
    "list_accounts",
    "require_account",
    "set_account_frozen",
    "set_account_status",
    "set_licence",
]


def get_account(conn: Connection, name: str) -> Account | None:
    row = conn.execute(sa.select(accounts).where(accounts.c.name == name)).first()
    return None if row is None else Account.from_row(row)


def require_account(conn: Connection, name: str) -> Account:
    account = get_account(conn, name)
    if account is None:
        raise NotFound(f"account '{name}' does not exist", rule="account.unknown")
    return account


def list_accounts(conn: Connection, role: Role | None = None) -> list[Account]:
    query = sa.select(accounts).order_by(accounts.c.name)
    if role is not None:
        query = query.where(accounts.c.role == role.value)
    return [Account.from_row(row) for row in conn.execute(query)]


def _licence_values(licence: Licence | None) -> dict[str, str | None]:
    if licence is None:
        return {"licence_number": None, "licence_valid_until": None, "licence_status": None}
    if not licence.number.strip():
        raise InvalidInput("a licence needs a number", rule="account.licence")
    if licence.valid_until.tzinfo is None:
        raise InvalidInput("licence validity needs a time zone", rule="account.licence")
    return {
        "licence_number": licence.number,
        "licence_valid_until": to_rfc3339(licence.valid_until),
        "licence_status": LicenceStatus(licence.status).value,
    }


def insert_account(conn: Connection, account: Account, *, by: str, now: datetime) -> Account:
    """Create an account and its role links; the role decides what else it needs."""
    validate_account_name(account.name)
    domains = tuple(sorted({validate_domain(d) for d in account.domains}))
    if account.role is Role.BUREAU and not domains:
        raise InvalidInput("a bureau account needs at least one domain", rule="account.domain")
    if account.role is not Role.BUREAU and domains:
        raise InvalidInput("only bureau accounts are scoped to domains", rule="account.domain")
    if account.role is Role.OPERATOR and account.licence is None:
        raise InvalidInput("an operator account needs a licence", rule="account.licence")
    if account.role is not Role.OPERATOR and account.licence is not None:
        raise InvalidInput("only operator accounts carry a licence", rule="account.licence")
    if not account.organisation.strip():
        raise InvalidInput("an account needs an organisation name", rule="account.organisation")
    if get_account(conn, account.name) is not None:
        raise Conflict(f"account '{account.name}' already exists", rule="account.exists")
    stamp = to_rfc3339(now)
    created = replace(
        account,
        domains=domains,
        status=AccountStatus.ACTIVE,
        frozen=False,
        created_at=stamp,
        created_by=by,
    )
    conn.execute(
        sa.insert(accounts).values(
            name=created.name,
            role=created.role.value,
            organisation=created.organisation,
            domains=list(domains),
            status=created.status.value,
            frozen=False,
            created_at=stamp,
            created_by=by,
            updated_at=stamp,
            **_licence_values(created.licence),
        )
    )
    write_role_links(conn, created.name, role_links(created))
    bump_policy_version(conn, rules=True)
    return created


def _update(conn: Connection, name: str, now: datetime, **values: object) -> Account:
    result = conn.execute(
        sa.update(accounts)
        .where(accounts.c.name == name)
        .values(updated_at=to_rfc3339(now), **values)
    )
    if result.rowcount != 1:
        raise NotFound(f"account '{name}' does not exist", rule="account.unknown")
    bump_policy_version(conn)
    return require_account(conn, name)


def set_account_status(
    conn: Connection, name: str, status: AccountStatus, *, now: datetime
) -> Account:
    return _update(conn, name, now, status=AccountStatus(status).value)


def set_account_frozen(conn: Connection, name: str, frozen: bool, *, now: datetime) -> Account:
    return _update(conn, name, now, frozen=frozen)


def set_licence(
    conn: Connection,
    name: str,
    *,
    now: datetime,
    number: str | None = None,
    valid_until: datetime | None = None,
    status: LicenceStatus | None = None,
) -> Account:
    """Change an operator's licence (准入与退出): number, validity, status."""
    account = require_account(conn, name)
    if account.role is not Role.OPERATOR or account.licence is None:
        raise InvalidInput("only operator accounts carry a licence", rule="account.licence")
    licence = replace(
        account.licence,
        **cast(
            "dict[str, Any]",
            {
                k: v
                for k, v in (("number", number), ("valid_until", valid_until), ("status", status))
                if v is not None
            },
        ),
    )
    return _update(conn, name, now, **_licence_values(licence))
