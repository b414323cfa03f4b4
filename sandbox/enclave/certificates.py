"""Registration certificates (数据资产登记凭证): signed statements that a dataset was registered.

A certificate is a JSON document ``{"certificate": {...}, "key_id": ..., "signature": ...}``
where the signature is Ed25519 over the RFC 8785 canonical JSON of the
``certificate`` object.  Anyone with the platform's public key can verify one
offline; changing any field, or signing with a key the verifier does not hold,
makes verification fail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.keys import SigningKey
from sandbox.core.errors import CertificateError
from sandbox.enclave.signed import sign_document, verify_document

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
    return sign_document("certificate", body, key)


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
    return verify_document(doc, "certificate", CERTIFICATE_TYPE, public_keys, rule="certificate")
