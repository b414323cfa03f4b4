"""Verification of the live store: the export checks plus what only the database holds.

Beyond chain, roots and signatures, it checks each row's stored entry and leaf
hash, the subtree hashes proofs are built from (or proofs could be wrong), and
that the indexed query columns say what the entry says (or auditors' queries
could be lied to).
Entries after the newest signed tree head are normal here, not a problem.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checker import Checker, Report
from audit.entry import Entry
from audit.errors import InvalidEntry
from audit.schema import FILTER_COLUMNS
from audit.store import AuditStore

__all__ = ["verify_store"]

_COLUMNS = ("time", *FILTER_COLUMNS)


def verify_store(
    store: AuditStore, public_keys: Mapping[str, Ed25519PublicKey], *, strict: bool = True
) -> Report:
    checker = Checker(store.tree_heads(), public_keys, strict=strict)
    feed = checker.feed
    for row in store.iter_entry_tuples():
        seq, columns, canonical, stored_chain, stored_leaf, subtrees = (
            row[0], row[1:8], row[8], row[9], row[10], row[11]
        )  # fmt: skip
        position = checker.size
        if seq != position:
            checker.problem("sequence", f"row key {seq} at position {position}", position)
        chain, leaf = feed(canonical)
        if stored_chain != chain or stored_leaf != leaf:
            checker.problem("stored_hash", "stored hashes differ from the entry's", position)
        if subtrees != _completed_by(checker, position):
            checker.problem("node", "stored subtree hashes differ from the entries'", position)
        entry = checker.last_entry if strict else None
        if entry is None:
            try:
                entry = Entry.from_bytes(canonical)
            except InvalidEntry:
                continue  # reported as malformed by the checker when it matters
        d = entry.__dict__
        if columns != tuple([d[name] for name in _COLUMNS]):
            wrong = [n for n, v in zip(_COLUMNS, columns, strict=True) if v != d[n]]
            checker.problem("index", f"columns {wrong} differ from the entry", position)
    return checker.finish(require_covered=False)


def _completed_by(checker: Checker, position: int) -> bytes:
    """The full subtrees leaf ``position`` completed, level 1 first, as the store keeps them."""
    levels = (position ^ (position + 1)).bit_length() - 1  # trailing one bits
    if not levels:
        return b""
    tree = checker.tree
    return b"".join(tree.node(level, position >> level) for level in range(1, levels + 1))
