"""Receipts: what an append returns, with the log's signed promise of inclusion.

A receipt names the entry (its bytes, ``seq``, ``entry_hash``, ``leaf_hash``) and
carries a **promise** in the manner of Certificate Transparency's signed certificate
timestamps: one Ed25519 signature per commit (group) over the group's first ``seq``,
its number of entries, the commit time and the Merkle root of the group's leaves::

    promise:  b"sandbox-audit/promise/v1\\n" || u64 first || u64 count || u64 timestamp_ms
              || batch_root

``batch_root`` is the RFC 9162 Merkle root of the leaf hashes of entries
``first .. first + count - 1``; each receipt carries its entry's audit path in that
small tree (``batch_path``).  So one signature serves a whole group, and a receipt
is checked alone: entry -> leaf hash -> batch root -> signature.  The promise is
kept when a signed tree head of size >= ``first + count`` has the entry at ``seq``
(an inclusion proof, :func:`audit.proofs.verify_receipt_inclusion`).

Ed25519 signatures are deterministic, so the promise is signed when first asked
for (serializing or checking a receipt), not on the append path: most receipts are
never looked at, and signing each group would cost the writer a signature per
commit.  A receipt of format 1 (before promises: ``key_id`` and ``signature`` over
``b"sandbox-audit/receipt/v1\\n" || u64 seq || entry_hash``) still verifies.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.chain import entry_hash
from audit.entry import peek
from audit.errors import InvalidEntry, ProofError
from audit.keys import SigningKey
from audit.merkle import SHA256, root_from_inclusion_proof
from audit.signing import _check_signature, _count, _unb64, _unhex

__all__ = [
    "PROMISE_CONTEXT",
    "RECEIPT_CONTEXT",
    "Promise",
    "Receipt",
    "promise_message",
    "receipt_message",
    "verify_receipt",
]

PROMISE_CONTEXT = b"sandbox-audit/promise/v1\n"
RECEIPT_CONTEXT = b"sandbox-audit/receipt/v1\n"


def promise_message(first: int, count: int, timestamp_ms: int, batch_root: bytes) -> bytes:
    if len(batch_root) != 32:
        raise ValueError("batch_root must be 32 bytes")
    return PROMISE_CONTEXT + struct.pack(">QQQ", first, count, timestamp_ms) + batch_root


def receipt_message(seq: int, entry_hash_: bytes) -> bytes:
    """The message a receipt of format 1 (one signature per entry) was signed over."""
    if len(entry_hash_) != 32:
        raise ValueError("entry_hash must be 32 bytes")
    return RECEIPT_CONTEXT + struct.pack(">Q", seq) + entry_hash_


class Promise:
    """The signed statement "entries ``first .. first + count - 1`` with this root are in
    the log since ``timestamp_ms``", shared by the receipts of one commit.

    Made by the writer with its key (``key``) and signed on first use of
    :attr:`signature`; read back from JSON with its signature (``signature``).
    """

    __slots__ = ("_key", "_signature", "batch_root", "count", "first", "key_id", "timestamp_ms")

    def __init__(
        self,
        *,
        first: int,
        count: int,
        timestamp_ms: int,
        batch_root: bytes,
        key_id: str,
        signature: bytes | None = None,
        key: SigningKey | None = None,
    ) -> None:
        if (signature is None) == (key is None):
            raise ValueError("a promise needs its signature or the key to sign it, not both")
        self.first = first
        self.count = count
        self.timestamp_ms = timestamp_ms
        self.batch_root = batch_root
        self.key_id = key_id
        self._signature = signature
        self._key = key

    def message(self) -> bytes:
        return promise_message(self.first, self.count, self.timestamp_ms, self.batch_root)

    @property
    def signature(self) -> bytes:
        """The Ed25519 signature (deterministic: a race signs the same bytes twice)."""
        if self._signature is None:
            assert self._key is not None
            self._signature = self._key.sign(self.message())
        return self._signature

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Promise):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.first, self.count, self.timestamp_ms, self.batch_root))

    def __repr__(self) -> str:
        return f"Promise(first={self.first}, count={self.count}, key_id={self.key_id!r})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "count": self.count,
            "timestamp_ms": self.timestamp_ms,
            "batch_root": self.batch_root.hex(),
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Promise:
        if not isinstance(data, Mapping) or not isinstance(data.get("key_id"), str):
            raise ProofError("promise must be an object with a string key_id")
        return cls(
            first=_count(data, "first"),
            count=_count(data, "count"),
            timestamp_ms=_count(data, "timestamp_ms"),
            batch_root=_unhex(data, "batch_root"),
            key_id=data["key_id"],
            signature=_unb64(data, "signature"),
        )


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """What an append returns: the entry, where it sits, and the log's promise.

    With the entry bytes anyone recomputes ``entry_hash`` (``prev`` is inside the
    entry) and ``leaf_hash``, follows ``batch_path`` to the promise's root and checks
    its signature; later an inclusion proof up to a signed tree head shows the entry
    is in the log every auditor sees.  Format 1 receipts have ``key_id`` and
    ``signature`` (over :func:`receipt_message`) instead of a promise.
    """

    seq: int
    entry_hash: bytes
    leaf_hash: bytes
    time: str
    entry: bytes
    promise: Promise | None = None
    batch_path: tuple[bytes, ...] = field(default=())
    key_id: str | None = None
    signature: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "entry_hash": self.entry_hash.hex(),
            "leaf_hash": self.leaf_hash.hex(),
            "time": self.time,
            "entry": self.entry.decode("utf-8"),
        }
        if self.promise is not None:
            out["promise"] = self.promise.to_dict()
            out["batch_path"] = [node.hex() for node in self.batch_path]
        if self.key_id is not None and self.signature is not None:
            out["key_id"] = self.key_id
            out["signature"] = base64.b64encode(self.signature).decode("ascii")
        return out

    @classmethod
    def committed(
        cls,
        seq: int,
        entry_hash: bytes,
        leaf_hash: bytes,
        time: str,
        entry: bytes,
        promise: Promise,
        batch_path: tuple[bytes, ...],
    ) -> Receipt:
        """The receipt the writer hands back for an entry it just committed.

        Filled directly, as the generated ``__init__`` would, without its per-field
        ``object.__setattr__`` (a frozen dataclass's cost, paid once per append).
        """
        receipt = object.__new__(cls)
        receipt.__dict__.update(
            seq=seq,
            entry_hash=entry_hash,
            leaf_hash=leaf_hash,
            time=time,
            entry=entry,
            promise=promise,
            batch_path=batch_path,
            key_id=None,
            signature=None,
        )
        return receipt

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Receipt:
        """Parse either format; raises :class:`ProofError` on malformed input."""
        if not isinstance(data, Mapping) or not isinstance(data.get("entry"), str):
            raise ProofError("receipt needs a string entry")
        promise, key_id, signature = None, None, None
        path: tuple[bytes, ...] = ()
        if "promise" in data:
            promise = Promise.from_dict(data["promise"])
            path = _path(data.get("batch_path"))
        elif isinstance(data.get("key_id"), str):
            key_id, signature = data["key_id"], _unb64(data, "signature")
        else:
            raise ProofError("receipt has neither a promise nor a key_id and signature")
        return cls(
            seq=_count(data, "seq"),
            entry_hash=_unhex(data, "entry_hash"),
            leaf_hash=_unhex(data, "leaf_hash"),
            time=str(data.get("time", "")),
            entry=data["entry"].encode("utf-8"),
            promise=promise,
            batch_path=path,
            key_id=key_id,
            signature=signature,
        )


def _path(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise ProofError("batch_path must be a list of hex hashes")
    try:
        path = tuple(bytes.fromhex(item) for item in value)
    except (TypeError, ValueError):
        raise ProofError("batch_path must be a list of hex hashes") from None
    if any(len(node) != 32 for node in path):
        raise ProofError("batch_path hashes must be 32 bytes")
    return path


def verify_receipt(receipt: Receipt, public_keys: Mapping[str, Ed25519PublicKey]) -> None:
    """Raise unless the receipt's entry, position, hashes and promise (or signature) agree.

    :class:`ProofError` names what does not hold; :class:`~audit.errors.SignatureError`
    a bad signature or an unknown key.
    """
    try:
        seq, prev = peek(receipt.entry)
    except InvalidEntry as exc:
        raise ProofError(f"receipt entry is malformed: {exc}") from None
    if seq != receipt.seq:
        raise ProofError(f"receipt says seq {receipt.seq} but its entry says {seq}")
    if entry_hash(prev, receipt.entry) != receipt.entry_hash:
        raise ProofError("receipt entry does not hash to its entry_hash")
    if SHA256.hash_leaf(receipt.entry) != receipt.leaf_hash:
        raise ProofError("receipt entry does not hash to its leaf_hash")
    promise = receipt.promise
    if promise is not None:
        _check_promise(receipt, promise, receipt.batch_path)
        _check_signature(public_keys, promise.key_id, promise.signature, promise.message())
    elif receipt.key_id is not None and receipt.signature is not None:
        message = receipt_message(seq, receipt.entry_hash)
        _check_signature(public_keys, receipt.key_id, receipt.signature, message)
    else:
        raise ProofError("receipt has neither a promise nor a signature")


def _check_promise(receipt: Receipt, promise: Promise, path: Sequence[bytes]) -> None:
    if not promise.first <= receipt.seq < promise.first + promise.count:
        raise ProofError(
            f"receipt seq {receipt.seq} is outside its promise's entries "
            f"{promise.first}..{promise.first + promise.count - 1}"
        )
    root = root_from_inclusion_proof(
        receipt.seq - promise.first, promise.count, receipt.leaf_hash, path
    )
    if root != promise.batch_root:
        raise ProofError("receipt batch_path does not lead to its promise's batch_root")
