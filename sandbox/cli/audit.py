"""``sandbox audit ...``: export, verify, sign, show the tree head, fetch proofs, query.

``verify`` needs no database and no server: it reads an export directory and
exits 0 only if everything holds (1 if something is wrong, 2 if the directory
cannot be read).  The other commands open the store named by the settings
(``ctx.obj``, a :class:`~sandbox.core.settings.Settings`).  Audit errors are
translated here into :class:`~sandbox.core.errors.SandboxError` so the CLI renders
them like every other error.

Reading or signing the trail from the host is itself recorded, like an auditor's
call over HTTP: actor ``host:<os user>``, role ``admin``, target ``platform``, rule
``host.console``, action ``audit.export``, ``audit.sign`` or ``audit.read`` (``head``,
``proof``, ``entries``, ``counts``; ``details.command`` names which), appended after
the command succeeded (so an export or a head never contains its own record).
"""

import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandbox.cli.common import settings_of
from sandbox.core.errors import NotFound as SandboxNotFound
from sandbox.core.wording import counted

if TYPE_CHECKING:  # imported where used: `verify` must not load SQLAlchemy or the settings
    from audit import AuditTrail, EntryFilter

__all__ = ["audit_app"]

audit_app = typer.Typer(
    help="Audit trail: export it, verify an export offline, sign tree heads, fetch proofs.",
    no_args_is_help=True,
)


@contextmanager
def _translated() -> Iterator[None]:
    from audit import AuditError, KeyRingError
    from sandbox.audit_errors import translate_audit_error

    try:
        yield
    except (AuditError, KeyRingError) as exc:
        raise translate_audit_error(exc) from exc


@contextmanager
def _trail(ctx: typer.Context) -> "Iterator[AuditTrail]":
    from audit import AuditTrail, KeyRing

    settings = settings_of(ctx.obj)
    with _translated():
        trail = AuditTrail.open(
            settings.audit_db_url,
            KeyRing(settings.keys_dir),
            sign_every_n=settings.audit_sign_every_n,
            sign_every_s=settings.audit_sign_every_s,
        )
        try:
            yield trail
        finally:
            trail.close()


HOST_RULE = "host.console"
"""The rule of a host command's own entry: the console acts without an account."""


def _record(trail: "AuditTrail", action: str, command: str, **details: Any) -> None:
    """Append the entry that records a host command reading or signing the trail."""
    with _translated():
        trail.append(
            actor=f"host:{getpass.getuser()}",
            role="admin",
            action=action,
            target="platform",
            decision="allow",
            rule=HOST_RULE,
            details={"command": command, **details},
        )


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


@audit_app.command("export")
def export_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="New or empty directory to write.")],
) -> None:
    """Sign a fresh tree head and write entries, tree heads and public keys to OUT."""
    from sandbox.monitoring.witnesses import write_export_checkpoint

    with _trail(ctx) as trail:
        with _translated():
            summary = trail.export(out)
            write_export_checkpoint(settings_of(ctx.obj), trail.keyring, out, summary.tree_head)
        _record(
            trail,
            "audit.export",
            "export",
            entries=summary.entries,
            tree_size=summary.tree_head.tree_size,
            out=str(summary.directory),
        )
    typer.echo(
        f"exported {counted(summary.entries, 'entry', 'entries')} and "
        f"{counted(summary.tree_heads, 'signed tree head')} "
        f"to {summary.directory} (root {summary.tree_head.root_hash.hex()})"
    )


