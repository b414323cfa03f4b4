"""What the admin, grant and usage commands share: the acting account, options, parsing.

The command line runs on the platform host.  Without ``--token`` it acts as
the host console, an admin audited as ``host:<os user>``: it may manage
accounts and tokens, freeze, and read usage, but, like every admin, never
grant data (管运分离).  Grant commands therefore need a bureau's token
(``--token`` or ``SANDBOX_TOKEN``); every act goes through the same decision
API and audit trail as the HTTP server.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer

from policies import Actor, Administration, Authority
from sandbox.core.errors import InvalidInput
from sandbox.core.settings import Settings
from sandbox.platform import Platform

__all__ = ["JsonOpt", "Opt", "TokenOpt", "echo_json", "fen", "moment", "services"]

Opt = typer.Option

TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="SANDBOX_TOKEN", help="Act as this token's account."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@contextmanager
def services(settings: Settings, token: str | None) -> Iterator[tuple[Administration, Actor]]:
    """The administration API over this home, its audit trail, and the acting actor."""
    from audit import AuditTrail

    platform = Platform(settings)
    trail = AuditTrail.open(
        settings.audit_db_url,
        platform.keyring,
        sign_every_n=settings.audit_sign_every_n,
        sign_every_s=settings.audit_sign_every_s,
    )
    authority = Authority(platform.engine, recorder=trail)
    try:
        actor = authority.authenticate(token) if token else Actor.host(getpass.getuser())
        yield Administration(authority, k_floor=settings.k_floor), actor
    finally:
        authority.close()
        trail.close()
        platform.close()


def moment(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name}: a date YYYY-MM-DD or an ISO time", rule="cli.time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def fen(text: str | None, name: str) -> int:
    if text is None:
        return 0
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(f"{name}: a price in CNY, e.g. 2.50", rule="cli.price") from None
    if value < 0 or value != value.quantize(Decimal("0.01")):
        raise InvalidInput(
            f"{name}: a non-negative price with at most 2 decimals", rule="cli.price"
        )
    return int(value * 100)


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))
