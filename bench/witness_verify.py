"""What a witness policy adds to `verify_export`, and what a witness's check costs.

Builds an export of N entries (SQLite, in a temporary directory), a checkpoint of it
cosigned by 3 witnesses, then times, interleaved, ``verify_export`` without a policy and
with a 2-of-3 witness policy (which also checks the checkpoint's log signature, its root
against the entries, and the cosignatures), and a witness's check of a new checkpoint
with its consistency proof (``witness_checkpoint``).  Prints medians, spread (min..max)
and the ratio; no targets.

    python bench/witness_verify.py --entries 20000 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditTrail, EntryDraft, KeyRing, verify_export
from audit.checkpoint import log_verifier, sign_checkpoint
from audit.checkpoint_store import CheckpointStore
from audit.cosignature import cosign, witness_verifier
from audit.note import Note, format_note
from audit.witness import WitnessState, witness_checkpoint
from audit.witness_policy import parse_policy

ORIGIN = "bench.example/sandbox-audit"


def _draft(i: int) -> EntryDraft:
    return EntryDraft(
        actor=f"op-{i % 7}",
        role="operator",
        action="dataset.query",
        target=f"query:j{i}",
        decision="allow",
        rule="allow.grant",
        details={"rows": i},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="witness-bench-"))
    ring = KeyRing(root / "keys")
    key = ring.ensure()
    with AuditTrail.open(f"sqlite:///{root / 'audit.db'}", ring, sign_every_n=10_000) as trail:
        for start in range(0, args.entries, 1000):
            trail.append_many([_draft(i) for i in range(start, min(start + 1000, args.entries))])
        summary = trail.export(root / "export")
        head = summary.tree_head
        store = CheckpointStore(root / "checkpoints", ORIGIN)
        note = store.publish(key, head.tree_size, head.root_hash)
        witnesses = [Ed25519PrivateKey.generate() for _ in range(3)]
        lines = []
        for i, w in enumerate(witnesses):
            lines.append(cosign(note.text, f"w{i}.example/w", w, int(time.time())))
        (root / "export" / "checkpoint").write_text(
            format_note(Note(note.text, (*note.signatures, *lines)))
        )
        policy = parse_policy(
            "".join(
                f"witness W{i} {witness_verifier(f'w{i}.example/w', w).vkey()}\n"
                for i, w in enumerate(witnesses)
            )
            + "group g 2 W0 W1 W2\nquorum g\n"
        )
        half = head.tree_size // 2
        old = format_note(sign_checkpoint(key, ORIGIN, half, trail.root(half)))
        proof = list(trail.consistency_proof(half, head.tree_size).path)
    log = log_verifier(ORIGIN, key.public_key)
    plain, witnessed, check = [], [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        assert verify_export(root / "export").ok
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert verify_export(root / "export", witness_policy=policy).ok
        witnessed.append(time.perf_counter() - t)
        t = time.perf_counter()
        witness_checkpoint(
            WitnessState(old),
            format_note(note),
            proof,
            log,
            name="w.example/w",
            key=witnesses[0],
            now=int(time.time()),
        )
        check.append(time.perf_counter() - t)

    def show(name: str, xs: list[float], unit: float = 1.0, suffix: str = "s") -> None:
        xs = [x * unit for x in xs]
        spread = f"{min(xs):.4f}..{max(xs):.4f}"
        print(f"{name:42s} median {statistics.median(xs):9.4f} {suffix}  spread {spread}")

    print(f"export of {head.tree_size} entries, {args.rounds} rounds interleaved")
    show("verify_export, no policy", plain)
    show("verify_export, 2-of-3 witness policy", witnessed)
    ratio = statistics.median(witnessed) / statistics.median(plain)
    print(f"{'ratio with policy / without (medians)':42s} {ratio:.3f}x")
    show("witness check + cosign (proof from n/2)", check, 1000, "ms")


if __name__ == "__main__":
    main()
