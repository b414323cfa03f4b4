"""RFC 6962 / RFC 9162 published vectors: roots of sizes 0..8 and 196 proofs, valid and corrupted.

Vendored in ``vectors/rfc6962`` (copied unchanged from the shared test data, itself
from transparency-dev/merkle under the Apache License 2.0: see SOURCE.md and LICENSE
there), so every checkout and every CI run checks them; missing vectors fail, never skip.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from audit.errors import ProofError
from audit.merkle import SHA256, root_from_leaves, verify_consistency, verify_inclusion
from audit.tree import MemoryTree

VECTORS = Path(__file__).resolve().parent / "vectors" / "rfc6962"


def _require_vectors() -> Path:
    if not (VECTORS / "roots.json").is_file():
        pytest.fail(f"RFC 6962 vectors missing at {VECTORS} (they are part of the repository)")
    return VECTORS


def _files(kind: str) -> list[Path]:
    folder = VECTORS / "testdata" / kind
    return sorted(folder.rglob("*.json")) if folder.is_dir() else []


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(VECTORS / "testdata")) for p in paths]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _proof(data: dict[str, Any]) -> list[bytes]:
    return [_b64(p) for p in data["proof"] or []]


INCLUSION = _files("inclusion")
CONSISTENCY = _files("consistency")


def test_vector_counts() -> None:
    _require_vectors()
    # SOURCE.md: 196 inclusion and consistency proofs in total.
    assert len(INCLUSION) + len(CONSISTENCY) == 196


def test_roots_of_sizes_0_to_8() -> None:
    data = json.loads((_require_vectors() / "roots.json").read_text())
    leaves = [SHA256.hash_leaf(bytes.fromhex(x)) for x in data["leaf_inputs_hex"]]
    tree = MemoryTree()
    for size, want in enumerate(data["root_hash_by_tree_size_hex"]):
        assert root_from_leaves(leaves[:size]).hex() == want
        assert tree.root().hex() == want
        if size < len(leaves):
            tree.append(leaves[size])
    for size in range(1, 9):  # earlier sizes from the grown tree, through stored subtrees
        assert tree.root(size).hex() == data["root_hash_by_tree_size_hex"][size]


@pytest.mark.parametrize("path", INCLUSION, ids=_ids(INCLUSION))
def test_inclusion_vector(path: Path) -> None:
    data = json.loads(path.read_text())
    args = (data["leafIdx"], data["treeSize"], _b64(data["leafHash"]), _proof(data))
    if data["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args, _b64(data["root"]))
    else:
        verify_inclusion(*args, _b64(data["root"]))


@pytest.mark.parametrize("path", CONSISTENCY, ids=_ids(CONSISTENCY))
def test_consistency_vector(path: Path) -> None:
    data = json.loads(path.read_text())
    args = (data["size1"], data["size2"], _proof(data), _b64(data["root1"]), _b64(data["root2"]))
    if data["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_our_proofs_match_the_vectors() -> None:
    """Proofs we generate for the classic 8 leaves equal the published happy-path proofs."""
    data = json.loads((_require_vectors() / "roots.json").read_text())
    tree = MemoryTree.from_leaves(
        [SHA256.hash_leaf(bytes.fromhex(x)) for x in data["leaf_inputs_hex"]]
    )
    checked = 0
    for path in INCLUSION + CONSISTENCY:
        vector = json.loads(path.read_text())
        if vector["wantErr"] or path.stem != "happy-path":
            continue
        if "leafIdx" in vector:
            got = tree.inclusion_proof(vector["leafIdx"], vector["treeSize"])
        else:
            got = tree.consistency_proof(vector["size1"], vector["size2"])
        assert got == _proof(vector), path
        checked += 1
    assert checked >= 8
