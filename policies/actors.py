"""Who acts: roles, accounts, operator licences, and the authenticated :class:`Actor`."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandbox.core.errors import InvalidInput

__all__ = [
    "HOST_SUBJECT",
    "Account",
    "AccountStatus",
    "Actor",
    "Licence",
    "LicenceStatus",
    "Role",
    "validate_account_name",
    "validate_domain",
]

ACCOUNT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
DOMAIN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
HOST_SUBJECT = "host"
"""Casbin subject of the host console; ``policy.csv`` links it to the admin role."""
RESERVED_NAMES = frozenset({HOST_SUBJECT, "anonymous", "platform", "system"})


class Role(enum.StrEnum):
    OPERATOR = "operator"
    BUREAU = "bureau"
    AUDITOR = "auditor"
    ADMIN = "admin"


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class LicenceStatus(enum.StrEnum):
    """An operator's admission (准入): active, suspended (temporarily), withdrawn (退出)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    WITHDRAWN = "withdrawn"


def validate_account_name(name: str) -> str:
    if not ACCOUNT_NAME.match(name or "") or name in RESERVED_NAMES:
        raise InvalidInput(
            "an account name is 2-63 lower-case letters, digits and '-', starting with a letter"
            f" (reserved: {', '.join(sorted(RESERVED_NAMES))})",
            rule="account.name",
        )
    return name


def validate_domain(domain: str) -> str:
    if not DOMAIN_NAME.match(domain or "") or domain == "platform":
        raise InvalidInput(
            "a domain is a lower-case identifier (letters, digits, '_'), not 'platform'",
            rule="account.domain",
        )
    return domain


@dataclass(frozen=True, kw_only=True)
class Licence:
    """An operator's licence to operate (运营主体准入)."""

    number: str
    valid_until: datetime
    status: LicenceStatus = LicenceStatus.ACTIVE


@dataclass(frozen=True, kw_only=True)
class Account:
    name: str
    role: Role
    organisation: str
    domains: tuple[str, ...] = ()
    status: AccountStatus = AccountStatus.ACTIVE
    frozen: bool = False
    licence: Licence | None = None
    created_at: str = ""
    created_by: str = ""

    @classmethod
    def from_row(cls, row: Any) -> Account:
        licence = None
        if row.licence_number is not None:
            licence = Licence(
                number=row.licence_number,
                valid_until=datetime.fromisoformat(row.licence_valid_until),
                status=LicenceStatus(row.licence_status),
            )
        return cls(
            name=row.name,
            role=Role(row.role),
            organisation=row.organisation,
            domains=tuple(row.domains or ()),
            status=AccountStatus(row.status),
            frozen=bool(row.frozen),
            licence=licence,
            created_at=row.created_at,
            created_by=row.created_by,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "role": self.role.value,
            "organisation": self.organisation,
            "domains": list(self.domains),
            "status": self.status.value,
            "frozen": self.frozen,
            "created_at": self.created_at,
        }
        if self.licence is not None:
            out["licence"] = {
                "number": self.licence.number,
                "valid_until": self.licence.valid_until.isoformat(),
                "status": self.licence.status.value,
            }
        return out


@dataclass(frozen=True, kw_only=True)
class Actor:
    """An authenticated principal.  A snapshot: every decision re-reads the account's state.

    ``subject`` is the Casbin subject (the account name, or ``host`` for the host
    console); ``name`` is what the audit trail records.  ``token_id`` is the token it
    acts with and ``token_issued_by`` who set that token's issue in motion (the holder
    itself, or the admin whose enrolment code it redeemed): every audit entry written
    on its behalf carries both (:meth:`audit_details`).
    """

    name: str
    role: Role
    subject: str
    organisation: str = ""
    domains: tuple[str, ...] = ()
    token_id: str | None = None
    token_issued_by: str | None = None
    #: The request this actor was authenticated for (HTTP ``X-Request-ID``) and where it
    #: came from: every audit entry written on its behalf carries them.
    request_id: str | None = field(default=None, compare=False)
    client: str | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls,
        account: Account,
        token_id: str | None = None,
        *,
        token_issued_by: str | None = None,
        request_id: str | None = None,
        client: str | None = None,
    ) -> Actor:
        return cls(
            name=account.name,
            role=account.role,
            subject=account.name,
            organisation=account.organisation,
            domains=account.domains,
            token_id=token_id,
            token_issued_by=token_issued_by,
            request_id=request_id,
            client=client,
        )

    @classmethod
    def host(cls, user: str) -> Actor:
        """The platform host's console (the `sandbox` CLI): an admin, audited as ``host:USER``."""
        return cls(
            name=f"host:{user}", role=Role.ADMIN, subject=HOST_SUBJECT, organisation="platform"
        )

    @property
    def is_host(self) -> bool:
        return self.subject == HOST_SUBJECT

    def to_dict(self) -> Mapping[str, Any]:
        return {"name": self.name, "role": self.role.value, "domains": list(self.domains)}

    def audit_details(self) -> dict[str, str | None]:
        """What every audit entry of this actor carries in its details: the acting token's
        id and who issued it (both null for the host console, which acts without one)."""
        return {"token_id": self.token_id, "token_issued_by": self.token_issued_by}
