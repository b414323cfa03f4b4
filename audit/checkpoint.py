"""Tree heads as C2SP checkpoints (https://c2sp.org/tlog-checkpoint), signed notes.

A checkpoint's text is three lines: the log's **origin**, the tree size in decimal,
the base64 RFC 6962 root hash (plus optional extension lines, which we never write).
The log signs it as a signed note with Ed25519 (type 0x01) under the key name equal to
the origin.  The same Ed25519 key that signs the platform's own tree heads
(:mod:`audit.signing`) signs its checkpoints, so an auditor holding the platform's
public key can build the verifier key: :func:`log_verifier`.  Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.errors import ProofError, SignatureError
from audit.keys import SigningKey
from audit.note import ED25519, Note, NoteSignature, Verifier, key_id, parse_note

__all__ = [
    "Checkpoint",
    "log_verifier",
    "open_checkpoint",
    "parse_checkpoint_text",
    "raw_public_key",
    "sign_checkpoint",
]

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.tree_size), base64.b64encode(self.root_hash).decode()]
        return "".join(line + "\n" for line in (*lines, *self.extensions))


def parse_checkpoint_text(text: str) -> Checkpoint:
    """Parse a checkpoint's note text (without signatures)."""
    if not text.endswith("\n"):
        raise ProofError("checkpoint text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise ProofError("a checkpoint has at least three non-empty lines")
    origin, size, root = lines[0], lines[1], lines[2]
    if not _SIZE.fullmatch(size) or int(size) >= 2**64:
        raise ProofError("checkpoint tree size must be a decimal without leading zeroes")
    try:
        root_hash = base64.b64decode(root, validate=True)
    except (binascii.Error, ValueError):
        raise ProofError("checkpoint root hash must be base64") from None
    if len(root_hash) != 32:
        raise ProofError("checkpoint root hash must be 32 bytes")
    return Checkpoint(origin, int(size), root_hash, tuple(lines[3:]))


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def log_verifier(origin: str, key: Ed25519PublicKey) -> Verifier:
    """The verifier key of a log: key name = origin, type 0x01 Ed25519."""
    return Verifier(origin, ED25519, raw_public_key(key))


def sign_checkpoint(key: SigningKey, origin: str, tree_size: int, root_hash: bytes) -> Note:
    """The checkpoint note for this tree, signed by the log key under the name ``origin``."""
    if not origin or any(c.isspace() for c in origin) or "+" in origin:
        raise ProofError("a checkpoint origin must be non-empty, without spaces or '+'")
    text = Checkpoint(origin, tree_size, root_hash).text()
    parse_checkpoint_text(text)  # refuses a size or root out of range
    kid = key_id(origin, ED25519, raw_public_key(key.public_key))
    return Note(text, (NoteSignature(origin, kid, key.sign(text.encode())),))


def open_checkpoint(data: str | bytes, logs: list[Verifier]) -> tuple[Checkpoint, Note]:
    """Parse a checkpoint note and check that one of ``logs`` signed it.

    Signatures by keys not among ``logs`` are ignored (signed-note); a signature by a
    known key that does not verify rejects the note; so does a note no known key signed.
    """
    note = parse_note(data)
    checkpoint = parse_checkpoint_text(note.text)
    verified: set[str] = set()
    for sig in note.signatures:
        for log in logs:
            if log.sig_type == ED25519 and log.matches(sig):
                if not log.verify(note.text.encode(), sig.signature):
                    raise SignatureError(f"the log signature by {sig.name} does not verify")
                verified.add(log.name)
    if not verified:
        raise SignatureError("no known log key signed this checkpoint", unknown_key=True)
    if checkpoint.origin not in verified:
        raise SignatureError("the checkpoint's origin is not the name of the key that signed it")
    return checkpoint, note
