"""Registration certificates verify offline; any change or unknown key fails."""

from __future__ import annotations

import json

import pytest

from audit.keys import KeyRing
from sandbox.core.errors import CertificateError
from sandbox.enclave.certificates import issue_certificate, read_certificate, verify_certificate

FIELDS = {
    "dataset": "health.claims",
    "version": 1,
    "owner": "health",
    "title": "Claims",
    "schema_sha256": "a" * 64,
    "classification_sha256": "b" * 64,
    "source": {"connector": "csv", "uri": "file:///x.csv", "sha256": "c" * 64},
    "row_count": 10,
    "issued_at": "2026-11-24T10:00:00.000000Z",
}


@pytest.fixture
def ring(tmp_path) -> KeyRing:
    ring = KeyRing(tmp_path / "keys")
    ring.ensure()
    return ring


def test_sign_and_verify(ring: KeyRing) -> None:
    cert = issue_certificate(FIELDS, ring.active())
    body = verify_certificate(cert, ring.public_keys())
    assert body["dataset"] == "health.claims" and body["row_count"] == 10


@pytest.mark.parametrize(
    ("field", "value"),
    [("row_count", 11), ("owner", "market"), ("schema_sha256", "d" * 64), ("version", 2)],
)
def test_tampered_field_fails(ring: KeyRing, field: str, value: object) -> None:
    cert = issue_certificate(FIELDS, ring.active())
    cert["certificate"][field] = value
    with pytest.raises(CertificateError) as info:
        verify_certificate(cert, ring.public_keys())
    assert info.value.rule == "certificate.signature"


def test_tampered_nested_source_fails(ring: KeyRing) -> None:
    cert = issue_certificate(FIELDS, ring.active())
    cert["certificate"]["source"]["sha256"] = "e" * 64
    with pytest.raises(CertificateError):
        verify_certificate(cert, ring.public_keys())


def test_unknown_key_fails(ring: KeyRing, tmp_path) -> None:
    other = KeyRing(tmp_path / "other")
    cert = issue_certificate(FIELDS, other.ensure())
    with pytest.raises(CertificateError) as info:
        verify_certificate(cert, ring.public_keys())
    assert info.value.rule == "certificate.unknown_key"


def test_forged_key_id_fails(ring: KeyRing, tmp_path) -> None:
    other = KeyRing(tmp_path / "other")
    cert = issue_certificate(FIELDS, other.ensure())
    cert["key_id"] = ring.active().key_id  # claim the platform key signed it
    with pytest.raises(CertificateError, match="altered or forged"):
        verify_certificate(cert, ring.public_keys())


def test_rotation_keeps_old_certificates_valid(ring: KeyRing) -> None:
    old = issue_certificate(FIELDS, ring.active())
    new_key = ring.rotate()
    assert ring.active().key_id == new_key.key_id != old["key_id"]
    verify_certificate(old, ring.public_keys())
    verify_certificate(issue_certificate(FIELDS, new_key), ring.public_keys())


def test_private_keys_are_owner_only(ring: KeyRing) -> None:
    for path in ring.directory.glob("*.key"):
        assert path.stat().st_mode & 0o777 == 0o600


def test_malformed_documents(tmp_path, ring: KeyRing) -> None:
    path = tmp_path / "cert.json"
    path.write_text("not json")
    with pytest.raises(CertificateError, match="not JSON"):
        read_certificate(path)
    with pytest.raises(CertificateError, match="'certificate', 'key_id' and 'signature'"):
        verify_certificate({"certificate": {}}, ring.public_keys())
    cert = issue_certificate(FIELDS, ring.active())
    cert["signature"] = "!!!"
    with pytest.raises(CertificateError, match="not base64"):
        verify_certificate(cert, ring.public_keys())
    path.write_text(json.dumps(cert))
    assert read_certificate(path)["key_id"] == ring.active().key_id
