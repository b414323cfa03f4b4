"""Master key providers, the data keyring and sealed bytes (sandbox/core/key_provider.py,
keyring.py, sealed.py)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.core.errors import EnclaveError
from sandbox.core.key_provider import EnvKeyProvider, FileKeyProvider, generate_key_file
from sandbox.core.keyring import load_keyring, new_keyring, save_keyring
from sandbox.core.sealed import SEGMENT, open_blob, seal, seal_blob, unseal


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "master.key"
    generate_key_file(path)
    return path


def test_generated_key_file_is_owner_only(key_file: Path) -> None:
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(key_file.read_text())) == 32


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660])
def test_looser_key_file_is_refused(key_file: Path, mode: int) -> None:
    os.chmod(key_file, mode)
    with pytest.raises(EnclaveError) as info:
        FileKeyProvider(key_file)
    assert info.value.rule == "keys.master_permissions"
    assert "chmod 600" in info.value.message
    assert key_file.read_text().strip() not in info.value.message


def test_missing_key_file_and_variable(tmp_path: Path) -> None:
    with pytest.raises(EnclaveError) as info:
        FileKeyProvider(tmp_path / "absent.key")
    assert info.value.rule == "keys.master_missing"
    with pytest.raises(EnclaveError) as info:
        EnvKeyProvider("SBX_TEST_MASTER", {})
    assert info.value.rule == "keys.master_missing"


def test_keyring_round_trip_and_wrong_master(tmp_path: Path, key_file: Path) -> None:
    ring = new_keyring()
    path = tmp_path / "datakeys.json"
    save_keyring(path, ring, FileKeyProvider(key_file))
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_keyring(path, FileKeyProvider(key_file))
    assert {(k.id, k.key) for k in loaded.keys} == {(k.id, k.key) for k in ring.keys}
    for k in ring.keys:
        assert base64.b64encode(k.key).decode() not in path.read_text()
    other = tmp_path / "other.key"
    generate_key_file(other)
    with pytest.raises(EnclaveError) as info:
        load_keyring(path, FileKeyProvider(other))
    assert info.value.rule == "keys.master_wrong"
    env = EnvKeyProvider("M", {"M": key_file.read_text()})
    assert load_keyring(path, env).keys == loaded.keys


def test_rewrapped_keyring_opens_only_with_the_new_master(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "datakeys.json"
    ring = new_keyring()
    save_keyring(path, ring, FileKeyProvider(key_file))
    new = tmp_path / "new.key"
    generate_key_file(new)
    save_keyring(path, ring, FileKeyProvider(new))
    assert load_keyring(path, FileKeyProvider(new)).keys == ring.keys
    with pytest.raises(EnclaveError):
        load_keyring(path, FileKeyProvider(key_file))


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from([0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1]))
def test_seal_round_trip(data: bytes, pad: int) -> None:
    ring = new_keyring()
    plain = data + b"x" * pad
    sealed = seal(ring.active("blobs"), plain, b"ctx")
    assert unseal(sealed, ring.get, b"ctx") == plain


def test_sealed_bytes_hide_values_and_refuse_tampering() -> None:
    ring = new_keyring()
    plain = b"district D01 secretvalue " * 100_000  # more than two segments
    sealed = seal_blob(ring, plain, "release_cache:abc")
    assert b"secretvalue" not in sealed
    assert open_blob(ring, sealed, "release_cache:abc") == plain
    failures = {
        "moved to another row": lambda: open_blob(ring, sealed, "release_cache:abd"),
        "cut short": lambda: open_blob(
            ring, sealed[: len(sealed) - SEGMENT // 2], "release_cache:abc"
        ),
        "last segment dropped": lambda: open_blob(
            ring, sealed[: len(sealed) - (len(plain) % SEGMENT) - 16], "release_cache:abc"
        ),
        "bit flipped": lambda: open_blob(
            ring, sealed[:100] + bytes([sealed[100] ^ 1]) + sealed[101:], "release_cache:abc"
        ),
        "another keyring": lambda: open_blob(new_keyring(), sealed, "release_cache:abc"),
        "plaintext in an encrypted home": lambda: open_blob(ring, plain, "release_cache:abc"),
        "sealed without keys": lambda: open_blob(None, sealed, "release_cache:abc"),
    }
    for name, attempt in failures.items():
        with pytest.raises(EnclaveError) as info:
            attempt()
        assert info.value.rule.startswith("keys."), name
        assert "secretvalue" not in info.value.message, name


def test_without_keys_blobs_are_stored_as_they_are() -> None:
    assert seal_blob(None, b"abc", "x") == b"abc"
    assert open_blob(None, b"abc", "x") == b"abc"
