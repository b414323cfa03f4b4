"""``sandbox witness ...``: run a witness of a Sandbox audit log (a bureau or an auditor).

``init`` makes the witness's own Ed25519 key and state directory and prints its
cosignature vkey (an admin registers it: ``PUT /v1/admin/witnesses/<account>``);
``cosign`` fetches the log's newest checkpoint and the consistency proof from the last one
this witness cosigned, checks them (:func:`audit.witness.witness_checkpoint`), keeps the new
one, and posts the cosignature.  A split view (two checkpoints of one size with different
roots, or no consistency) is refused (exit 1, rule ``witness.split_view``): the evidence is
kept in ``DIR/evidence/`` and posted to the server, which opens an alert.
``log-key`` (on the platform host) prints the log's verifier key, handed to witnesses.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from sandbox.cli.common import settings_of

witness_app = typer.Typer(
    help="Witness the audit log: make a witness key, check and cosign the log's checkpoints.",
    no_args_is_help=True,
)

DirArg = Annotated[Path, typer.Argument(help="The witness's state directory.")]
UrlOpt = Annotated[str, typer.Option("--url", envvar="SANDBOX_URL", help="The Sandbox server.")]
TokenOpt = Annotated[
    str, typer.Option("--token", envvar="SANDBOX_TOKEN", help="The witness account's token.")
]


def _write(path: Path, data: str, mode: int = 0o644) -> None:
    """Write ``path`` atomically and durably."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _config(directory: Path) -> dict[str, str]:
    try:
        return dict(json.loads((directory / "witness.json").read_text()))
    except (OSError, ValueError):
        typer.echo(
            f"error: {directory} is not a witness directory (run `sandbox witness init`)", err=True
        )
        raise typer.Exit(2) from None


def _private_key(directory: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    path = directory / "witness.key"
    if path.stat().st_mode & 0o077:
        typer.echo(f"error: {path} is readable by others (want 0600)", err=True)
        raise typer.Exit(2)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


@witness_app.command("init")
def init_cmd(
    directory: DirArg,
    name: Annotated[
        str, typer.Option(help="The witness's key name, e.g. health.example.gov/witness.")
    ],
    log_vkey: Annotated[
        str,
        typer.Option(
            help="The log's verifier key (`sandbox witness log-key` on the platform host)."
        ),
    ],
) -> None:
    """Make the witness key (0600) and state directory; print the cosignature vkey."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit.cosignature import witness_verifier
    from audit.errors import ProofError
    from audit.note import ED25519, parse_vkey

    try:
        log = parse_vkey(log_vkey)
        if log.sig_type != ED25519:
            raise ProofError("the log key must be an Ed25519 note key (type 0x01)")
        key = Ed25519PrivateKey.generate()
        verifier = witness_verifier(name, key)
    except ProofError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if (directory / "witness.key").exists():
        typer.echo(f"error: {directory} already holds a witness key", err=True)
        raise typer.Exit(2)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    _write(directory / "witness.key", pem, 0o600)
    config = {"name": name, "log_vkey": log.vkey(), "vkey": verifier.vkey()}
    _write(directory / "witness.json", json.dumps(config, indent=2) + "\n")
    typer.echo(verifier.vkey())


@witness_app.command("vkey")
def vkey_cmd(directory: DirArg) -> None:
    """Print the witness's cosignature vkey (what an admin registers, and policies list)."""
    typer.echo(_config(directory)["vkey"])


@witness_app.command("log-key")
def log_key_cmd(ctx: typer.Context) -> None:
    """On the platform host: print the log's checkpoint verifier key (origin and active key)."""
    from audit.checkpoint import log_verifier
    from audit.keys import KeyRing
    from sandbox.monitoring.witnesses import log_origin

    settings = settings_of(ctx.obj)
    key = KeyRing(settings.keys_dir).ensure()
    typer.echo(log_verifier(log_origin(settings), key.public_key).vkey())


@witness_app.command("cosign")
def cosign_cmd(directory: DirArg, url: UrlOpt, token: TokenOpt) -> None:
    """Fetch the newest checkpoint and a consistency proof, check them, post a cosignature."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from audit.checkpoint import parse_checkpoint_text
    from audit.note import format_note, parse_note, parse_vkey
    from audit.witness import SplitView, WitnessRefusal, WitnessState, witness_checkpoint
    from sandbox.client import SandboxClient

    config = _config(directory)
    log = parse_vkey(config["log_vkey"])
    state_path = directory / "checkpoint"
    state = WitnessState(state_path.read_text("utf-8") if state_path.exists() else None)
    old = 0 if state.note is None else parse_checkpoint_text(parse_note(state.note).text).tree_size
    with SandboxClient(url, token) as client:
        text = client.request("GET", "/v1/audit/checkpoint").text
        try:
            size = parse_checkpoint_text(parse_note(text).text).tree_size
        except ValueError as exc:
            typer.echo(f"error: the server's checkpoint is unreadable: {exc}", err=True)
            raise typer.Exit(1) from None
        proof: list[bytes] = []
        if 0 < old <= size:
            found = client.request(
                "GET", "/v1/audit/checkpoint/proof", params={"old": old, "size": size}
            ).json()
            proof = [base64.b64decode(h) for h in found["consistency_proof"]]
        try:
            cosigned, new_state = witness_checkpoint(
                state,
                text,
                proof,
                log,
                name=config["name"],
                key=_private_key(directory),
                now=int(time.time()),
            )
        except SplitView as exc:
            folder = directory / "evidence"
            folder.mkdir(exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            _write(folder / f"{stamp}-size-{size}.json", json.dumps(exc.evidence, indent=2) + "\n")
            alert = client.request(
                "POST", "/v1/audit/checkpoint/split-view", json=exc.evidence
            ).json()
            typer.echo(
                f"refused: {exc} (rule: {exc.rule}); evidence kept in {folder}, "
                f"alert {alert.get('alert')} opened",
                err=True,
            )
            raise typer.Exit(1) from None
        except WitnessRefusal as exc:
            typer.echo(f"refused: {exc} (rule: {exc.rule})", err=True)
            raise typer.Exit(1) from None
        assert new_state.note is not None
        _write(state_path, new_state.note)
        client.request(
            "POST", "/v1/audit/checkpoint/cosignatures", json={"checkpoint": format_note(cosigned)}
        )
    typer.echo(f"cosigned checkpoint of size {size} (from {old}) as {config['name']}")
