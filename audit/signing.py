"""Signed tree heads: the byte string that gets signed, its JSON form, and the check.

This is the one place a tree head is signed and checked (the writer, the exports and
every verifier call it).  Each signed message starts with its own context string,
so a tree-head signature can never be replayed as a receipt's promise
(:mod:`audit.receipts`) or the other way round.  Integers are unsigned 64-bit
big-endian, hashes their raw 32 bytes::

    tree head: b"sandbox-audit/tree-head/v1\\n" || u64 tree_size || u64 timestamp_ms
               || root_hash || chain_head

``chain_head`` is the hash-chain value after the last covered entry (the
genesis hash for size 0), so one signature vouches for both structures.
Hashes travel as lowercase hex, signatures as standard base64.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.errors import ProofError, SignatureError
from audit.keys import SigningKey, verify_signature

__all__ = [
    "TREE_HEAD_CONTEXT",
    "TreeHead",
    "sign_tree_head",
    "tree_head_message",
    "verify_tree_head",
]

TREE_HEAD_CONTEXT = b"sandbox-audit/tree-head/v1\n"


def tree_head_message(
    tree_size: int, timestamp_ms: int, root_hash: bytes, chain_head: bytes
) -> bytes:
    if len(root_hash) != 32 or len(chain_head) != 32:
        raise ValueError("root_hash and chain_head must be 32 bytes")
    return TREE_HEAD_CONTEXT + struct.pack(">QQ", tree_size, timestamp_ms) + root_hash + chain_head


def _unhex(data: Mapping[str, Any], name: str) -> bytes:
    try:
        value = bytes.fromhex(data[name])
    except (KeyError, TypeError, ValueError):
        raise ProofError(f"{name} must be hex") from None
    if len(value) != 32:
        raise ProofError(f"{name} must be 32 bytes")
    return value


def _unb64(data: Mapping[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(data[name], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise ProofError(f"{name} must be base64") from None


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise ProofError(f"{name} must be an unsigned 64-bit integer")
    return value


@dataclass(frozen=True, kw_only=True)
class TreeHead:
    """A signed statement: "the log had ``tree_size`` entries with this root at this time"."""

    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    chain_head: bytes
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return tree_head_message(self.tree_size, self.timestamp_ms, self.root_hash, self.chain_head)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "timestamp_ms": self.timestamp_ms,
            "root_hash": self.root_hash.hex(),
            "chain_head": self.chain_head.hex(),
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeHead:
        """Parse the JSON form; raises :class:`ProofError` on malformed input."""
        if not isinstance(data, Mapping) or not isinstance(data.get("key_id"), str):
            raise ProofError("tree head must be an object with a string key_id")
        return cls(
            tree_size=_count(data, "tree_size"),
            timestamp_ms=_count(data, "timestamp_ms"),
            root_hash=_unhex(data, "root_hash"),
            chain_head=_unhex(data, "chain_head"),
            key_id=data["key_id"],
            signature=_unb64(data, "signature"),
        )


def sign_tree_head(
    key: SigningKey, *, tree_size: int, timestamp_ms: int, root_hash: bytes, chain_head: bytes
) -> TreeHead:
    message = tree_head_message(tree_size, timestamp_ms, root_hash, chain_head)
    return TreeHead(
        tree_size=tree_size,
        timestamp_ms=timestamp_ms,
        root_hash=root_hash,
        chain_head=chain_head,
        key_id=key.key_id,
        signature=key.sign(message),
    )


def _check_signature(
    public_keys: Mapping[str, Ed25519PublicKey], key_id: str, signature: bytes, message: bytes
) -> None:
    if key_id not in public_keys:
        raise SignatureError(f"signed by unknown key {key_id!r}", unknown_key=True)
    if not verify_signature(dict(public_keys), key_id, signature, message):
        raise SignatureError(f"signature by key {key_id} does not verify")


def verify_tree_head(head: TreeHead, public_keys: Mapping[str, Ed25519PublicKey]) -> None:
    """Raise :class:`SignatureError` unless a known key signed exactly this head."""
    _check_signature(public_keys, head.key_id, head.signature, head.message())
