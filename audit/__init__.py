"""Hash-chained, Merkle-proven, signed audit trail, verifiable offline.

A standalone library (it imports nothing from ``sandbox``).  The usual entry
points::

    trail = AuditTrail.open(url, KeyRing(keys_dir), sign_every_n=1000, sign_every_s=60)
    receipt = trail.append(actor=..., role=..., action=..., target=..., decision="allow",
                           rule=..., details=query_details(...))
    trail.inclusion_proof(receipt.seq)        # once a signed tree head covers it
    trail.export(out_dir); verify_export(out_dir).ok

``docs/audit.md`` specifies every byte an independent verifier needs.
"""

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
from audit.queries import EntryFilter
from audit.signing import Receipt, TreeHead, verify_receipt, verify_tree_head
from audit.trail import AuditTrail
from audit.verify import verify_export

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
