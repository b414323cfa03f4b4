"""Sealed bytes: AES-256-GCM in 1 MiB segments (the STREAM construction), for data at rest.

Layout: ``MAGIC``, one byte giving the key id's length, the key id (ASCII), a
7-byte random nonce prefix, then segments of at most :data:`SEGMENT` plaintext
bytes, each followed by its 16-byte tag.  Segment ``i``'s nonce is the prefix,
``i`` as 4 bytes and a final flag (1 on the last segment only), so segments
cannot be reordered, dropped or the stream cut short without failing the tag; the
associated data binds the header and the caller's context (e.g. the job id), so
a sealed value cannot be moved to another row either.  A fresh random prefix per
stream under a 256-bit key keeps nonces unique (2^56 streams per key before a
collision becomes likely at 2^-32 scale: far beyond any home's lifetime).

Data that does not start with ``MAGIC`` is plaintext written before encryption
was turned on; :func:`is_sealed` tells them apart.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandbox.core.errors import EnclaveError
from sandbox.core.keyring import DataKey, Keyring

__all__ = [
    "MAGIC",
    "SEGMENT",
    "SealWriter",
    "is_sealed",
    "key_id_of",
    "open_blob",
    "seal",
    "seal_blob",
    "unseal",
    "unseal_stream",
]

MAGIC = b"SBXSEAL1"
SEGMENT = 1 << 20
_TAG = 16
_PREFIX = 7


def is_sealed(data: bytes) -> bool:
    return data[: len(MAGIC)] == MAGIC


def _header(key: DataKey, prefix: bytes) -> bytes:
    ident = key.id.encode("ascii")
    return MAGIC + bytes([len(ident)]) + ident + prefix


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


class SealWriter:
    """Seals a stream written in pieces to ``out`` (a file or buffer); call :meth:`close`."""

    def __init__(self, out: BinaryIO, key: DataKey, context: bytes) -> None:
        self._out = out
        self._aead = AESGCM(key.key)
        self._prefix = os.urandom(_PREFIX)
        header = _header(key, self._prefix)
        self._aad = header + context
        self._pending = bytearray()
        self._index = 0
        out.write(header)

    def write(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) > SEGMENT:  # keep at least one byte back for the last segment
            self._segment(bytes(self._pending[:SEGMENT]), last=False)
            del self._pending[:SEGMENT]

    def _segment(self, plain: bytes, *, last: bool) -> None:
        nonce = _nonce(self._prefix, self._index, last)
        self._out.write(self._aead.encrypt(nonce, plain, self._aad))
        self._index += 1

    def close(self) -> None:
        self._segment(bytes(self._pending), last=True)
        self._pending.clear()


def seal(key: DataKey, data: bytes, context: bytes) -> bytes:
    """``data`` sealed under ``key``, bound to ``context``."""
    import io

    sink = io.BytesIO()
    writer = SealWriter(sink, key, context)
    writer.write(data)
    writer.close()
    return sink.getvalue()


def _damaged() -> EnclaveError:
    return EnclaveError(
        "sealed data does not verify (damaged, cut short, or moved from elsewhere)",
        rule="keys.sealed_invalid",
    )


def key_id_of(head: bytes) -> str:
    """The data key id named in a sealed header."""
    if not is_sealed(head) or len(head) < len(MAGIC) + 1:
        raise _damaged()
    n = head[len(MAGIC)]
    return head[len(MAGIC) + 1 : len(MAGIC) + 1 + n].decode("ascii", errors="replace")


def unseal_stream(
    chunks: Iterable[bytes], key_of: Callable[[str], DataKey], context: bytes
) -> Iterator[bytes]:
    """The plaintext of a sealed stream, segment by segment; raises on any tampering."""
    buffer = bytearray()
    it = iter(chunks)
    for chunk in it:
        buffer += chunk
        if len(buffer) >= len(MAGIC) + 1 and len(buffer) >= len(MAGIC) + 1 + buffer[len(MAGIC)]:
            break
    if not is_sealed(bytes(buffer[: len(MAGIC)])):
        raise _damaged()
    n = buffer[len(MAGIC)]
    header_len = len(MAGIC) + 1 + n + _PREFIX
    while len(buffer) < header_len:
        more = next(it, None)
        if more is None:
            raise _damaged()
        buffer += more
    header = bytes(buffer[:header_len])
    key = key_of(key_id_of(header))
    aead = AESGCM(key.key)
    prefix = header[-_PREFIX:]
    aad = header + context
    del buffer[:header_len]
    index = 0
    exhausted = False
    while True:
        while not exhausted and len(buffer) <= SEGMENT + _TAG:
            more = next(it, None)
            if more is None:
                exhausted = True
            else:
                buffer += more
        last = exhausted and len(buffer) <= SEGMENT + _TAG
        size = len(buffer) if last else SEGMENT + _TAG
        try:
            plain = aead.decrypt(_nonce(prefix, index, last), bytes(buffer[:size]), aad)
        except InvalidTag:
            raise _damaged() from None
        del buffer[:size]
        index += 1
        yield plain
        if last:
            return


def unseal(data: bytes, key_of: Callable[[str], DataKey], context: bytes) -> bytes:
    """The plaintext of sealed ``data`` (all at once)."""
    return b"".join(unseal_stream([data], key_of, context))


def seal_blob(keys: Keyring | None, data: bytes, context: str) -> bytes:
    """A value for the control plane: sealed under the active ``blobs`` key (as is without keys)."""
    if keys is None:
        return data
    return seal(keys.active("blobs"), data, context.encode())


def open_blob(keys: Keyring | None, data: bytes, context: str) -> bytes:
    """The plaintext of a stored value; sealed data needs the keys, plaintext needs none."""
    if keys is None:
        if is_sealed(data):
            raise EnclaveError(
                "stored data is encrypted but the home has no datakeys.json: restore it",
                rule="keys.keyring_missing",
            )
        return data
    if not is_sealed(data):
        raise EnclaveError(
            "stored data of an encrypted home is not encrypted (written by other software?)",
            rule="keys.unsealed",
        )
    return unseal(data, keys.get, context.encode())
