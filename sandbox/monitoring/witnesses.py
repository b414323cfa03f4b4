"""Witnesses of the audit log on the server: checkpoints, collected cosignatures, split view.

* The log's **origin** (its checkpoints' first line and key name) is the setting
  ``audit_origin``; when empty, the one written to ``HOME/checkpoints/ORIGIN`` at first use
  (``<host name>/sandbox-audit``), so it never changes under the witnesses.
* Checkpoints and the cosignatures on them: :class:`audit.checkpoint_store.CheckpointStore`
  in ``HOME/checkpoints``.
* Witness keys: an admin registers one cosignature vkey per bureau or auditor account
  (``HOME/checkpoints/witnesses.json``); only that account's cosignatures are accepted.
* Split view: a witness's evidence (two log-signed checkpoints that cannot both hold) is
  checked, kept in ``HOME/checkpoints/evidence/`` and opens a ``high`` alert (detector
  ``split_view``).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.checkpoint import log_verifier, open_checkpoint, parse_checkpoint_text
from audit.checkpoint_store import CheckpointStore
from audit.errors import AuditError, ProofError
from audit.keys import KeyRing
from audit.merkle import verify_consistency
from audit.note import ED25519_COSIGNATURE, Note, Verifier, format_note, parse_note, parse_vkey
from audit.signing import TreeHead
from policies import Actor
from sandbox.core.errors import InvalidInput
from sandbox.core.settings import Settings
from sandbox.platform import Platform

from .alerts import record_finding
from .detectors import Finding
from .monitor import record_change

__all__ = [
    "checkpoint_store",
    "current_checkpoint",
    "log_origin",
    "register_witness",
    "report_split_view",
    "witness_key",
    "write_export_checkpoint",
]

CHECKPOINT_FILE = "checkpoint"


def _directory(settings: Settings) -> Path:
    return settings.home / "checkpoints"


def log_origin(settings: Settings) -> str:
    if settings.audit_origin:
        return settings.audit_origin
    path = _directory(settings) / "ORIGIN"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    origin = f"{socket.gethostname().lower() or 'localhost'}/sandbox-audit"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another worker wrote it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(origin + "\n")
    return origin


def checkpoint_store(settings: Settings) -> CheckpointStore:
    return CheckpointStore(_directory(settings), log_origin(settings))


def current_checkpoint(platform: Platform) -> Note:
    """The checkpoint of the newest signed tree head (signed one now if there is none)."""
    head = platform.audit.latest_tree_head() or platform.audit.sign_tree_head()
    store = checkpoint_store(platform.settings)
    return store.publish(platform.keyring.active(), head.tree_size, head.root_hash)


def write_export_checkpoint(
    settings: Settings, keyring: KeyRing, out_dir: Path, head: TreeHead
) -> Note:
    """Put into an export the newest cosigned checkpoint (else the export head's, uncosigned)."""
    store = checkpoint_store(settings)
    note = store.latest_cosigned()
    if note is None or parse_checkpoint_text(note.text).tree_size > head.tree_size:
        note = store.publish(keyring.active(), head.tree_size, head.root_hash)
    (Path(out_dir) / CHECKPOINT_FILE).write_text(format_note(note), encoding="utf-8")
    return note


# -- witness keys ------------------------------------------------------------------------


def _witness_file(settings: Settings) -> Path:
    return _directory(settings) / "witnesses.json"


def _witnesses(settings: Settings) -> dict[str, str]:
    try:
        data = json.loads(_witness_file(settings).read_text())
    except FileNotFoundError:
        return {}
    return {str(k): str(v) for k, v in data.items()}


def register_witness(settings: Settings, account: str, vkey: str) -> Verifier:
    """Register ``vkey`` (a tlog-cosignature Ed25519 vkey) as ``account``'s witness key."""
    try:
        verifier = parse_vkey(vkey)
    except ProofError as exc:
        raise InvalidInput(f"not a witness key: {exc}", rule="witness.key_invalid") from None
    if verifier.sig_type != ED25519_COSIGNATURE:
        raise InvalidInput(
            "a witness key must be a cosignature key (vkey type 0x04, `sandbox witness init`)",
            rule="witness.key_invalid",
        )
    path = _witness_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        keys = _witnesses(settings)
        taken = [
            a
            for a, v in keys.items()
            if a != account and parse_vkey(v).public_key == verifier.public_key
        ]
        if taken:
            raise InvalidInput(
                "that witness key is registered to another account", rule="witness.key_taken"
            )
        keys[account] = verifier.vkey()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(keys, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return verifier


def witness_key(settings: Settings, account: str) -> Verifier | None:
    vkey = _witnesses(settings).get(account)
    return None if vkey is None else parse_vkey(vkey)


# -- split view ------------------------------------------------------------------------------


def _b64_list(value: Any) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 64:
        raise ProofError("consistency_proof must be a list of at most 64 base64 hashes")
    try:
        return [base64.b64decode(v, validate=True) for v in value]
    except (binascii.Error, ValueError, TypeError):
        raise ProofError("consistency_proof must be base64 hashes") from None


def check_split_view(platform: Platform, evidence: dict[str, Any]) -> str:
    """Why ``evidence`` shows a split view of our log; raise ``ProofError`` if it does not.

    Both checkpoints must carry a valid signature by one of the platform's keys under
    our origin: a witness cannot make the platform look forked with notes it made up.
    """
    origin = log_origin(platform.settings)
    logs = [log_verifier(origin, key) for key in platform.keyring.public_keys().values()]
    try:
        old, _ = open_checkpoint(str(evidence.get("old_checkpoint", "")), logs)
        new, _ = open_checkpoint(str(evidence.get("new_checkpoint", "")), logs)
    except AuditError as exc:
        raise ProofError(f"the evidence is not two checkpoints this log signed: {exc}") from None
    if old.tree_size > new.tree_size:
        old, new = new, old
    if old.tree_size == new.tree_size:
        if old.root_hash == new.root_hash:
            raise ProofError("the two checkpoints are the same tree")
        return f"two signed checkpoints of size {old.tree_size} with different roots"
    proof = _b64_list(evidence.get("consistency_proof", []))
    if old.tree_size == 0:
        raise ProofError("an empty tree is consistent with every tree")
    # The platform's own proof decides: its store can prove consistency if there is one.
    try:
        ours = platform.audit.consistency_proof(old.tree_size, new.tree_size).path
        verify_consistency(old.tree_size, new.tree_size, list(ours), old.root_hash, new.root_hash)
    except AuditError:
        pass
    else:
        raise ProofError("the two checkpoints are consistent: the log proves it")
    del proof  # the witness's failed proof is kept as evidence, not needed to decide
    return f"signed checkpoints of sizes {old.tree_size} and {new.tree_size} are not consistent"


def report_split_view(platform: Platform, actor: Actor, evidence: dict[str, Any]) -> dict[str, Any]:
    """Check, keep and alert on a witness's split-view evidence; returns the alert."""
    try:
        reason = check_split_view(platform, evidence)
    except ProofError as exc:
        raise InvalidInput(str(exc), rule="witness.evidence_invalid") from None
    now = datetime.now(UTC)
    folder = _directory(platform.settings) / "evidence"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{actor.name}-{secrets.token_hex(3)}.json"
    kept = {k: evidence.get(k) for k in ("old_checkpoint", "new_checkpoint", "consistency_proof")}
    (folder / name).write_text(json.dumps({"by": actor.name, "reason": reason, **kept}, indent=2))
    receipt = platform.record_act(
        actor,
        "audit.cosign",
        "platform",
        "deny",
        "witness.split_view",
        details={"reason": reason, "evidence_file": name},
    )
    finding = Finding(
        detector="split_view",
        severity="high",
        operator=actor.name,
        dataset=None,
        evidence=(receipt.seq,),
        summary=f"witness {actor.name} reports a split view of the audit log: {reason}",
    )
    with platform.engine.begin() as conn:
        change = record_finding(conn, finding, now)
        if change.kind in ("opened", "escalated"):
            record_change(platform, conn, change, finding)
    return change.alert


def parse_cosigned(text: str) -> Note:
    try:
        return parse_note(text)
    except ProofError as exc:
        raise InvalidInput(
            f"not a signed note: {exc}", rule="witness.cosignature_invalid"
        ) from None
