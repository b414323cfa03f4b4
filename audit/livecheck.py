"""Verification of the live store: the export checks plus what only the database holds.

Beyond chain, roots and signatures, it checks each row's stored entry and leaf
hash, the subtree hashes proofs are built from (or proofs could be wrong), and
that the indexed query columns say what the entry says (or auditors' queries
could be lied to).
Entries after the newest signed tree head are normal here, not a problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checker import Checker, Report
from audit.schema import ENTRY_COLUMNS, FILTER_COLUMNS
from audit.store import AuditStore

__all__ = ["Checked", "verify_store", "verify_store_again"]

_COLUMNS = ("time", *FILTER_COLUMNS)
assert ENTRY_COLUMNS[:12] == (
    *("seq", *_COLUMNS, "entry"),
    *("entry_hash", "leaf_hash", "subtree_hashes"),
), "_check_rows reads rows by position"
_PICK = itemgetter(*_COLUMNS)


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
    for rows in store.iter_entry_chunks():
        base = checker.size
        cut = skip - base if base < skip < base + len(rows) else 0
        for part in (rows[:cut], rows[cut:]) if cut else (rows,):
            if skip and checker.size == skip and checker.chain != pinned:
                raise _Changed
            _check_rows(checker, part)
    if checker.size < skip or (checker.size == skip and checker.chain != pinned):
        raise _Changed
    report = checker.finish(require_covered=False)
    return report, (checker.size, checker.chain)


def _check_rows(checker: Checker, rows: Sequence[tuple[Any, ...]]) -> None:
    """Feed the rows' entries to ``checker``; check what the rows store beside them."""
    position = checker.size
    fed = checker.feed_many([row[8] for row in rows], pick=_PICK)
    levels, width = checker.tree.levels, checker.hasher.size
    for row, chain, leaf, values in zip(rows, fed.chains, fed.leaves, fed.picked, strict=True):
        if row[0] != position:
            checker.problem("sequence", f"row key {row[0]} at position {position}", position)
        if row[9] != chain or row[10] != leaf:
            checker.problem("stored_hash", "stored hashes differ from the entry's", position)
        # The full subtrees leaf ``position`` completed, level 1 first, as the store keeps
        # them: one a trailing one bit of ``position``.
        subtrees = row[11]
        if position & 1 or subtrees:
            levels_done = (position ^ (position + 1)).bit_length() - 1
            want = b"".join(
                levels[level][(position >> level) * width : ((position >> level) + 1) * width]
                for level in range(1, levels_done + 1)
            )
            if subtrees != want:
                checker.problem("node", "stored subtree hashes differ from the entries'", position)
        if values is not None and row[1:8] != values:
            wrong = [n for n, v, e in zip(_COLUMNS, row[1:8], values, strict=True) if v != e]
            checker.problem("index", f"columns {wrong} differ from the entry", position)
        position += 1
