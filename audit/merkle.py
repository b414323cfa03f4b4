"""RFC 9162 (Certificate Transparency v2) section 2.1 Merkle tree math, pure.

Nothing here touches storage.  Proof construction takes a ``range_hash(start, end)``
callable returning MTH(D[start:end]); every range the RFC recursion asks for is
aligned (``start`` is a multiple of the largest power of two >= its length), so a
store that keeps full power-of-two subtrees answers each one from at most
log2(n) cached nodes (see :func:`range_nodes`).  Verification follows the
reference verifier of transparency-dev/merkle (``proof/verify.go``) so that the
published RFC 6962 vectors, valid and corrupted, are judged the same way.

The hasher is injected; :data:`SHA256` is the RFC 9162 hasher:
leaf ``SHA-256(0x00 || data)``, node ``SHA-256(0x01 || left || right)``,
empty tree ``SHA-256("")``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from audit.errors import ProofError, RootMismatchError

__all__ = [
    "SHA256",
    "Hasher",
    "Sha256Hasher",
    "batch_paths",
    "consistency_proof",
    "consistency_ranges",
    "fold_nodes",
    "inclusion_proof",
    "inclusion_ranges",
    "largest_power_of_two_below",
    "range_nodes",
    "root_from_inclusion_proof",
    "root_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]

RangeHash = Callable[[int, int], bytes]


class Hasher(Protocol):
    """The three hash functions of a Merkle tree; ``size`` is the digest length."""

    size: int

    def empty_root(self) -> bytes: ...

    def hash_leaf(self, data: bytes) -> bytes: ...

    def hash_children(self, left: bytes, right: bytes) -> bytes: ...


class Sha256Hasher:
    """RFC 9162 section 2.1.1 with SHA-256 (the only hash the trail uses)."""

    size = 32

    def empty_root(self) -> bytes:
        return hashlib.sha256(b"").digest()

    def hash_leaf(self, data: bytes) -> bytes:
        return hashlib.sha256(b"\x00" + data).digest()

    def hash_children(self, left: bytes, right: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + left + right).digest()


SHA256 = Sha256Hasher()


def hash_leaves(hasher: Hasher, datas: Iterable[bytes]) -> list[bytes]:
    """``hasher.hash_leaf`` of each of ``datas`` (for SHA-256 without a call a leaf)."""
    if type(hasher) is Sha256Hasher:
        sha256 = hashlib.sha256
        return [sha256(b"\x00" + data).digest() for data in datas]
    return list(map(hasher.hash_leaf, datas))


def hash_pairs(hasher: Hasher, nodes: bytes) -> bytes:
    """The parents of consecutive pairs of the joined hashes ``nodes`` (an even number), joined."""
    width = hasher.size
    if type(hasher) is Sha256Hasher:
        sha256 = hashlib.sha256
        return b"".join(
            [sha256(b"\x01" + nodes[i : i + 64]).digest() for i in range(0, len(nodes), 64)]
        )
    children = hasher.hash_children
    return b"".join(
        [
            children(nodes[i : i + width], nodes[i + width : i + 2 * width])
            for i in range(0, len(nodes), 2 * width)
        ]
    )


def largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two strictly smaller than ``n`` (n > 1)."""
    if n < 2:
        raise ValueError("n must be at least 2")
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaf_hashes: Sequence[bytes], hasher: Hasher = SHA256) -> bytes:
    """MTH straight from the RFC recursion: the reference the fast paths are tested against."""
    n = len(leaf_hashes)
    if n == 0:
        return hasher.empty_root()
    if n == 1:
        return leaf_hashes[0]
    k = largest_power_of_two_below(n)
    return hasher.hash_children(
        root_from_leaves(leaf_hashes[:k], hasher), root_from_leaves(leaf_hashes[k:], hasher)
    )


def range_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """Full subtrees ``(level, index)`` whose right fold is MTH(D[start:end]).

    Node (level, index) covers leaves ``[index << level, (index + 1) << level)``;
    level 0 is a leaf hash.  ``start`` must be aligned as the RFC recursion leaves it.
    """
    if not 0 <= start < end:
        raise ProofError(f"empty or negative range [{start}, {end})")
    nodes = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start & ((1 << level) - 1):
            raise ProofError(f"range [{start}, {end}) is not aligned to a subtree")
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold_nodes(hashes: Sequence[bytes], hasher: Hasher = SHA256) -> bytes:
    """Right fold of :func:`range_nodes` hashes: ``H(h0, H(h1, ... H(hn-2, hn-1)))``."""
    result = hashes[-1]
    for node in reversed(hashes[:-1]):
        result = hasher.hash_children(node, result)
    return result


