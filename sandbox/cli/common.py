"""What the admin, grant and usage commands share: the acting account, options, parsing.

The command line runs on the platform host.  Without ``--token`` it acts as
the host console, an admin audited as ``host:<os user>``: it may manage
accounts and tokens, freeze, and read usage, but, like every admin, never
grant data (管运分离).  Grant commands therefore need a bureau's token
(``--token`` or ``SANDBOX_TOKEN``); every act goes through the same decision
API and audit trail as the HTTP server.
"""

from __future__ import annotations

import enum
import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from sandbox.core.errors import InvalidInput

if TYPE_CHECKING:  # imported where used: `sandbox --help` and offline commands load neither
    from policies import Actor, Administration
    from sandbox.core.settings import Settings

__all__ = [
    "JsonOpt",
    "LazySettings",
    "Opt",
    "TokenOpt",
    "choice",
    "echo_json",
    "fen",
    "moment",
    "services",
    "settings_of",
]

E = TypeVar("E", bound=enum.Enum)

Opt = typer.Option

TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="SANDBOX_TOKEN", help="Act as this token's account."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class LazySettings:
    """The root command's ``ctx.obj``: the deployment's settings, loaded on first use.

    Commands that never touch a home (``audit verify``, ``receipt verify --public-key``,
    ``--url`` clients, ``--help``) then never import or validate the settings.
    """

    def __init__(self, home: Path | None) -> None:
        self.home_option = home
        self._settings: Settings | None = None

    def load(self) -> Settings:
        if self._settings is None:
            from sandbox.core.settings import load_settings

            self._settings = load_settings(home=self.home_option)
        return self._settings


def settings_of(obj: Any) -> Settings:
    """The settings behind a ``ctx.obj``: a :class:`LazySettings`, or settings themselves."""
    if isinstance(obj, LazySettings):
        return obj.load()
    return cast("Settings", obj)


def choice(kind: type[E], value: str, option: str) -> E:
    """``value`` as a member of ``kind``, or a usage error naming ``option`` and the choices.

    Enum-typed options would need their (heavy) modules imported to build the command
    line; the options are plain strings and convert here, when the command runs.
    """
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(str(member.value) for member in kind)
        raise typer.BadParameter(f"{value!r} is not one of {names}", param_hint=option) from None


@contextmanager
def services(settings: Any, token: str | None) -> Iterator[tuple[Administration, Actor]]:
    """The administration API over this home, its audit trail, and the acting actor.

    ``settings`` is a :class:`Settings` or the ``ctx.obj`` that holds them.
    """
    from audit import AuditTrail
    from policies import Actor, Administration, Authority
    from policies.admin import migrate_release_modes
    from sandbox.platform import Platform

    settings = settings_of(settings)
    platform = Platform(settings)
    trail = AuditTrail.open(
        settings.audit_db_url,
        platform.keyring,
        sign_every_n=settings.audit_sign_every_n,
        sign_every_s=settings.audit_sign_every_s,
    )
    authority = Authority(platform.engine, recorder=trail)
    try:
        migrate_release_modes(authority)
        actor = authority.authenticate(token) if token else Actor.host(getpass.getuser())
        budget = (settings.dp_default_epsilon_total, settings.dp_default_epsilon_per_query)
        yield Administration(authority, k_floor=settings.k_floor, default_budget=budget), actor
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
