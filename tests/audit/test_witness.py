"""The witness's check (consistency, split view, rollback), witness policies in the C2SP
tlog-policy format, and the server's checkpoint store."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import KeyRing
from audit.checkpoint import log_verifier, parse_checkpoint_text, sign_checkpoint
from audit.checkpoint_store import CheckpointStore
from audit.cosignature import cosign, witness_verifier
from audit.errors import NotFound, ProofError
from audit.merkle import SHA256
from audit.note import Note, format_note, parse_note
from audit.tree import MemoryTree
from audit.witness import SplitView, WitnessRefusal, WitnessState, witness_checkpoint
from audit.witness_policy import parse_policy

ORIGIN = "sandbox.test/audit"


@pytest.fixture(scope="module")
def log_key(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return KeyRing(tmp_path_factory.mktemp("log") / "keys").ensure()


@pytest.fixture(scope="module")
def tree() -> MemoryTree:
    tree = MemoryTree(SHA256)
    for i in range(13):
        tree.append(SHA256.hash_leaf(b"entry %d" % i))
    return tree


def _witness(log_key, state, tree, size, *, root=None, proof_from=None, signer=None):  # type: ignore[no-untyped-def]
    signer = signer or log_key
    note = format_note(sign_checkpoint(signer, ORIGIN, size, root or tree.root(size)))
    old = proof_from if proof_from is not None else 0
    proof = tree.consistency_proof(old, size) if 0 < old < size else []
    return witness_checkpoint(
        state,
        note,
        proof,
        log_verifier(ORIGIN, log_key.public_key),
        name="bureau.test/w1",
        key=WITNESS,
        now=1_796_000_000,
    )


WITNESS = Ed25519PrivateKey.generate()


def test_a_growing_log_is_cosigned_at_each_step(log_key, tree) -> None:  # type: ignore[no-untyped-def]
    state = WitnessState()
    for old, size in [(0, 3), (3, 3), (3, 8), (8, 13)]:
        cosigned, state = _witness(log_key, state, tree, size, proof_from=old)
        assert parse_checkpoint_text(cosigned.text).tree_size == size
        assert cosigned.signatures[-1].name == "bureau.test/w1"
        assert parse_note(state.note or "").text == cosigned.text


def test_two_roots_at_one_size_are_a_split_view(log_key, tree) -> None:  # type: ignore[no-untyped-def]
    _, state = _witness(log_key, WitnessState(), tree, 5)
    with pytest.raises(SplitView, match="two checkpoints of size 5") as raised:
        _witness(log_key, state, tree, 5, root=b"\x07" * 32)
    assert raised.value.rule == "witness.split_view"
    evidence = raised.value.evidence
    assert evidence["old_checkpoint"] == state.note and "\n5\n" in evidence["new_checkpoint"]


def test_a_checkpoint_not_consistent_with_the_last_is_a_split_view(log_key, tree) -> None:  # type: ignore[no-untyped-def]
    forked = MemoryTree(SHA256)
    for i in range(13):
        forked.append(SHA256.hash_leaf(b"entry %d" % (i if i != 2 else 99)))
    _, state = _witness(log_key, WitnessState(), tree, 4)
    with pytest.raises(SplitView, match="no consistency from size 4 to 9"):
        _witness(log_key, state, forked, 9, proof_from=4)


def test_a_smaller_tree_or_another_log_key_is_refused(log_key, tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, state = _witness(log_key, WitnessState(), tree, 9)
    with pytest.raises(WitnessRefusal, match="below the 9") as raised:
        _witness(log_key, state, tree, 6)
    assert raised.value.rule == "witness.rollback"
    other = KeyRing(tmp_path / "other").ensure()
    with pytest.raises(WitnessRefusal) as raised:
        _witness(log_key, state, tree, 10, proof_from=9, signer=other)
    assert raised.value.rule == "witness.log_signature"


# -- witness policies ------------------------------------------------------------------------


def _vkeys(n: int) -> list[str]:
    return [
        witness_verifier(f"w{i}.test/witness", Ed25519PrivateKey.generate()).vkey()
        for i in range(n)
    ]


def test_the_spec_example_policy_shape(log_key) -> None:  # type: ignore[no-untyped-def]
    x, y = _vkeys(3), _vkeys(3)
    text = "\n".join(
        [
            f"log {log_verifier(ORIGIN, log_key.public_key).vkey()}",
            "",
            *(f"witness X{i + 1} {k}" for i, k in enumerate(x)),
            "group X-witnesses 2 X1 X2 X3",
            "  # a comment",
            *(f"witness Y{i + 1}\t{k} https://y.test/{i}" for i, k in enumerate(y)),
            "group Y-witnesses any Y1 Y2 Y3",
            "group X-and-Y all X-witnesses Y-witnesses",
            "quorum X-and-Y",
        ]
    )
    policy = parse_policy(text)
    assert len(policy.logs) == 1 and len(policy.witnesses) == 6
    assert policy.satisfied({"X1", "X3", "Y2"})
    assert not policy.satisfied({"X1", "Y2"}) and not policy.satisfied({"X1", "X2", "X3"})


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), data=st.data())
def test_k_of_n_holds_exactly_when_k_distinct_witnesses_cosigned(
    n: int, data: st.DataObject
) -> None:
    k = data.draw(st.integers(1, n))
    names = [f"w{i}" for i in range(n)]
    keys = _vkeys(n)
    text = "".join(f"witness {w} {v}\n" for w, v in zip(names, keys, strict=True))
    policy = parse_policy(text + f"group g {k} {' '.join(names)}\nquorum g\n")
    cosigned = data.draw(st.sets(st.sampled_from(names)))
    assert policy.satisfied(cosigned) == (len(cosigned) >= k)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "exactly one quorum"),
        ("quorum w\n", "not defined on an earlier line"),
        ("quorum none\nquorum none\n", "exactly one quorum"),
        ("witness w {a}\ngroup g 2 w\nquorum g\n", "threshold"),
        ("witness w {a}\ngroup g 0 w\nquorum g\n", "threshold"),
        ("witness w {a}\ngroup g any w w\nquorum g\n", "listed twice"),
        ("witness w {a}\nwitness v {a}\nquorum w\n", "new cosignature"),
        ("witness w {a}\nwitness w {b}\nquorum w\n", "already defined"),
        ("witness w {log}\nquorum w\n", "new cosignature"),
        ("witnesses w {a}\nquorum none\n", "cannot read"),
        ("witness w example.test+00000000+AAAA\nquorum w\n", "line 1"),
    ],
)
def test_bad_policies_are_refused_naming_the_line(log_key, text: str, why: str) -> None:  # type: ignore[no-untyped-def]
    a, b = _vkeys(2)
    log = log_verifier(ORIGIN, log_key.public_key).vkey()
    with pytest.raises(ProofError, match=why):
        parse_policy(text.format(a=a, b=b, log=log))


# -- the server's checkpoint store -------------------------------------------------------------


def test_the_store_signs_once_per_size_and_collects_cosignatures(
    log_key, tree, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    store = CheckpointStore(tmp_path / "cp", ORIGIN)
    note = store.publish(log_key, 4, tree.root(4))
    assert store.publish(log_key, 4, tree.root(4)) == note
    with pytest.raises(ProofError, match="another root"):
        store.publish(log_key, 4, tree.root(5))
    assert store.latest_cosigned() is None
    w1 = witness_verifier("w1.test/w", WITNESS)
    line = cosign(note.text, "w1.test/w", WITNESS, 1_796_000_000)
    merged = store.add_cosignature(Note(note.text, (*note.signatures, line)), w1)
    assert merged.signatures == (*note.signatures, line) and store.latest_cosigned() == merged
    stranger = Ed25519PrivateKey.generate()
    bad = cosign(note.text, "w1.test/w", stranger, 1_796_000_000)
    with pytest.raises(ProofError):
        store.add_cosignature(Note(note.text, (*note.signatures, bad)), w1)
    other = sign_checkpoint(log_key, ORIGIN, 6, tree.root(6))
    line6 = cosign(other.text, "w1.test/w", WITNESS, 1_796_000_000)
    with pytest.raises(NotFound, match="no such checkpoint of size 6"):
        store.add_cosignature(Note(other.text, (*other.signatures, line6)), w1)
