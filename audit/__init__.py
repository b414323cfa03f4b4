"""Hash-chained, Merkle-proven, signed audit trail, verifiable offline.

A standalone library (it imports nothing from ``sandbox``).  The usual entry
points::

    trail = AuditTrail.open(url, KeyRing(keys_dir), sign_every_n=1000, sign_every_s=60)
    receipt = trail.append(actor=..., role=..., action=..., target=..., decision="allow",
                           rule=..., details=query_details(...))
    trail.inclusion_proof(receipt.seq)        # once a signed tree head covers it
    trail.export(out_dir); verify_export(out_dir).ok

``docs/audit.md`` specifies every byte an independent verifier needs.

:class:`AuditTrail` and :class:`EntryFilter` need SQLAlchemy; they are imported on
first use, so that verifying an export (``verify_export``) loads no database code.
"""

from typing import TYPE_CHECKING, Any

from audit.chain import GENESIS_HASH, entry_hash
from audit.checker import PROBLEM_KINDS, Problem, Report
from audit.entry import DECISIONS, Entry, EntryDraft, query_details
from audit.errors import (
    AuditError,
    ExportError,
    InvalidEntry,
    InvalidQuery,
    NotFound,
    ProofError,
    RootMismatchError,
    SignatureError,
    StoreUnavailable,
)
from audit.export import ExportSummary
from audit.keys import KeyRing, KeyRingError
from audit.proofs import ConsistencyProof, InclusionProof, verify_receipt_inclusion
from audit.receipts import Promise, Receipt, verify_receipt
from audit.signing import TreeHead, verify_tree_head
from audit.verify import verify_export

if TYPE_CHECKING:
    from audit.queries import EntryFilter
    from audit.trail import AuditTrail

__all__ = [
    "DECISIONS",
    "GENESIS_HASH",
    "PROBLEM_KINDS",
    "AuditError",
    "AuditTrail",
    "ConsistencyProof",
    "Entry",
    "EntryDraft",
    "EntryFilter",
    "ExportError",
    "ExportSummary",
    "InclusionProof",
    "InvalidEntry",
    "InvalidQuery",
    "KeyRing",
    "KeyRingError",
    "NotFound",
    "Problem",
    "Promise",
    "ProofError",
    "Receipt",
    "Report",
    "RootMismatchError",
    "SignatureError",
    "StoreUnavailable",
    "TreeHead",
    "entry_hash",
    "query_details",
    "verify_export",
    "verify_receipt",
    "verify_receipt_inclusion",
    "verify_tree_head",
]

_LAZY = {"AuditTrail": "audit.trail", "EntryFilter": "audit.queries"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
