"""Signed JSON documents: Ed25519 over the RFC 8785 canonical form of a typed body.

Registration certificates and release receipts are both
``{"<kind>": body, "key_id": ..., "signature": ...}``; anyone with the
platform's public keys verifies them offline.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.keys import SigningKey, verify_signature
from sandbox.core.errors import CertificateError

__all__ = ["sign_document", "verify_document"]


def sign_document(field: str, body: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    signature = key.sign(rfc8785.dumps(dict(body)))
    return {
        field: dict(body),
        "key_id": key.key_id,
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def verify_document(
    doc: Mapping[str, Any],
    field: str,
    doc_type: str,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    rule: str,
) -> dict[str, Any]:
    """Return the body if ``doc`` is a valid signed ``doc_type``; else raise."""
    body = doc.get(field)
    key_id = doc.get("key_id")
    signature_b64 = doc.get("signature")
    if (
        not isinstance(body, dict)
        or not isinstance(key_id, str)
        or not isinstance(signature_b64, str)
    ):
        raise CertificateError(
            f"a signed document has '{field}', 'key_id' and 'signature'",
            rule=f"{rule}.structure",
        )
    if body.get("type") != doc_type:
        raise CertificateError(f"not a {doc_type} document", rule=f"{rule}.structure")
    if key_id not in public_keys:
        raise CertificateError(f"signed by unknown key {key_id}", rule=f"{rule}.unknown_key")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise CertificateError("signature is not base64", rule=f"{rule}.signature") from None
    if not verify_signature(dict(public_keys), key_id, signature, rfc8785.dumps(body)):
        raise CertificateError(
            "signature does not match the document (altered or forged)",
            rule=f"{rule}.signature",
        )
    return body
