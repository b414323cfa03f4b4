"""The hash chain: ``entry_hash = SHA-256(prev_entry_hash || canonical_entry)``.

The chain makes each entry commit to everything before it, and each entry also
carries ``prev`` (the previous entry's hash, hex) inside its own bytes.  So one
entry alone gives its own ``entry_hash`` (a receipt can be checked without the
rest of the log), and a reader can tell exactly which link broke.  The first
entry's ``prev`` is :data:`GENESIS_HASH`, 32 zero bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from audit.entry import peek
from audit.errors import InvalidEntry

__all__ = ["GENESIS_HASH", "entry_hash", "first_broken_link"]

GENESIS_HASH = bytes(32)


def entry_hash(prev: bytes, canonical: bytes) -> bytes:
    """The chain hash of one entry given the previous entry's hash."""
    return hashlib.sha256(prev + canonical).digest()


def first_broken_link(entries: Iterable[bytes], start: bytes = GENESIS_HASH) -> int | None:
    """Position of the first entry whose ``seq`` or ``prev`` does not continue the chain.

    ``None`` if every entry continues it.  Entry ``i`` must carry ``seq == i`` and
    ``prev`` equal to the hash of entry ``i - 1`` (``start`` for the first).
    """
    prev = start
    for position, canonical in enumerate(entries):
        try:
            seq, recorded_prev = peek(canonical)
        except InvalidEntry:
            return position
        if seq != position or recorded_prev != prev:
            return position
        prev = entry_hash(prev, canonical)
    return None
