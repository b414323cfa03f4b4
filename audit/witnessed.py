"""An export's checkpoint, checked against the entries and, given one, a witness policy.

An export may hold ``checkpoint``: the newest checkpoint the platform had cosigned by
witnesses when it wrote the export (C2SP tlog-checkpoint note with the log's signature
and the witnesses' tlog-cosignature lines), else its newest checkpoint uncosigned.

* Its log signature must verify with a log key: the policy's ``log`` lines, or else each
  platform key the verifier uses, named by the checkpoint's origin.
* Its size must not exceed the export's and its root must be the Merkle root of the
  export's first ``size`` entries.
* Under a policy, the witnesses whose cosignatures verify must meet its quorum.

A rewrite re-signed with a fresh key fails the last two: the witnesses cosigned the
original root, and no one who holds only the platform key can make their signatures.
Pure apart from reading the one file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checkpoint import log_verifier, open_checkpoint, parse_checkpoint_text
from audit.cosignature import cosignatures_by
from audit.errors import ProofError, SignatureError
from audit.note import parse_note
from audit.witness_policy import WitnessPolicy

__all__ = ["CHECKPOINT_FILE", "checkpoint_problems"]

CHECKPOINT_FILE = "checkpoint"


def checkpoint_problems(
    directory: Path,
    public_keys: Mapping[str, Ed25519PublicKey],
    root_at: Callable[[int], bytes],
    size: int,
    policy: WitnessPolicy | None,
) -> tuple[list[tuple[str, str]], list[str]]:
    """(problems as (kind, message), warnings) about ``directory/checkpoint``.

    ``root_at(n)`` is the export's recomputed root of its first ``n`` entries (of
    ``size``).  Kinds: ``checkpoint`` (unreadable, unsigned, other root) and ``witness``
    (the policy's quorum of cosignatures is not met).
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        if policy is None:
            return [], []
        return [
            ("witness", f"the export has no {CHECKPOINT_FILE} file: no witness cosigned it")
        ], []
    try:
        data = path.read_bytes()
        note = parse_note(data)
        origin = parse_checkpoint_text(note.text).origin
    except (OSError, ProofError) as exc:
        return [("checkpoint", f"{CHECKPOINT_FILE} is not a readable checkpoint: {exc}")], []
    logs = list(policy.logs) if policy is not None and policy.logs else []
    if not logs:
        logs = [log_verifier(origin, key) for key in public_keys.values()]
    try:
        checkpoint, note = open_checkpoint(data, logs)
    except (ProofError, SignatureError) as exc:
        return [("checkpoint", f"{CHECKPOINT_FILE}: {exc}")], []
    problems: list[tuple[str, str]] = []
    warnings: list[str] = []
    if checkpoint.tree_size > size:
        message = (
            f"the checkpoint of size {checkpoint.tree_size} covers entries that are missing "
            f"(the export holds {size})"
        )
        return [("checkpoint", message)], []
    if root_at(checkpoint.tree_size) != checkpoint.root_hash:
        message = (
            f"the checkpoint of size {checkpoint.tree_size} has another root than the export's "
            "entries: they were rewritten after it was signed"
        )
        problems.append(("checkpoint", message))
    if policy is None:
        return problems, warnings
    cosigs, bad = cosignatures_by(note, list(policy.witnesses.values()))
    names = {name for name, w in policy.witnesses.items() if any(c.witness == w for c in cosigs)}
    problems.extend(("witness", message) for message in bad)
    if not policy.satisfied(names):
        have = ", ".join(sorted(names)) or "none"
        message = (
            f"the checkpoint of size {checkpoint.tree_size} lacks the policy's cosignatures: "
            f"it wants {policy.describe()}, valid ones are by {have}"
        )
        problems.append(("witness", message))
    elif checkpoint.tree_size < size:
        warnings.append(
            f"entries {checkpoint.tree_size}..{size - 1} are after the witnessed checkpoint: "
            "only the platform's signature vouches for them"
        )
    return problems, warnings
