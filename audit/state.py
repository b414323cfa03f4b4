"""What the writer knows of the log under the lock, and how stored Merkle nodes are found.

Shared by both write paths (:mod:`audit.store` on SQLAlchemy, :mod:`audit.sqlite_txn`
on the SQLite driver).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from audit.signing import TreeHead

__all__ = ["LogState", "SeqTaken", "WriteOps", "find_nodes"]

_FETCH_CHUNK = 500


class SeqTaken(Exception):
    """Internal: an insert found its sequence number taken; the writer re-reads and retries."""


@dataclass(frozen=True)
class LogState:
    """What a writer must know under the lock: the chain's head and the newest signed size."""

    size: int
    chain_head: bytes | None
    signed_size: int
    signed_at_ms: int


def find_nodes(
    wanted: Iterable[tuple[int, int]],
    fetch_rows: Callable[[Sequence[int]], Iterable[tuple[int, bytes, bytes]]],
) -> dict[tuple[int, int], bytes]:
    """Hashes of full subtrees ``(level, index)``, looked up by the entry that completed them.

    Leaf ``i`` completes the subtrees at levels 1..t, t the number of trailing
    one bits of ``i``; so node (level, index) sits in row
    ``((index + 1) << level) - 1`` at offset ``(level - 1) * 32`` of
    ``subtree_hashes``, and level 0 is that row's ``leaf_hash``.  ``fetch_rows``
    returns ``(seq, leaf_hash, subtree_hashes)`` of the rows asked for.
    """
    rows_of: dict[int, list[tuple[int, int]]] = {}
    for level, index in set(wanted):
        rows_of.setdefault(((index + 1) << level) - 1, []).append((level, index))
    found: dict[tuple[int, int], bytes] = {}
    seqs = sorted(rows_of)
    for start in range(0, len(seqs), _FETCH_CHUNK):
        for seq, leaf_hash, subtree_hashes in fetch_rows(seqs[start : start + _FETCH_CHUNK]):
            subtrees = bytes(subtree_hashes)
            for level, index in rows_of[seq]:
                if level == 0:
                    found[(0, index)] = bytes(leaf_hash)
                elif len(subtrees) >= level * 32:
                    found[(level, index)] = subtrees[(level - 1) * 32 : level * 32]
    return found


class WriteOps(Protocol):
    """What the writer does inside one locked transaction, on either write path."""

    def state(self) -> LogState: ...

    def node_hashes(self, wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]: ...

    def insert_entries(self, rows: Sequence[tuple[Any, ...]]) -> None: ...

    def insert_tree_head(self, head: TreeHead) -> None: ...
