"""``sandbox keys``: encryption at rest on the host console (status, rotate, reencrypt).

Both changes are recorded in the audit trail (``keys.rotate``, ``keys.reencrypt``,
target ``home``), allowed or refused, by the host user.
"""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer

from sandbox.cli.common import Opt, echo_json, settings_of
from sandbox.core.errors import SandboxError

__all__ = ["keys_app"]

keys_app = typer.Typer(
    help="Encryption at rest: master key rotation and data re-encryption (host console).",
    no_args_is_help=True,
)


def _platform(ctx: typer.Context) -> Any:
    from sandbox.platform import Platform

    return Platform(settings_of(ctx.obj))


def _recorded(platform: Any, action: str, work: Any) -> Any:
    actor = f"host:{getpass.getuser()}"
    try:
        outcome = work()
    except SandboxError as exc:
        platform.record(
            actor=actor,
            role="admin",
            action=action,
            target="home",
            decision="deny",
            rule=exc.rule or exc.code,
            details={"reason": exc.message},
        )
        raise
    details = dict(vars(outcome))
    platform.record(
        actor=actor,
        role="admin",
        action=action,
        target="home",
        decision="allow",
        rule=action,
        details=details,
    )
    return details


@keys_app.command("status")
def status(ctx: typer.Context) -> None:
    """Whether the home is encrypted, where its master key is, and its data keys (no secrets)."""
    from sandbox.core.home_keys import is_encrypted, master_key_path, provider_for

    platform = _platform(ctx)
    settings = platform.settings
    # The Parquet warehouse (datasets registered with --engine spark) is never encrypted
    # by the sandbox: it relies on the storage it lives on (docs/operations.md).
    warehouse = {
        "path": str(settings.warehouse_dir),
        "encrypted": False,
        "relies_on": "the storage's own encryption (the cluster's disks or object store)",
    }
    if not is_encrypted(settings):
        echo_json({"encrypted": False, "warehouse": warehouse})
        return
    keys = platform.data_keys
    echo_json(
        {
            "encrypted": True,
            "master_key": provider_for(settings).describe(),
            "master_fingerprint": provider_for(settings).fingerprint(),
            "master_key_file": None if settings.master_key_env else str(master_key_path(settings)),
            "data_keys": [
                {"id": k.id, "purpose": k.purpose, "created_at": k.created_at, "active": k.active}
                for k in keys.keys
            ],
            "warehouse": warehouse,
        }
    )


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    new_key_env: Annotated[
        str | None,
        Opt(help="With an environment-variable master key: the variable holding the new key."),
    ] = None,
) -> None:
    """Rotate the master key: re-wrap every data key under a new one (the data is untouched)."""
    from sandbox.jobs.rekey import rotate_master

    platform = _platform(ctx)
    details = _recorded(platform, "keys.rotate", lambda: rotate_master(platform, new_key_env))
    echo_json(details)


@keys_app.command("reencrypt")
def reencrypt(ctx: typer.Context) -> None:
    """New data keys; the enclave file, held results and cached releases re-encrypted."""
    from sandbox.jobs.rekey import reencrypt as run

    platform = _platform(ctx)
    details = _recorded(platform, "keys.reencrypt", lambda: run(platform))
    echo_json(details)
