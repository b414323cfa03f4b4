"""Data keys of a home, wrapped by the master key: ``HOME/datakeys.json``.

Each purpose (``enclave``: the DuckDB file; ``blobs``: held results and cached
releases in the control plane; ``uploads``: sources awaiting registration) has
one *active* data key, 32 random bytes from the OS, used for everything new, and
may have *retired* keys still needed to read older data until ``sandbox keys
reencrypt`` has re-encrypted it.  The file holds each key wrapped by the master
key (AES-256-GCM, its id and purpose as associated data) and the master key's
fingerprint, so a wrong master key is told apart from a damaged file.

Master key rotation (``sandbox keys rotate``) re-wraps every data key under a new
master key: the data is untouched.  The file is replaced atomically (write, fsync,
rename).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from sandbox.core.errors import EnclaveError
from sandbox.core.key_provider import KEY_BYTES, KeyProvider
from sandbox.core.timeutil import now_rfc3339

__all__ = ["PURPOSES", "DataKey", "Keyring", "load_keyring", "new_keyring", "save_keyring"]

PURPOSES = ("enclave", "blobs", "uploads")
FORMAT = "sandbox-datakeys/1"


@dataclass(frozen=True)
class DataKey:
    id: str
    purpose: str
    key: bytes = field(repr=False)
    created_at: str
    active: bool


@dataclass(frozen=True)
class Keyring:
    """The unwrapped data keys (in memory only)."""

    keys: tuple[DataKey, ...]

    def active(self, purpose: str) -> DataKey:
        for k in self.keys:
            if k.purpose == purpose and k.active:
                return k
        raise EnclaveError(f"the keyring has no active {purpose} key", rule="keys.damaged")

    def get(self, key_id: str) -> DataKey:
        for k in self.keys:
            if k.id == key_id:
                return k
        raise EnclaveError(
            f"data key {key_id} is not in the keyring (deleted after a re-encryption?)",
            rule="keys.unknown_data_key",
        )

    def of(self, purpose: str) -> list[DataKey]:
        """The purpose's keys, active first."""
        return sorted((k for k in self.keys if k.purpose == purpose), key=lambda k: not k.active)

    def with_new_keys(self, purposes: tuple[str, ...] = PURPOSES) -> Keyring:
        """A new active key for each purpose; the old ones retired (still readable)."""
        kept = tuple(replace(k, active=False) if k.purpose in purposes else k for k in self.keys)
        return Keyring(kept + tuple(_new_key(p) for p in purposes))

    def without_retired(self, purposes: tuple[str, ...] = PURPOSES) -> Keyring:
        return Keyring(tuple(k for k in self.keys if k.active or k.purpose not in purposes))


def _new_key(purpose: str) -> DataKey:
    return DataKey(
        id=f"dk_{secrets.token_hex(8)}",
        purpose=purpose,
        key=os.urandom(KEY_BYTES),
        created_at=now_rfc3339(),
        active=True,
    )


def new_keyring() -> Keyring:
    return Keyring(tuple(_new_key(p) for p in PURPOSES))


def _aad(key: DataKey | dict[str, object]) -> bytes:
    if isinstance(key, DataKey):
        return f"{FORMAT}|{key.id}|{key.purpose}".encode()
    return f"{FORMAT}|{key['id']}|{key['purpose']}".encode()


def save_keyring(path: Path, keyring: Keyring, provider: KeyProvider) -> None:
    """Wrap every data key under ``provider`` and replace the file atomically (mode 0600)."""
    document = {
        "format": FORMAT,
        "master_fingerprint": provider.fingerprint(),
        "keys": [
            {
                "id": k.id,
                "purpose": k.purpose,
                "created_at": k.created_at,
                "active": k.active,
                "wrapped": base64.b64encode(provider.wrap(k.key, _aad(k))).decode(),
            }
            for k in keyring.keys
        ],
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(document, indent=2).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_keyring(path: Path, provider: KeyProvider) -> Keyring:
    """Unwrap the data keys; a master key of another fingerprint is ``keys.master_wrong``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = document["keys"]
        recorded = str(document["master_fingerprint"])
        if document.get("format") != FORMAT:
            raise ValueError(document.get("format"))
    except FileNotFoundError:
        raise EnclaveError(
            f"keyring {path} is missing: restore it from a backup", rule="keys.keyring_missing"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise EnclaveError(
            f"keyring {path} is damaged: restore it from a backup", rule="keys.damaged"
        ) from None
    if recorded != provider.fingerprint():
        pending = _pending_rotation(provider)
        raise EnclaveError(
            f"the master key in {provider.describe()} (fingerprint {provider.fingerprint()}) "
            f"is not the one that wrapped {path.name} (fingerprint {recorded})" + pending,
            rule="keys.master_wrong",
        )
    keys = []
    for e in entries:
        keys.append(
            DataKey(
                id=str(e["id"]),
                purpose=str(e["purpose"]),
                key=provider.unwrap(base64.b64decode(e["wrapped"]), _aad(e)),
                created_at=str(e["created_at"]),
                active=bool(e["active"]),
            )
        )
    return Keyring(tuple(keys))


def _pending_rotation(provider: KeyProvider) -> str:
    path = getattr(provider, "path", None)
    if isinstance(path, Path) and path.with_name(path.name + ".new").exists():
        return f": a rotation was interrupted; the new key is {path}.new (move it to {path})"
    return ""
