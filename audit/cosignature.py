"""Witness cosignatures (https://c2sp.org/tlog-cosignature), timestamped Ed25519, v1.

A cosignature is a note signature of type 0x04 on a checkpoint: key id
``SHA-256(name || 0x0A || 0x04 || public key)[:4]``, signature bytes
``u64 timestamp (big-endian, POSIX seconds) || Ed25519 signature`` over::

    cosignature/v1
    time <timestamp>
    <the checkpoint's note text, with its final newline>

Pure: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.errors import ProofError
from audit.note import ED25519_COSIGNATURE, Note, NoteSignature, Verifier

__all__ = [
    "Cosignature",
    "cosign",
    "cosignatures_by",
    "cosigned_message",
    "witness_verifier",
]

MAX_TIMESTAMP = 2**63 - 1


def cosigned_message(note_text: str, timestamp: int) -> bytes:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ProofError("a cosignature timestamp must be in 0 .. 2^63-1")
    return f"cosignature/v1\ntime {timestamp}\n{note_text}".encode()


def witness_verifier(name: str, private_key: Ed25519PrivateKey) -> Verifier:
    from audit.checkpoint import raw_public_key

    return Verifier(name, ED25519_COSIGNATURE, raw_public_key(private_key.public_key()))


def cosign(
    note_text: str, name: str, private_key: Ed25519PrivateKey, timestamp: int
) -> NoteSignature:
    """A witness's cosignature line for the checkpoint text ``note_text``."""
    verifier = witness_verifier(name, private_key)
    signature = private_key.sign(cosigned_message(note_text, timestamp))
    return NoteSignature(name, verifier.key_id, struct.pack(">Q", timestamp) + signature)


@dataclass(frozen=True)
class Cosignature:
    witness: Verifier
    timestamp: int


def _check(witness: Verifier, note_text: str, sig: NoteSignature) -> Cosignature | None:
    """The cosignature if ``sig`` is ``witness``'s and verifies; None if not its; raise if bad."""
    if witness.sig_type != ED25519_COSIGNATURE or not witness.matches(sig):
        return None
    if len(sig.signature) != 8 + 64:
        raise ProofError(f"the cosignature by {sig.name} is not a timestamped Ed25519 signature")
    (timestamp,) = struct.unpack(">Q", sig.signature[:8])
    if timestamp > MAX_TIMESTAMP or not witness.verify(
        cosigned_message(note_text, timestamp), sig.signature[8:]
    ):
        raise ProofError(f"the cosignature by {sig.name} does not verify")
    return Cosignature(witness, timestamp)


def cosignatures_by(
    note: Note, witnesses: Sequence[Verifier]
) -> tuple[list[Cosignature], list[str]]:
    """The valid cosignatures of ``witnesses`` on ``note``, and what was wrong with others.

    Lines by keys not among ``witnesses`` are ignored; a known witness's line that
    fails to verify is reported (and does not count).
    """
    found: list[Cosignature] = []
    problems: list[str] = []
    for sig in note.signatures:
        for witness in witnesses:
            try:
                cosig = _check(witness, note.text, sig)
            except ProofError as exc:
                problems.append(str(exc))
                continue
            if cosig is not None and all(c.witness != witness for c in found):
                found.append(cosig)
    return found, problems
