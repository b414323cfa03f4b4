"""A witness's check of a log's new checkpoint against the last one it cosigned.

Pure: the caller loads the state and the key, fetches the checkpoint and the
consistency proof, and persists what this returns (the CLI does it:
``sandbox/cli/witness.py``).  The witness cosigns only if

* the log's key (the one it was configured with) signed the new checkpoint, under the
  origin it follows;
* the new size is not smaller than the last cosigned one (``witness.rollback``);
* at the same size the root is the same, and from a smaller size an RFC 6962 consistency
  proof leads from the old root to the new one.  Otherwise the log showed two views
  (:class:`SplitView`, rule ``witness.split_view``): the witness refuses and keeps both
  signed checkpoints and the proof as evidence.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.cosignature import cosign
from audit.errors import ProofError, SignatureError
from audit.merkle import verify_consistency
from audit.note import Note, Verifier, format_note

__all__ = ["SplitView", "WitnessRefusal", "WitnessState", "witness_checkpoint"]


class WitnessRefusal(ProofError):
    """The witness will not cosign; ``rule`` names why."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class SplitView(WitnessRefusal):
    """Two log-signed checkpoints that cannot both be views of one append-only log."""

    def __init__(self, message: str, evidence: dict[str, Any]) -> None:
        super().__init__(message, "witness.split_view")
        self.evidence = evidence


@dataclass(frozen=True)
class WitnessState:
    """The last checkpoint this witness cosigned (its full note), or none yet."""

    note: str | None = None


def witness_checkpoint(
    state: WitnessState,
    new: bytes | str,
    proof: Sequence[bytes],
    log: Verifier,
    *,
    name: str,
    key: Ed25519PrivateKey,
    now: int,
) -> tuple[Note, WitnessState]:
    """Check ``new`` against ``state``; return the cosigned note and the next state."""
    try:
        checkpoint, note = open_checkpoint(new, [log])
    except (ProofError, SignatureError) as exc:
        raise WitnessRefusal(
            f"the checkpoint is not signed by the log: {exc}", "witness.log_signature"
        ) from None
    if checkpoint.origin != log.name:
        raise WitnessRefusal("the checkpoint is for another log", "witness.origin")
    old: Checkpoint | None = None
    if state.note is not None:
        old, _ = open_checkpoint(state.note, [log])
    if old is not None:
        if checkpoint.tree_size < old.tree_size:
            raise WitnessRefusal(
                f"the checkpoint has size {checkpoint.tree_size}, below the {old.tree_size} "
                "this witness already cosigned",
                "witness.rollback",
            )
        evidence = {
            "origin": checkpoint.origin,
            "old_checkpoint": state.note,
            "new_checkpoint": format_note(note),
            "consistency_proof": [base64.b64encode(h).decode() for h in proof],
        }
        if checkpoint.tree_size == old.tree_size:
            if checkpoint.root_hash != old.root_hash:
                raise SplitView(
                    f"two checkpoints of size {old.tree_size} with different roots", evidence
                )
        else:
            try:
                verify_consistency(
                    old.tree_size,
                    checkpoint.tree_size,
                    list(proof),
                    old.root_hash,
                    checkpoint.root_hash,
                )
            except ProofError as exc:
                raise SplitView(
                    f"no consistency from size {old.tree_size} to {checkpoint.tree_size}: {exc}",
                    evidence,
                ) from None
    line = cosign(note.text, name, key, now)
    cosigned = Note(note.text, (*note.signatures, line))
    return cosigned, WitnessState(format_note(Note(note.text, note.signatures)))
