"""Master keys: where they come from, and the only two things done with them (wrap, unwrap).

A :class:`KeyProvider` wraps and unwraps data keys; the master key itself never
leaves it.  Two providers hold the master key in this process:

- :class:`FileKeyProvider`: a file of 32 random bytes in base64, which must be
  readable by its owner only (mode 0600 or stricter): a looser mode is refused
  (rule ``keys.master_permissions``), as ssh refuses a private key others can read;
- :class:`EnvKeyProvider`: an environment variable holding the same base64 text
  (for a container whose secret store injects it).

An HSM or a cloud KMS fits the same interface: its ``wrap``/``unwrap`` call the
device's encrypt/decrypt, and the master key stays in the device.

A missing key is ``keys.master_missing``; a key that does not open the data keys
is ``keys.master_wrong`` (:mod:`sandbox.core.keyring` checks the fingerprint).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandbox.core.errors import EnclaveError

__all__ = [
    "EnvKeyProvider",
    "FileKeyProvider",
    "KeyProvider",
    "LocalKeyProvider",
    "fingerprint",
    "generate_key_file",
    "new_master_key",
]

KEY_BYTES = 32
_NONCE = 12


def new_master_key() -> bytes:
    """32 bytes from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def fingerprint(master: bytes) -> str:
    """A public name of a master key (HMAC of a constant): tells keys apart, reveals nothing."""
    return hmac.new(master, b"sandbox master key fingerprint v1", hashlib.sha256).hexdigest()[:16]


class KeyProvider(Protocol):
    """Wraps and unwraps data keys under a master key it never hands out."""

    def describe(self) -> str:
        """Where the master key is, in words for a one-line message (never the key)."""
        ...

    def fingerprint(self) -> str: ...

    def wrap(self, data_key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """The data key; raises ``keys.master_wrong`` if this master did not wrap it."""
        ...


class LocalKeyProvider:
    """A provider whose master key is read into this process (AES-256-GCM key wrapping)."""

    def __init__(self, master: bytes, where: str) -> None:
        if len(master) != KEY_BYTES:
            raise EnclaveError(
                f"the master key in {where} is not {KEY_BYTES} bytes of base64",
                rule="keys.master_invalid",
            )
        self._aead = AESGCM(master)
        self._fingerprint = fingerprint(master)
        self._where = where

    def describe(self) -> str:
        return self._where

    def fingerprint(self) -> str:
        return self._fingerprint

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)
        except InvalidTag:
            raise EnclaveError(
                f"the master key in {self._where} does not open the data keys",
                rule="keys.master_wrong",
            ) from None


def _decode(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EnclaveError(
            f"the master key in {where} is not base64", rule="keys.master_invalid"
        ) from None


class FileKeyProvider(LocalKeyProvider):
    """The master key from a file that only its owner may read."""

    def __init__(self, path: Path) -> None:
        where = f"file {path}"
        try:
            info = path.stat()
        except FileNotFoundError:
            raise EnclaveError(
                f"master key file {path} is missing: restore it from its backup "
                "(without it the encrypted data cannot be read)",
                rule="keys.master_missing",
            ) from None
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise EnclaveError(
                f"master key file {path} has mode {stat.S_IMODE(info.st_mode):04o}: "
                f"others may read it; run `chmod 600 {path}`",
                rule="keys.master_permissions",
            )
        super().__init__(_decode(path.read_text(encoding="ascii", errors="replace"), where), where)
        self.path = path


class EnvKeyProvider(LocalKeyProvider):
    """The master key from an environment variable (base64)."""

    def __init__(self, name: str, environ: Mapping[str, str]) -> None:
        where = f"environment variable {name}"
        value = environ.get(name)
        if not value:
            raise EnclaveError(
                f"the master key is missing: {where} is not set", rule="keys.master_missing"
            )
        super().__init__(_decode(value, where), where)


def generate_key_file(path: Path) -> None:
    """Write a new master key to ``path`` (mode 0600, created exclusively, synced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, base64.b64encode(new_master_key()) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
