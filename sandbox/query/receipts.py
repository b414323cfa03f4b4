"""Release receipts: the platform's signed statement that a result came out of the sandbox.

A receipt binds the normalized query's hash, the grants and policy version,
each dataset's version and source hash, the ε spent, the released result's
SHA-256 and the audit entry (sequence and hash) that recorded the release.
An operator hands it to a third party, who verifies it offline with the
platform's public key (and, with an inclusion proof, that the audit entry is in
the log every auditor sees).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.keys import SigningKey
from sandbox.enclave.signed import sign_document, verify_document

__all__ = ["RECEIPT_TYPE", "issue_receipt", "verify_receipt"]

RECEIPT_TYPE = "sandbox.query.release-receipt/v1"


def issue_receipt(fields: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    return sign_document("receipt", {"type": RECEIPT_TYPE, **fields}, key)


def verify_receipt(
    doc: Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]
) -> dict[str, Any]:
    """The receipt body if its signature holds; raises CertificateError otherwise."""
    return verify_document(doc, "receipt", RECEIPT_TYPE, public_keys, rule="receipt")