@audit_app.command("verify")
def verify_cmd(
    directory: Annotated[Path, typer.Argument(help="An export directory.")],
    keys: Annotated[
        Path | None,
        typer.Option(
            help="Directory of trusted public keys (*.pub), obtained independently, to use "
            "instead of the export's own (which vouch for nothing)."
        ),
    ] = None,
    trusted_head: Annotated[
        list[Path] | None,
        typer.Option(help="A tree head JSON obtained earlier; the export must agree with it."),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            help="Accepted for compatibility; does nothing: every entry is always parsed and "
            "must be exact RFC 8785 (no duplicate keys)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    receipt: Annotated[
        list[Path] | None,
        typer.Option(
            help="An append receipt (JSON) to check: it must verify and the export must keep "
            "its promise of inclusion (repeatable)."
        ),
    ] = None,
    witness_policy: Annotated[
        Path | None,
        typer.Option(
            help="A witness policy (C2SP tlog-policy: witness, group and quorum lines): the "
            "export's checkpoint must carry the quorum's cosignatures (docs/audit.md)."
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes that check entries at once (default: one per core); the same "
            "checks and report whatever the number.",
        ),
    ] = None,
) -> None:
    """Verify an export offline: exit 0 if every check holds, 1 if not, 2 if unreadable."""
    from audit import AuditError, KeyRingError, Receipt, TreeHead, verify_export
    from audit.witness_policy import parse_policy

    del strict  # kept so that scripts passing --strict keep working
    try:
        heads = [TreeHead.from_dict(json.loads(p.read_text())) for p in trusted_head or []]
        receipts = [Receipt.from_dict(json.loads(p.read_text())) for p in receipt or []]
        policy = parse_policy(witness_policy.read_text()) if witness_policy else None
        report = verify_export(
            directory,
            keys_dir=keys,
            trusted_heads=heads,
            receipts=receipts,
            witness_policy=policy,
            workers=jobs or os.cpu_count() or 1,
        )
    except (AuditError, KeyRingError, OSError, ValueError) as exc:
        typer.echo(f"error: cannot verify {directory}: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        _echo_json({**report.to_dict(), "keys_dir": str(keys) if keys is not None else None})
    else:
        where = f" from {keys}" if keys is not None else " (pass --keys DIR for trusted ones)"
        typer.echo(report.summary() + where)
        for problem in report.problems:
            typer.echo(f"  {problem}")
        if report.more_problems:
            typer.echo(f"  ... and {report.more_problems} more")
        for warning in report.warnings:
            typer.echo(f"  warning: {warning}")
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("sign")
def sign_cmd(ctx: typer.Context) -> None:
    """Sign a tree head over every entry now and print it."""
    with _trail(ctx) as trail:
        with _translated():
            head = trail.sign_tree_head()
        _record(trail, "audit.sign", "sign", tree_size=head.tree_size)
    _echo_json(head.to_dict())


@audit_app.command("head")
def head_cmd(ctx: typer.Context) -> None:
    """Print the newest signed tree head (JSON)."""
    with _trail(ctx) as trail:
        with _translated():
            head = trail.latest_tree_head()
        if head is None:
            raise SandboxNotFound("no tree head has been signed yet", rule="audit.not_found")
        _record(trail, "audit.read", "head", tree_size=head.tree_size)
    _echo_json(head.to_dict())


@audit_app.command("proof")
def proof_cmd(
    ctx: typer.Context,
    seq: Annotated[int, typer.Option("--seq", help="Entry sequence number.", min=0)],
    size: Annotated[
        int | None,
        typer.Option("--size", help="Tree size (default: the newest signed tree head).", min=1),
    ] = None,
) -> None:
    """Print the inclusion proof of entry SEQ, with the entry and the tree head it leads to."""
    with _trail(ctx) as trail:
        with _translated():
            proof = trail.inclusion_proof(seq, size)
            heads = [h for h in trail.tree_heads() if h.tree_size == proof.tree_size]
            entry = trail.entry(seq)
        _record(trail, "audit.read", "proof", seq=seq, tree_size=proof.tree_size)
    _echo_json(
        {
            "proof": proof.to_dict(),
            "entry": entry.to_dict(),
            "tree_head": heads[-1].to_dict() if heads else None,
        }
    )


def _filter(**values: Any) -> "EntryFilter":
    from audit import EntryFilter

    with _translated():
        return EntryFilter(**values)


@audit_app.command("entries")
def entries_cmd(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="RFC 3339, inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="RFC 3339, exclusive.")] = None,
    actor: Annotated[str | None, typer.Option()] = None,
    action: Annotated[str | None, typer.Option()] = None,
    dataset: Annotated[str | None, typer.Option()] = None,
    decision: Annotated[str | None, typer.Option(help="allow or deny.")] = None,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """List entries (JSON lines) matching the filters, in sequence order."""
    filters = _filter(
        since=since, until=until, actor=actor, action=action, dataset=dataset, decision=decision
    )
    with _trail(ctx) as trail:
        with _translated():
            rows = trail.entries(filters, offset=offset, limit=limit)
        _record(trail, "audit.read", "entries", rows=len(rows), offset=offset)
    for entry in rows:
        typer.echo(json.dumps(entry.to_dict(), sort_keys=True))


@audit_app.command("counts")
def counts_cmd(
    ctx: typer.Context,
    by: Annotated[list[str] | None, typer.Option(help="Field to group by (repeatable).")] = None,
    since: Annotated[str | None, typer.Option(help="RFC 3339, inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="RFC 3339, exclusive.")] = None,
    decision: Annotated[str | None, typer.Option(help="allow or deny.")] = None,
) -> None:
    """Count entries per actor and dataset (or the --by fields)."""
    filters = _filter(since=since, until=until, decision=decision)
    with _trail(ctx) as trail:
        with _translated():
            rows = trail.counts(tuple(by or ("actor", "dataset")), filters)
        _record(trail, "audit.read", "counts", rows=len(rows))
    _echo_json(rows)
