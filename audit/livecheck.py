"""Verification of the live store: the export checks plus what only the database holds.

Beyond chain, roots and signatures, it checks each row's stored entry and leaf
hash, the subtree hashes proofs are built from (or proofs could be wrong), and
that the indexed query columns say what the entry says (or auditors' queries
could be lied to).
Entries after the newest signed tree head are normal here, not a problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checker import Checker, Report
from audit.entry import Entry
from audit.errors import InvalidEntry
from audit.schema import FILTER_COLUMNS
from audit.store import AuditStore

__all__ = ["Checked", "verify_store", "verify_store_again"]

_COLUMNS = ("time", *FILTER_COLUMNS)


Checked = tuple[int, bytes]
"""What an earlier verification that found nothing wrong leaves: (entries, chain head)."""


def verify_store(
    store: AuditStore, public_keys: Mapping[str, Ed25519PublicKey], *, strict: bool = True
) -> Report:
    return verify_store_again(store, public_keys, strict=strict)[0]


def verify_store_again(
    store: AuditStore,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    strict: bool = True,
    checked: Checked | None = None,
) -> tuple[Report, Checked]:
    """:func:`verify_store`, skipping the strict parse of entries an earlier run checked.

    ``checked`` is what an earlier run of this process that found nothing wrong
    returned: its entry count and the chain head after them.  The chain head pins
    every byte of those entries (SHA-256), so if the chain reaches the same head here
    they are the very bytes that were parsed strictly then, and only need their hashes,
    nodes and index columns checked again.  If the chain does not reach it (an entry
    changed, or entries are missing), everything is checked again from the start.
    Returns the report and what this run checked.
    """
    if not strict or checked is None or checked[0] == 0:
        return _verify(store, public_keys, strict=strict, checked=None)
    try:
        return _verify(store, public_keys, strict=strict, checked=checked)
    except _Changed:
        return _verify(store, public_keys, strict=strict, checked=None)


class _Changed(Exception):
    """The entries an earlier run checked are not the same bytes any more."""


def _verify(
    store: AuditStore,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    strict: bool,
    checked: Checked | None,
) -> tuple[Report, Checked]:
    skip, pinned = checked if checked is not None else (0, b"")
    checker = Checker(store.tree_heads(), public_keys, strict=strict, trust_below=skip)
    feed = checker.feed
    for row in store.iter_entry_tuples():
        seq, columns, canonical, stored_chain, stored_leaf, subtrees = (
            row[0], row[1:8], row[8], row[9], row[10], row[11]
        )  # fmt: skip
        position = checker.size
        if position == skip and skip and checker.chain != pinned:
            raise _Changed
        if seq != position:
            checker.problem("sequence", f"row key {seq} at position {position}", position)
        chain, leaf = feed(canonical)
        if stored_chain != chain or stored_leaf != leaf:
            checker.problem("stored_hash", "stored hashes differ from the entry's", position)
        if subtrees != _completed_by(checker, position):
            checker.problem("node", "stored subtree hashes differ from the entries'", position)
        if position < skip:
            try:  # the same bytes an earlier run parsed strictly, if the chain says so
                fields = json.loads(canonical)
                values = tuple([fields[name] for name in _COLUMNS])
            except (ValueError, TypeError, KeyError):
                raise _Changed from None
        else:
            entry = checker.last_entry
            if entry is None:
                try:
                    entry = Entry.from_bytes(canonical)
                except InvalidEntry:
                    continue  # reported as malformed by the checker when it matters
            fields = entry.__dict__
            values = tuple([fields[name] for name in _COLUMNS])
        if columns != values:
            wrong = [n for n, v in zip(_COLUMNS, columns, strict=True) if v != fields[n]]
            checker.problem("index", f"columns {wrong} differ from the entry", position)
    if checker.size < skip or (checker.size == skip and checker.chain != pinned):
        raise _Changed
    report = checker.finish(require_covered=False)
    return report, (checker.size, checker.chain)


def _completed_by(checker: Checker, position: int) -> bytes:
    """The full subtrees leaf ``position`` completed, level 1 first, as the store keeps them."""
    levels = (position ^ (position + 1)).bit_length() - 1  # trailing one bits
    if not levels:
        return b""
    tree = checker.tree
    return b"".join(tree.node(level, position >> level) for level in range(1, levels + 1))
