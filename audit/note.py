"""C2SP signed notes (https://c2sp.org/signed-note): parse, format, sign and verify.

A note is a UTF-8 text ending in a newline, a blank line, then signature lines
``"\\u2014 <key name> <base64(4-byte key id || signature)>\\n"``.  Only Ed25519 key
types are implemented: type ``0x01`` (a log's note signature over the text) and
``0x04`` (a witness's timestamped cosignature, :mod:`audit.cosignature`).  Pure:
no I/O.  Unknown signatures are kept and ignored, as the spec demands.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.errors import ProofError

__all__ = [
    "ED25519",
    "ED25519_COSIGNATURE",
    "MAX_SIGNATURES",
    "Note",
    "NoteSignature",
    "Verifier",
    "format_note",
    "key_id",
    "parse_note",
    "parse_vkey",
    "vkey",
]

ED25519 = 0x01
ED25519_COSIGNATURE = 0x04
MAX_SIGNATURES = 64
_DASH = "\u2014 "


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(key name || 0x0A || signature type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise ProofError("a key name must be non-empty, without spaces or '+'")


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes  # what follows the 4-byte key id

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{_DASH}{self.name} {blob}\n"


@dataclass(frozen=True)
class Note:
    text: str  # including its final newline
    signatures: tuple[NoteSignature, ...]

    def with_signatures(self, extra: tuple[NoteSignature, ...]) -> Note:
        """This note with ``extra`` added (a signature already present is not repeated)."""
        merged = list(self.signatures)
        for sig in extra:
            if sig not in merged:
                merged.append(sig)
        return Note(self.text, tuple(merged))


def format_note(note: Note) -> str:
    return note.text + "\n" + "".join(s.line() for s in note.signatures)


def parse_note(data: str | bytes) -> Note:
    """Parse a signed note; raise :class:`ProofError` if it is not one."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProofError("a note must be UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in data):
        raise ProofError("a note must not contain control characters other than newline")
    if not data.endswith("\n"):
        raise ProofError("a note must end with a newline")
    split = data.rfind("\n\n")
    if split < 0:
        raise ProofError("a note has no blank line before its signatures")
    text, block = data[: split + 1], data[split + 2 :]
    signatures = []
    for line in block.split("\n")[:-1]:
        if not line.startswith(_DASH):
            raise ProofError("a signature line must start with an em dash and a space")
        parts = line[len(_DASH) :].split(" ")
        if len(parts) != 2:
            raise ProofError("a signature line must be '\u2014 <name> <base64>'")
        name, blob = parts
        _check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            raise ProofError("a note signature must be standard base64") from None
        if len(raw) < 5:
            raise ProofError("a note signature is too short")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    if not signatures:
        raise ProofError("a note must carry at least one signature")
    if len(signatures) > MAX_SIGNATURES:
        raise ProofError(f"a note may carry at most {MAX_SIGNATURES} signatures")
    return Note(text, tuple(signatures))


@dataclass(frozen=True)
class Verifier:
    """A known key: name, type and the raw 32-byte Ed25519 public key."""

    name: str
    sig_type: int
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public_key)

    def matches(self, sig: NoteSignature) -> bool:
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def vkey(self) -> str:
        return vkey(self.name, self.sig_type, self.public_key)


def vkey(name: str, sig_type: int, public_key: bytes) -> str:
    """``<name>+<hex key id>+<base64(type || key)>`` (signed-note "Verifier keys")."""
    _check_name(name)
    blob = base64.b64encode(bytes([sig_type]) + public_key).decode("ascii")
    return f"{name}+{key_id(name, sig_type, public_key).hex()}+{blob}"


def parse_vkey(text: str) -> Verifier:
    """Parse a verifier key; its key id must be the one its name and key give."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise ProofError("a verifier key is '<name>+<hex key id>+<base64 key>'")
    name, hex_id, blob = parts
    _check_name(name)
    try:
        raw = base64.b64decode(blob, validate=True)
        wanted = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError):
        raise ProofError("a verifier key's id must be hex and its key base64") from None
    if len(raw) != 33 or raw[0] not in (ED25519, ED25519_COSIGNATURE) or len(wanted) != 4:
        raise ProofError("only Ed25519 verifier keys (type 0x01 or 0x04) are supported")
    verifier = Verifier(name, raw[0], raw[1:])
    if verifier.key_id != wanted:
        raise ProofError(f"verifier key {name}: the key id does not match the key")
    return verifier
