"""Incremental Merkle trees: the frontier a writer keeps, and a whole tree in memory.

:class:`Frontier` holds only the "peaks" (the full subtrees along the right edge,
one per set bit of the size), so appending costs one leaf hash plus, amortized,
one node hash, and the root of the current size costs log2(n) hashes.  It also
reports each full subtree it completes, which is what a store persists so that
proofs never recompute from all leaves.

:class:`MemoryTree` keeps every full subtree in flat per-level byte arrays (32
bytes a node): the offline verifier and the tests use it to compute roots and
proofs for any earlier size in O(log n).  Verifiers add leaves in batches
(:meth:`MemoryTree.extend`): each level's new nodes are then hashed in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from audit.errors import NotFound
from audit.merkle import (
    SHA256,
    Hasher,
    consistency_proof,
    fold_nodes,
    hash_pairs,
    inclusion_proof,
    range_nodes,
)

__all__ = ["Frontier", "MemoryTree", "Node", "peak_nodes"]

Node = tuple[int, int, bytes]
"""A completed full subtree: (level, index, hash); it covers leaves [index << level, ...)."""


def peak_nodes(size: int) -> list[tuple[int, int]]:
    """The ``(level, index)`` of the peaks of a tree of ``size`` leaves, largest first."""
    return range_nodes(0, size) if size else []


class Frontier:
    """The right edge of a growing tree: enough to append and to compute the root."""

    __slots__ = ("hasher", "peaks", "size")

    def __init__(self, size: int = 0, peaks: Sequence[bytes] = (), hasher: Hasher = SHA256) -> None:
        if len(peaks) != bin(size).count("1"):
            raise ValueError(f"a tree of {size} leaves has {bin(size).count('1')} peaks")
        self.size = size
        self.peaks = list(peaks)
        self.hasher = hasher

    def copy(self) -> Frontier:
        return Frontier(self.size, self.peaks, self.hasher)

    def append(self, leaf_hash: bytes, completed: list[Node] | None = None) -> None:
        """Add one leaf; full subtrees it completes (level >= 1) go to ``completed``."""
        index = self.size
        node = leaf_hash
        level = 0
        carry = index
        while carry & 1:
            node = self.hasher.hash_children(self.peaks.pop(), node)
            level += 1
            carry >>= 1
            if completed is not None:
                completed.append((level, index >> level, node))
        self.peaks.append(node)
        self.size = index + 1

    def root(self) -> bytes:
        if not self.peaks:
            return self.hasher.empty_root()
        return fold_nodes(self.peaks, self.hasher)


class MemoryTree:
    """Every full subtree of a tree in memory, for roots and proofs at any size."""

    def __init__(self, hasher: Hasher = SHA256) -> None:
        self.hasher = hasher
        self.levels: list[bytearray] = [bytearray()]
        self._peaks: list[bytes] = []
        self._size = 0
        self._hash_children = hasher.hash_children

    @classmethod
    def from_leaves(cls, leaf_hashes: Sequence[bytes], hasher: Hasher = SHA256) -> MemoryTree:
        tree = cls(hasher)
        for leaf in leaf_hashes:
            tree.append(leaf)
        return tree

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Add a leaf (the same carry as :meth:`Frontier.append`, kept inline: it is hot)."""
        if len(leaf_hash) != self.hasher.size:
            raise ValueError(f"leaf hash must be {self.hasher.size} bytes")
        levels, peaks = self.levels, self._peaks
        levels[0] += leaf_hash
        node, level, carry = leaf_hash, 0, self._size
        while carry & 1:
            node = self._hash_children(peaks.pop(), node)
            level += 1
            carry >>= 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += node
        peaks.append(node)
        self._size += 1

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append every leaf of ``leaf_hashes``: the same tree as :meth:`append` one by one.

        Each level's new full subtrees are hashed in one pass over the level below.
        """
        width = self.hasher.size
        joined = b"".join(leaf_hashes)
        if not set(map(len, leaf_hashes)) <= {width}:
            raise ValueError(f"leaf hash must be {width} bytes")
        if not joined:
            return
        levels = self.levels
        levels[0] += joined
        self._size += len(leaf_hashes)
        pair = 2 * width
        level = 0
        while True:
            below = levels[level]
            done = len(levels[level + 1]) * 2 if level + 1 < len(levels) else 0
            end = len(below) - len(below) % pair
            if done >= end:
                break  # no new node here, so none above
            if level + 1 == len(levels):
                levels.append(bytearray())
            levels[level + 1] += hash_pairs(self.hasher, bytes(below[done:end]))
            level += 1
        self._peaks = [self.node(lv, index) for lv, index in peak_nodes(self._size)]

    def node(self, level: int, index: int) -> bytes:
        width = self.hasher.size
        return bytes(self.levels[level][index * width : (index + 1) * width])

    def range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for an aligned range inside the current tree."""
        if end > self.size:
            raise NotFound(f"range [{start}, {end}) is beyond tree size {self.size}")
        return fold_nodes(
            [self.node(level, index) for level, index in range_nodes(start, end)], self.hasher
        )

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if size > self.size:
            raise NotFound(f"tree size {size} is beyond {self.size}")
        if size == self.size:
            return fold_nodes(self._peaks, self.hasher) if size else self.hasher.empty_root()
        return self.range_hash(0, size) if size else self.hasher.empty_root()

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise NotFound(f"no leaf {index} in a tree of {self.size}")
        return self.node(0, index)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        if size > self.size:
            raise NotFound(f"tree size {size} is beyond {self.size}")
        return inclusion_proof(index, size, self.range_hash)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        size2 = self.size if size2 is None else size2
        if size2 > self.size:
            raise NotFound(f"tree size {size2} is beyond {self.size}")
        return consistency_proof(size1, size2, self.range_hash)
