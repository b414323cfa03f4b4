"""Property tests: the fast tree agrees with the RFC recursion, proofs verify, tampering fails."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.errors import ProofError, RootMismatchError
from audit.merkle import (
    SHA256,
    consistency_ranges,
    inclusion_ranges,
    range_nodes,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from audit.tree import Frontier, MemoryTree, peak_nodes


def leaves(n: int) -> list[bytes]:
    return [SHA256.hash_leaf(i.to_bytes(4, "big")) for i in range(n)]


def reference_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) written exactly as RFC 9162 section 2.1.3.1 states it."""
    n = len(d)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*reference_path(m, d[:k]), root_from_leaves(d[k:])]
    return [*reference_path(m - k, d[k:]), root_from_leaves(d[:k])]


def reference_subproof(m: int, d: list[bytes], complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 section 2.1.4.1."""
    n = len(d)
    if m == n:
        return [] if complete else [root_from_leaves(d)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*reference_subproof(m, d[:k], complete), root_from_leaves(d[k:])]
    return [*reference_subproof(m - k, d[k:], False), root_from_leaves(d[:k])]


sizes = st.integers(min_value=1, max_value=80)


@given(sizes)
def test_incremental_root_equals_rfc_recursion(n: int) -> None:
    d = leaves(n)
    tree = MemoryTree.from_leaves(d)
    for size in range(n + 1):
        assert tree.root(size) == root_from_leaves(d[:size])


@given(sizes, st.data())
def test_inclusion_proofs_match_rfc_and_verify(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    tree = MemoryTree.from_leaves(d)
    size = data.draw(st.integers(1, n))
    m = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(m, size)
    assert proof == reference_path(m, d[:size])
    verify_inclusion(m, size, d[m], proof, tree.root(size))


@given(sizes, st.data())
def test_consistency_proofs_match_rfc_and_verify(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    tree = MemoryTree.from_leaves(d)
    size2 = data.draw(st.integers(1, n))
    size1 = data.draw(st.integers(1, size2))
    proof = tree.consistency_proof(size1, size2)
    assert proof == reference_subproof(size1, d[:size2], True)
    verify_consistency(size1, size2, proof, tree.root(size1), tree.root(size2))


@given(sizes, st.data())
def test_any_flipped_bit_breaks_an_inclusion_proof(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    tree = MemoryTree.from_leaves(d)
    m = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(m, n)
    target = data.draw(st.sampled_from(["leaf", "root", "proof", "index"]))
    leaf, root, index = d[m], tree.root(), m
    if target == "leaf":
        leaf = bytes([leaf[0] ^ 1]) + leaf[1:]
    elif target == "root":
        root = bytes([root[0] ^ 0x80]) + root[1:]
    elif target == "index":
        index = (m + 1) % n
        if index == m:
            return
    elif proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        proof[i] = hashlib.sha256(proof[i]).digest()
    else:
        return
    with pytest.raises(ProofError):
        verify_inclusion(index, n, leaf, proof, root)


@given(st.integers(2, 80), st.data())
def test_a_changed_old_leaf_breaks_consistency(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    size1 = data.draw(st.integers(1, n - 1))
    victim = data.draw(st.integers(0, size1 - 1))
    forked = list(d)
    forked[victim] = SHA256.hash_leaf(b"forged")
    honest, fork = MemoryTree.from_leaves(d), MemoryTree.from_leaves(forked)
    proof = honest.consistency_proof(size1, n)
    with pytest.raises(RootMismatchError) as caught:
        verify_consistency(size1, n, proof, fork.root(size1), honest.root())
    assert caught.value.expected in (fork.root(size1), honest.root())
    assert caught.value.calculated != caught.value.expected


@given(st.integers(1, 5000))
def test_frontier_reports_every_full_subtree_once(n: int) -> None:
    frontier = Frontier()
    completed: list[tuple[int, int, bytes]] = []
    for leaf in leaves(n) if n <= 300 else (bytes(32) for _ in range(n)):
        frontier.append(leaf, completed)
    want = {(level, i) for level in range(1, n.bit_length()) for i in range(n >> level)}
    assert [(lv, i) for lv, i, _ in completed] == sorted(
        want, key=lambda t: ((t[1] + 1) << t[0], t[0])
    )
    assert len(frontier.peaks) == len(peak_nodes(n)) == bin(n).count("1")


@given(st.integers(1, 2**40), st.data())
def test_proof_ranges_are_aligned_subtrees(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n - 1))
    size1 = data.draw(st.integers(1, n))
    for a, b in [*inclusion_ranges(m, n), *consistency_ranges(size1, n)]:
        nodes = range_nodes(a, b)
        assert len(nodes) <= n.bit_length()
        assert sum(1 << level for level, _ in nodes) == b - a


def test_bad_requests_are_refused_with_a_reason() -> None:
    with pytest.raises(ProofError, match="not below tree size"):
        inclusion_ranges(5, 5)
    with pytest.raises(ProofError, match="no consistency proof"):
        consistency_ranges(0, 3)
    with pytest.raises(ProofError, match="not aligned"):
        range_nodes(1, 3)
    with pytest.raises(ProofError, match="leaf hash is 3 bytes"):
        verify_inclusion(0, 1, b"abc", [], bytes(32))
    with pytest.raises(ProofError, match="proof has 1 hashes, want 0"):
        verify_inclusion(0, 1, bytes(32), [bytes(32)], bytes(32))
