"""Registration certificates (数据资产登记凭证): signed statements that a dataset was registered.

A certificate is a JSON document ``{"certificate": {...}, "key_id": ..., "signature": ...}``
where the signature is Ed25519 over the RFC 8785 canonical JSON of the
``certificate`` object.  Anyone with the platform's public key can verify one
offline; changing any field, or signing with a key the verifier does not hold,
makes verification fail.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.keys import SigningKey, verify_signature
from sandbox.errors import CertificateError

__all__ = [
    "CERTIFICATE_TYPE",
    "issue_certificate",
    "read_certificate",
    "verify_certificate",
]

CERTIFICATE_TYPE = "sandbox.dataset-registration/v1"
REQUIRED_FIELDS = (
    "type",
    "dataset",
    "version",
    "owner",
    "title",
    "schema_sha256",
    "classification_sha256",
    "source",
    "row_count",
    "issued_at",
)


def issue_certificate(fields: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """Sign ``fields`` (the certificate body) with the platform key."""
    body = {"type": CERTIFICATE_TYPE, **fields}
    missing = [name for name in REQUIRED_FIELDS if name not in body]
    if missing:
        raise CertificateError(f"certificate lacks fields {missing}", rule="certificate.fields")
    signature = key.sign(rfc8785.dumps(body))
    return {
        "certificate": body,
        "key_id": key.key_id,
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def read_certificate(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CertificateError(
            f"certificate file {path} does not exist", rule="certificate.read"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CertificateError(
            f"certificate file {path} is not JSON", rule="certificate.read"
        ) from None
    if not isinstance(doc, dict):
        raise CertificateError("a certificate is a JSON object", rule="certificate.structure")
    return doc


def verify_certificate(
    doc: Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]
) -> dict[str, Any]:
    """Return the certificate body if the signature holds; raise :class:`CertificateError`."""
    body = doc.get("certificate")
    key_id = doc.get("key_id")
    signature_b64 = doc.get("signature")
    if (
        not isinstance(body, dict)
        or not isinstance(key_id, str)
        or not isinstance(signature_b64, str)
    ):
        raise CertificateError(
            "a certificate has 'certificate', 'key_id' and 'signature'",
            rule="certificate.structure",
        )
    if body.get("type") != CERTIFICATE_TYPE:
        raise CertificateError(
            f"not a {CERTIFICATE_TYPE} certificate", rule="certificate.structure"
        )
    if key_id not in public_keys:
        raise CertificateError(
            f"certificate is signed by unknown key {key_id}", rule="certificate.unknown_key"
        )
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise CertificateError("signature is not base64", rule="certificate.signature") from None
    if not verify_signature(dict(public_keys), key_id, signature, rfc8785.dumps(body)):
        raise CertificateError(
            "signature does not match the certificate (altered or forged)",
            rule="certificate.signature",
        )
    return body