def batch_paths(
    leaf_hashes: Sequence[bytes], hasher: Hasher = SHA256
) -> tuple[bytes, list[list[bytes]]]:
    """MTH of ``leaf_hashes`` and every leaf's audit path in that tree, in one pass.

    The path of leaf ``i`` is PATH(i, D[0:n]) of RFC 9162 2.1.3.1 (from the leaf up):
    what :func:`root_from_inclusion_proof` takes with index ``i`` and size ``n``.
    Costs n - 1 node hashes plus n * log2(n) list appends (a commit's batch).
    """
    n = len(leaf_hashes)
    if n == 0:
        raise ProofError("a batch has at least one leaf")
    paths: list[list[bytes]] = [[] for _ in range(n)]
    hash_children = hasher.hash_children

    def build(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaf_hashes[lo]
        mid = lo + largest_power_of_two_below(hi - lo)
        left, right = build(lo, mid), build(mid, hi)
        for i in range(lo, mid):
            paths[i].append(right)
        for i in range(mid, hi):
            paths[i].append(left)
        return hash_children(left, right)

    return build(0, n), paths


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges of PATH(index, D[0:size]) (RFC 9162 2.1.3.1), leaf end first."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not below tree size {size}")
    out = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = largest_power_of_two_below(hi - lo)
        if index - lo < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges of PROOF(size1, D[0:size2]) (RFC 9162 2.1.4.1), bottom first."""
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    out = []
    lo, hi, complete = 0, size2, True
    while True:
        if size1 - lo == hi - lo:
            if not complete:
                out.append((lo, hi))
            break
        k = largest_power_of_two_below(hi - lo)
        if size1 - lo <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
            complete = False
    out.reverse()
    return out


def inclusion_proof(index: int, size: int, range_hash: RangeHash) -> list[bytes]:
    """The audit path for leaf ``index`` in the tree of ``size`` leaves."""
    return [range_hash(a, b) for a, b in inclusion_ranges(index, size)]


def consistency_proof(size1: int, size2: int, range_hash: RangeHash) -> list[bytes]:
    """The proof that the tree of ``size1`` leaves is a prefix of the one of ``size2``."""
    return [range_hash(a, b) for a, b in consistency_ranges(size1, size2)]


def _check_hash(name: str, value: bytes, hasher: Hasher) -> None:
    if len(value) != hasher.size:
        raise ProofError(f"{name} is {len(value)} bytes, want {hasher.size}")


def _decompose(index: int, size: int) -> tuple[int, int]:
    """Split an audit path into its inner part (below the tree's right border) and border."""
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(hasher: Hasher, seed: bytes, proof: Iterable[bytes], index: int) -> bytes:
    for i, node in enumerate(proof):
        if (index >> i) & 1 == 0:
            seed = hasher.hash_children(seed, node)
        else:
            seed = hasher.hash_children(node, seed)
    return seed


def _chain_inner_right(hasher: Hasher, seed: bytes, proof: Iterable[bytes], index: int) -> bytes:
    for i, node in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = hasher.hash_children(node, seed)
    return seed


def _chain_border_right(hasher: Hasher, seed: bytes, proof: Iterable[bytes]) -> bytes:
    for node in proof:
        seed = hasher.hash_children(node, seed)
    return seed


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], hasher: Hasher = SHA256
) -> bytes:
    """The root an audit path leads to; raises :class:`ProofError` if it is malformed."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is beyond tree size {size}")
    _check_hash("leaf hash", leaf_hash, hasher)
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, want {inner + border}")
    for node in proof:
        _check_hash("proof hash", node, hasher)
    result = _chain_inner(hasher, leaf_hash, proof[:inner], index)
    return _chain_border_right(hasher, result, proof[inner:])


def verify_inclusion(
    index: int,
    size: int,
    leaf_hash: bytes,
    proof: Sequence[bytes],
    root: bytes,
    hasher: Hasher = SHA256,
) -> None:
    """Raise unless ``proof`` shows leaf ``index`` with ``leaf_hash`` under ``root``."""
    calculated = root_from_inclusion_proof(index, size, leaf_hash, proof, hasher)
    if calculated != root:
        raise RootMismatchError(root, calculated)


def verify_consistency(
    size1: int,
    size2: int,
    proof: Sequence[bytes],
    root1: bytes,
    root2: bytes,
    hasher: Hasher = SHA256,
) -> None:
    """Raise unless ``proof`` shows the ``size1`` tree (``root1``) is a prefix of ``root2``'s.

    As in the reference verifier, ``size1 == 0`` is refused even when ``size2 == 0``:
    a proof from the empty tree proves nothing, so callers skip that case themselves.
    """
    if size2 < size1:
        raise ProofError(f"size2 ({size2}) is smaller than size1 ({size1})")
    if size1 == 0:
        raise ProofError("consistency proof from the empty tree")
    if size1 == size2:
        if proof:
            raise ProofError("sizes are equal but the proof is not empty")
        if root1 != root2:
            raise RootMismatchError(root1, root2)
        return
    if not proof:
        raise ProofError("empty consistency proof")
    for node in proof:
        _check_hash("proof hash", node, hasher)
    inner, border = _decompose(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    # The proof starts with the root of the subtree of size 2^shift, unless size1 is that.
    if size1 == 1 << shift:
        seed, start = root1, 0
    else:
        seed, start = proof[0], 1
    if len(proof) != start + inner + border:
        want = start + inner + border
        raise ProofError(f"consistency proof has {len(proof)} hashes, want {want}")
    path = proof[start:]
    mask = (size1 - 1) >> shift
    hash1 = _chain_inner_right(hasher, seed, path[:inner], mask)
    hash1 = _chain_border_right(hasher, hash1, path[inner:])
    if hash1 != root1:
        raise RootMismatchError(root1, hash1)
    hash2 = _chain_inner(hasher, seed, path[:inner], mask)
    hash2 = _chain_border_right(hasher, hash2, path[inner:])
    if hash2 != root2:
        raise RootMismatchError(root2, hash2)
