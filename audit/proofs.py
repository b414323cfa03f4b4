"""Proof value objects as the trail hands them out, and the receipt-to-tree-head check.

A proof is only meaningful against a signed tree head: :func:`verify_receipt_inclusion`
is what a third party runs with (receipt, tree head, inclusion proof, public keys)
to accept that a released statistic came out of the sandbox and is in the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.errors import ProofError
from audit.merkle import SHA256, verify_consistency, verify_inclusion
from audit.receipts import Receipt, verify_receipt
from audit.signing import TreeHead, verify_tree_head

__all__ = ["ConsistencyProof", "InclusionProof", "verify_receipt_inclusion"]


def _path(data: Mapping[str, Any]) -> tuple[bytes, ...]:
    path = data.get("path")
    if not isinstance(path, list):
        raise ProofError("path must be a list of hex hashes")
    try:
        return tuple(bytes.fromhex(item) for item in path)
    except (TypeError, ValueError):
        raise ProofError("path must be a list of hex hashes") from None


def _int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofError(f"{name} must be a non-negative integer")
    return value


@dataclass(frozen=True)
class InclusionProof:
    """Audit path of entry ``seq`` (its leaf index) in the tree of ``tree_size`` entries."""

    seq: int
    tree_size: int
    leaf_hash: bytes
    path: tuple[bytes, ...]

    def verify(self, root: bytes) -> None:
        """Raise :class:`ProofError` (or :class:`RootMismatchError`) unless it leads to ``root``."""
        verify_inclusion(self.seq, self.tree_size, self.leaf_hash, self.path, root)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "tree_size": self.tree_size,
            "leaf_hash": self.leaf_hash.hex(),
            "path": [node.hex() for node in self.path],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InclusionProof:
        try:
            leaf = bytes.fromhex(data["leaf_hash"])
        except (KeyError, TypeError, ValueError):
            raise ProofError("leaf_hash must be hex") from None
        return cls(_int(data, "seq"), _int(data, "tree_size"), leaf, _path(data))


@dataclass(frozen=True)
class ConsistencyProof:
    """Proof that the log at ``size1`` is a prefix of the log at ``size2``."""

    size1: int
    size2: int
    path: tuple[bytes, ...]

    def verify(self, root1: bytes, root2: bytes) -> None:
        verify_consistency(self.size1, self.size2, self.path, root1, root2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size1": self.size1,
            "size2": self.size2,
            "path": [node.hex() for node in self.path],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConsistencyProof:
        return cls(_int(data, "size1"), _int(data, "size2"), _path(data))


def verify_receipt_inclusion(
    receipt: Receipt,
    head: TreeHead,
    proof: InclusionProof,
    public_keys: Mapping[str, Ed25519PublicKey],
) -> None:
    """Raise unless the receipt is genuine and its entry is under the signed ``head``.

    That is the promise kept: the receipt's promise (or format 1 signature) holds, and
    ``proof`` leads from its entry's leaf to the root a known key signed in ``head``.
    """
    verify_receipt(receipt, public_keys)
    verify_tree_head(head, public_keys)
    if proof.seq != receipt.seq or proof.tree_size != head.tree_size:
        raise ProofError("proof is for another entry or another tree size")
    if proof.leaf_hash != SHA256.hash_leaf(receipt.entry):
        raise ProofError("proof is for another entry's leaf hash")
    proof.verify(head.root_hash)
