"""Staged source files (uploads and files applied for registration), sealed at rest.

A home with data keys writes every staged source sealed (:mod:`sandbox.core.sealed`,
1 MiB segments) under its active ``uploads`` key, as it arrives; a home without
(``encrypt_at_rest = false``) keeps them plain, as it keeps its enclave.  What an
application records of a file (bytes, SHA-256) describes the **plain** bytes: what
the bureau uploaded and can check.  A staged file is opened only into a temporary
plain file beside it (in the 0700 home), right before a connector reads it, and
deleted right after (:func:`opened_plain`).

A plain staged file in an encrypted home (staged before this was built) is still
read; ``sandbox keys reencrypt`` seals it (:func:`reseal`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from sandbox.core.errors import EnclaveError
from sandbox.core.keyring import Keyring
from sandbox.core.sealed import MAGIC, SealWriter, is_sealed, unseal_stream

__all__ = [
    "CONTEXT",
    "PLAIN_PREFIX",
    "Sink",
    "opened_plain",
    "plain_chunks",
    "plain_digest",
    "reseal",
    "seal_copy",
    "staged_writer",
]

CONTEXT = b"staged-source"
PLAIN_PREFIX = ".plain-"
"""Name prefix of a temporary plain copy (removed by :func:`opened_plain`; a crash's
leftovers by :func:`reseal`)."""
_CHUNK = 1 << 20


class Sink(Protocol):
    def write(self, data: bytes) -> object: ...


class _Plain:
    def __init__(self, out: BinaryIO) -> None:
        self.write = out.write

    def close(self) -> None:
        pass


def staged_writer(out: BinaryIO, keys: Keyring | None) -> SealWriter | _Plain:
    """What a staged file's bytes are written to: sealed with keys, as is without; call
    ``close()`` once all are written (before ``out`` closes)."""
    if keys is None:
        return _Plain(out)
    return SealWriter(out, keys.active("uploads"), CONTEXT)


def _raw(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def plain_chunks(path: Path, keys: Keyring | None) -> Iterator[bytes]:
    """The plain bytes of a staged file, in pieces (a sealed one verified as it goes)."""
    with path.open("rb") as fh:
        head = fh.read(len(MAGIC))
    if not is_sealed(head):
        yield from _raw(path)
        return
    if keys is None:
        raise EnclaveError(
            "a staged file is encrypted but the home has no datakeys.json: restore it",
            rule="keys.keyring_missing",
        )
    yield from unseal_stream(_raw(path), keys.get, CONTEXT)


def plain_digest(path: Path, keys: Keyring | None) -> tuple[str, int]:
    """SHA-256 and byte count of a staged file's plain bytes."""
    digest, size = hashlib.sha256(), 0
    for chunk in plain_chunks(path, keys):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _write_new(target: Path, chunks: Iterator[bytes], keys: Keyring | None) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            sink = staged_writer(out, keys)
            for chunk in chunks:
                sink.write(chunk)
            sink.close()
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def seal_copy(source: Path, target: Path, keys: Keyring | None) -> None:
    """Copy a plain file (an import, a host's file) to a new staged ``target``."""
    _write_new(target, _raw(source), keys)


@contextmanager
def opened_plain(path: Path, keys: Keyring | None) -> Iterator[tuple[Path, str]]:
    """A plain file holding a staged file's bytes, and their SHA-256, for a connector.

    A plain staged file is read where it is; a sealed one is opened into a temporary
    file beside it (same suffix, mode 0600), hashed as written and deleted on leaving.
    """
    with path.open("rb") as fh:
        sealed = is_sealed(fh.read(len(MAGIC)))
    if not sealed:
        yield path, plain_digest(path, None)[0]
        return
    plain = path.with_name(f"{PLAIN_PREFIX}{secrets.token_hex(8)}-{path.name}")
    digest = hashlib.sha256()

    def hashed() -> Iterator[bytes]:
        for chunk in plain_chunks(path, keys):
            digest.update(chunk)
            yield chunk

    try:
        _write_new(plain, hashed(), None)
        yield plain, digest.hexdigest()
    finally:
        plain.unlink(missing_ok=True)


def _staged(staging_dir: Path) -> Iterator[Path]:
    uploads = staging_dir / "uploads"
    if uploads.is_dir():
        # Records (``up_<id>.upload.json``) stay plain; an upload named *.json is data.
        yield from (
            p for p in uploads.iterdir() if p.is_file() and not p.name.endswith(".upload.json")
        )
    registrations = staging_dir / "registrations"
    if registrations.is_dir():
        for directory in registrations.iterdir():
            if directory.is_dir():
                yield from (p for p in directory.iterdir() if p.is_file())


def reseal(staging_dir: Path, keys: Keyring) -> int:
    """Re-seal every staged file under the active ``uploads`` key (``keys`` still holds
    the old ones); plain ones are sealed, a crash's plain copies removed.  Returns the
    number of files re-sealed.  Each is replaced atomically."""
    count = 0
    for path in sorted(_staged(staging_dir)):
        if path.name.startswith(PLAIN_PREFIX) or path.name.endswith(".reseal"):
            path.unlink(missing_ok=True)
            continue
        target = path.with_name(path.name + ".reseal")
        _write_new(target, plain_chunks(path, keys), keys)
        os.replace(target, path)
        count += 1
    return count
