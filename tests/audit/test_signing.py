"""Signed tree heads: message, JSON form, forgeries, unknown keys, rotation (receipts:
test_receipts.py)."""

from __future__ import annotations

import dataclasses

import pytest

from audit import KeyRing, TreeHead, verify_tree_head
from audit.errors import ProofError, SignatureError
from audit.signing import sign_tree_head, tree_head_message


def head(ring: KeyRing, size: int = 3) -> TreeHead:
    return sign_tree_head(
        ring.active(),
        tree_size=size,
        timestamp_ms=1_700_000_000_000,
        root_hash=b"\x11" * 32,
        chain_head=b"\x22" * 32,
    )


def test_tree_head_message_layout() -> None:
    message = tree_head_message(3, 5, b"\x11" * 32, b"\x22" * 32)
    assert message == (
        b"sandbox-audit/tree-head/v1\n"
        + (3).to_bytes(8, "big")
        + (5).to_bytes(8, "big")
        + b"\x11" * 32
        + b"\x22" * 32
    )


def test_tree_head_round_trips_and_verifies(keyring: KeyRing) -> None:
    signed = head(keyring)
    again = TreeHead.from_dict(signed.to_dict())
    assert again == signed
    verify_tree_head(again, keyring.public_keys())


@pytest.mark.parametrize("field", ["tree_size", "timestamp_ms", "root_hash", "chain_head"])
def test_any_changed_field_breaks_the_signature(keyring: KeyRing, field: str) -> None:
    signed = head(keyring)
    value = getattr(signed, field)
    forged = dataclasses.replace(
        signed, **{field: value + 1 if isinstance(value, int) else b"\x99" * 32}
    )
    with pytest.raises(SignatureError, match="does not verify"):
        verify_tree_head(forged, keyring.public_keys())


def test_unknown_key_and_rotation(keyring: KeyRing, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stranger = KeyRing(tmp_path / "stranger")
    stranger.ensure()
    with pytest.raises(SignatureError) as caught:
        verify_tree_head(head(stranger), keyring.public_keys())
    assert caught.value.unknown_key
    old = head(keyring)
    keyring.rotate()
    new = head(keyring)
    assert new.key_id != old.key_id
    for signed in (old, new):  # old public keys stay for verification
        verify_tree_head(signed, keyring.public_keys())


@pytest.mark.parametrize(
    "bad",
    [
        {"tree_size": -1},
        {"tree_size": True},
        {"root_hash": "zz"},
        {"root_hash": "00"},
        {"signature": "***"},
        {"key_id": 5},
    ],
)
def test_malformed_tree_heads_are_refused(keyring: KeyRing, bad: dict[str, object]) -> None:
    with pytest.raises(ProofError):
        TreeHead.from_dict({**head(keyring).to_dict(), **bad})
