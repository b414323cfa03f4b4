"""The platform's Ed25519 signing keys: generation, 0600 storage, key ids, rotation.

A key id is the first 16 hex digits of SHA-256 over the raw 32-byte public key,
so anyone holding the public key can recompute it.  Rotation makes a new key
active and keeps every old public key (and private key, for the record) so that
old signatures stay verifiable.  Layout of the directory::

    keys/ACTIVE                 key id of the signing key
    keys/<key_id>.key           PKCS#8 PEM private key, mode 0600
    keys/<key_id>.pub           raw public key, base64, one line
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "KeyRing",
    "KeyRingError",
    "SigningKey",
    "key_id_of",
    "load_public_keys",
    "public_key_from_b64",
    "public_key_to_b64",
    "read_public_keys",
    "verify_signature",
]


class KeyRingError(Exception):
    """The key directory is missing, unreadable or inconsistent."""


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes_raw()
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    raw = base64.b64decode(text.strip(), validate=True)
    if len(raw) != 32:
        raise KeyRingError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id_of(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes_raw()
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(
    public_keys: dict[str, Ed25519PublicKey], key_id: str, signature: bytes, message: bytes
) -> bool:
    """True only if ``key_id`` is known and its key signed ``message``."""
    key = public_keys.get(key_id)
    if key is None:
        return False
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def load_public_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Read every ``*.pub`` in ``directory``; the file name must match the key's id."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(Path(directory).glob("*.pub")):
        key = public_key_from_b64(path.read_text())
        if key_id_of(key) != path.stem:
            raise KeyRingError(f"public key file {path.name} does not match its key id")
        keys[path.stem] = key
    return keys


def read_public_keys(directory: Path) -> tuple[dict[str, Ed25519PublicKey], list[str]]:
    """Every readable ``*.pub`` in ``directory``, and what was wrong with each other one.

    What a verifier wants: one unreadable or mislabelled key file must not stop it;
    whether the keys that remain verify the signatures decides the outcome.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    problems: list[str] = []
    for path in sorted(Path(directory).glob("*.pub")):
        try:
            key = public_key_from_b64(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, KeyRingError) as exc:
            problems.append(f"key file {path.name} cannot be read ({type(exc).__name__}: {exc})")
            continue
        if key_id_of(key) != path.stem:
            problems.append(f"key file {path.name} does not hold the key of that id; ignored")
            continue
        keys[path.stem] = key
    return keys, problems


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


class KeyRing:
    """Ed25519 keys in one directory; the ACTIVE file names the signing key."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        # Keys parsed before, by key id, with the stat of the file they were read from:
        # a server signs with the active key on every query (about 70 µs to read and
        # parse the PEM each time).  A file changed in any way (mode, size, time,
        # replaced) is read and checked again.
        self._parsed: dict[str, tuple[tuple[int, ...], SigningKey]] = {}

    def exists(self) -> bool:
        return (self.directory / "ACTIVE").is_file()

    def ensure(self) -> SigningKey:
        """Return the active key, generating the first one if there is none."""
        if self.exists():
            return self.active()
        return self.rotate()

    def rotate(self) -> SigningKey:
        """Generate a new key and make it active; old keys stay for verification."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        from cryptography.hazmat.primitives import serialization  # PEM: ~4x ed25519's import

        private = Ed25519PrivateKey.generate()
        key_id = key_id_of(private.public_key())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        key_path = self.directory / f"{key_id}.key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        (self.directory / f"{key_id}.pub").write_text(
            public_key_to_b64(private.public_key()) + "\n"
        )
        tmp = self.directory / "ACTIVE.tmp"
        tmp.write_text(key_id + "\n")
        os.replace(tmp, self.directory / "ACTIVE")
        return SigningKey(key_id, private)

    def active(self) -> SigningKey:
        try:
            key_id = (self.directory / "ACTIVE").read_text().strip()
        except FileNotFoundError:
            raise KeyRingError(f"no active signing key in {self.directory}") from None
        return self.load(key_id)

    def load(self, key_id: str) -> SigningKey:
        from cryptography.hazmat.primitives import serialization  # PEM: ~4x ed25519's import

        path = self.directory / f"{key_id}.key"
        try:
            st = path.stat()
            if st.st_mode & 0o077:
                raise KeyRingError(f"private key {path.name} is readable by others (want 0600)")
            seen = (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            parsed = self._parsed.get(key_id)
            if parsed is not None and parsed[0] == seen:
                return parsed[1]
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise KeyRingError(f"private key {key_id} is missing") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyRingError(f"key {key_id} is not an Ed25519 key")
        if key_id_of(private.public_key()) != key_id:
            raise KeyRingError(f"key file {path.name} does not match its key id")
        key = SigningKey(key_id, private)
        self._parsed[key_id] = (seen, key)
        return key

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every public key ever active here, by key id."""
        return load_public_keys(self.directory)
