"""The key ring reads each private key once, and again whenever its file changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audit import KeyRing
from audit.keys import KeyRingError


def test_the_active_key_is_parsed_once(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys")
    first = ring.ensure()
    assert ring.active() is ring.active()  # the same parsed key, not a new parse
    assert ring.active().key_id == first.key_id


def test_a_key_readable_by_others_is_refused_after_it_was_read(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys")
    key = ring.ensure()
    path = tmp_path / "keys" / f"{key.key_id}.key"
    os.chmod(path, 0o644)
    with pytest.raises(KeyRingError, match="readable by others"):
        ring.active()
    os.chmod(path, 0o600)
    assert ring.active().key_id == key.key_id


def test_a_key_file_replaced_under_its_id_is_read_and_checked_again(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys")
    key = ring.ensure()
    other = KeyRing(tmp_path / "other").ensure()
    path = tmp_path / "keys" / f"{key.key_id}.key"
    replacement = (tmp_path / "other" / f"{other.key_id}.key").read_bytes()
    path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(replacement)
    with pytest.raises(KeyRingError, match="does not match its key id"):
        ring.active()


def test_a_rotation_by_another_ring_is_seen(tmp_path: Path) -> None:
    """A server's ring sees a key rotated by the CLI (another ring, another process)."""
    server, cli = KeyRing(tmp_path / "keys"), KeyRing(tmp_path / "keys")
    before = server.ensure()
    after = cli.rotate()
    assert server.active().key_id == after.key_id != before.key_id
