"""The streaming verification both the offline verifier and the live store check use.

Feed it the entries' canonical bytes in log order; it checks each ``seq`` and
``prev`` link, rebuilds the Merkle tree, and compares every signed tree head
(signature, root, chain head) as the stream reaches its size.  At the end it
checks heads beyond the last entry (truncation), consistency between
consecutive heads, and optionally that the newest head covers every entry.

After a broken link it resynchronizes on the recorded ``prev`` (and a broken
``seq`` on the recorded number), so one altered entry is reported once, not as
a cascade through the rest of the log.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.chain import GENESIS_HASH, entry_hash
from audit.entry import Entry, peek
from audit.errors import InvalidEntry, ProofError, SignatureError
from audit.merkle import SHA256, Hasher, verify_consistency
from audit.signing import TreeHead, verify_tree_head
from audit.tree import MemoryTree

__all__ = ["PROBLEM_KINDS", "Checker", "Problem", "Report"]

PROBLEM_KINDS = {
    "malformed": "an entry is not a well-formed canonical entry",
    "sequence": "an entry's seq is not its position: entries deleted, inserted or reordered",
    "chain": "an entry does not hash to the prev recorded by the next entry: it was altered",
    "stored_hash": "live store only: a stored entry or leaf hash disagrees with the entry",
    "index": "live store only: a query column disagrees with the entry it indexes",
    "node": "live store only: a cached Merkle node disagrees with the entries",
    "signature": "a tree head's signature does not verify",
    "unknown_key": "a tree head is signed by a key that is not among the public keys",
    "root": "a signed root differs from the root recomputed from the entries",
    "chain_head": "a signed chain head differs from the recomputed hash chain",
    "truncated": "a signed tree head covers entries that are missing",
    "consistency": "two signed tree heads are not consistent (the log was forked)",
    "uncovered": "export only: entries after the newest signed tree head",
    "checkpoint": "export only: the checkpoint is unreadable, not signed by a log key, or "
    "has another root than the entries",
    "witness": "export only, under a witness policy: the checkpoint lacks the policy's "
    "quorum of valid witness cosignatures",
    "manifest": "export only: manifest.json disagrees with the entries or the signed heads",
    "receipt": "export only: a receipt given to check does not verify, or its promise was not "
    "kept (its entry or group is missing, altered or not covered by a signed tree head)",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong; ``seq`` names the first entry concerned when there is one."""

    kind: str
    message: str
    seq: int | None = None

    def __str__(self) -> str:
        where = f"entry {self.seq}: " if self.seq is not None else ""
        return f"{where}{self.kind}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "message": self.message}


@dataclass
class Report:
    """Outcome of a verification; ``ok`` only if nothing at all was wrong."""

    entries: int = 0
    tree_heads: int = 0
    covered: int = 0
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0
    key_source: str | None = None
    """Export only: ``"export"`` (the export's own keys, which vouch for nothing) or
    ``"trusted"`` (keys the verifier brought)."""
    warnings: list[str] = field(default_factory=list)
    """What did not stop the verification, e.g. a key file that could not be read."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        """The problem at the lowest entry, else the first tree-head problem found.

        ``uncovered`` and ``manifest`` come last: they are usually the echo of a
        rejected newest head or of a change to the entries.
        """

        def rank(item: tuple[int, Problem]) -> tuple[int, int]:
            order, problem = item
            if problem.kind in ("uncovered", "manifest", "receipt"):
                return (2, order)
            if problem.seq is not None:
                return (0, problem.seq)
            return (1, order)

        ranked = sorted(enumerate(self.problems), key=rank)
        return ranked[0][1] if ranked else None

    def summary(self) -> str:
        keys = {
            None: "",
            "export": "; signatures checked with the export's own keys, which vouch for nothing",
            "trusted": "; signatures checked with trusted keys",
        }.get(self.key_source, f"; keys: {self.key_source}")
        warned = f"; {_counted(len(self.warnings), 'warning')}" if self.warnings else ""
        if self.ok:
            return (
                f"OK: {_counted(self.entries, 'entry', 'entries')}, "
                f"{_counted(self.tree_heads, 'signed tree head')}, "
                f"{_counted(self.covered, 'entry', 'entries')} covered by a signed tree head"
                f"{warned}{keys}"
            )
        count = len(self.problems) + self.more_problems
        return f"FAILED: {self.first_problem} ({_counted(count, 'problem')}){warned}{keys}"

    def to_dict(self) -> dict[str, Any]:
        first = self.first_problem
        return {
            "ok": self.ok,
            "entries": self.entries,
            "tree_heads": self.tree_heads,
            "covered": self.covered,
            "first_problem": first.to_dict() if first else None,
            "problems": [p.to_dict() for p in self.problems],
            "more_problems": self.more_problems,
            "key_source": self.key_source,
            "warnings": list(self.warnings),
        }


class Checker:
    """Streaming verifier state: construct with the tree heads, ``feed`` entries, ``finish``."""

    def __init__(
        self,
        tree_heads: Sequence[TreeHead],
        public_keys: Mapping[str, Ed25519PublicKey],
        *,
        hasher: Hasher = SHA256,
        strict: bool = True,
        max_problems: int = 100,
        trust_below: int = 0,
    ) -> None:
        self.hasher = hasher
        self.strict = strict
        #: Entries below this position were parsed strictly by an earlier run whose chain
        #: head the caller checks (:func:`audit.livecheck.verify_store_again`): not again.
        self.trust_below = trust_below
        self.max_problems = max_problems
        self.report = Report(tree_heads=len(tree_heads))
        self.tree = MemoryTree(hasher)
        self.chain = GENESIS_HASH
        self.expected_seq = 0
        self._bad_heads: set[int] = set()
        self._good_size = 0  # size of the newest head that matched the entries
        self.heads = sorted(tree_heads, key=lambda h: (h.tree_size, h.timestamp_ms))
        self.trusted: list[TreeHead] = []
        for head in self.heads:
            try:
                verify_tree_head(head, public_keys)
            except SignatureError as exc:
                kind = "unknown_key" if exc.unknown_key else "signature"
                self.problem(kind, f"tree head of size {head.tree_size}: {exc}")
                continue
            self.trusted.append(head)
        self._next_head = 0
        self._next_size = -1
        self._sha256 = hashlib.sha256
        self._hash_leaf = hasher.hash_leaf
        self.last_entry: Entry | None = None
        """The entry the last :meth:`feed` parsed (strict mode; None if malformed)."""
        self._check_heads_at(0)

    def problem(self, kind: str, message: str, seq: int | None = None) -> None:
        if len(self.report.problems) < self.max_problems:
            self.report.problems.append(Problem(kind, message, seq))
        else:
            self.report.more_problems += 1

    @property
    def size(self) -> int:
        return self.tree.size

    def feed(self, canonical: bytes) -> tuple[bytes, bytes]:
        """Check the next entry; returns its (entry_hash, leaf_hash) as recomputed.

        The common case, an entry that continues the chain, is decided by byte
        comparisons on the canonical form (see :func:`audit.entry.peek`); any
        doubt takes the slow path, which parses and explains.  ``strict`` first
        parses the entry and demands its exact canonical form.
        """
        self.last_entry = None
        if self.strict and self.tree.size >= self.trust_below:
            try:
                self.last_entry = Entry.from_bytes(canonical, strict=True)
            except InvalidEntry:
                return self._feed_slow(canonical)  # which reports it
        chain = self.chain
        p = canonical.rfind(b',"prev":"')
        s = canonical.find(b',"seq":', p + 73)
        end = canonical.find(b",", s + 7)
        if (
            p < 0
            or s < 0
            or canonical[p + 9 : p + 75] != chain.hex().encode() + b'",'
            or canonical[s + 7 : end] != b"%d" % self.expected_seq
        ):
            return self._feed_slow(canonical)
        self.expected_seq += 1
        self.chain = chain = self._sha256(chain + canonical).digest()
        leaf = self._hash_leaf(canonical)
        tree = self.tree
        tree.append(leaf)
        if tree.size == self._next_size:
            self._check_heads_at(tree.size)
        return chain, leaf

    def _feed_slow(self, canonical: bytes) -> tuple[bytes, bytes]:
        position = self.tree.size
        try:
            seq, prev = peek(canonical)
            if self.strict:
                Entry.from_bytes(canonical, strict=True)
        except InvalidEntry as exc:
            self.problem("malformed", str(exc), position)
            seq, prev = self.expected_seq, self.chain
        if seq != self.expected_seq:
            self.problem(
                "sequence",
                f"position {position} expected seq {self.expected_seq} but holds seq {seq}: "
                "entries were deleted, inserted or reordered",
                min(seq, self.expected_seq),
            )
        elif prev != self.chain:
            if position == 0:
                self.problem("chain", "the first entry does not start from the genesis hash", 0)
            else:
                self.problem(
                    "chain",
                    f"entry {position - 1} does not hash to the prev recorded in entry {position}"
                    f": entry {position - 1} (or that link) was altered",
                    position - 1,
                )
        self.expected_seq = seq + 1
        self.chain = entry_hash(prev, canonical)
        leaf = self._hash_leaf(canonical)
        self.tree.append(leaf)
        self._check_heads_at(self.tree.size)
        return self.chain, leaf

    def _check_heads_at(self, size: int) -> None:
        heads = self.trusted
        while self._next_head < len(heads) and heads[self._next_head].tree_size <= size:
            head = heads[self._next_head]
            self._next_head += 1
            if head.tree_size != size:
                continue  # a head below the current size was already passed (bad order)
            if head.chain_head != self.chain:
                # Links up to here held (or were reported), so the last entry is the odd one.
                self._bad_heads.add(id(head))
                self.problem(
                    "chain_head",
                    f"entry {size - 1} does not hash to the chain head signed at size {size}: "
                    "it was altered",
                    size - 1 if size else None,
                )
            if head.root_hash != self.tree.root():
                self._bad_heads.add(id(head))
                self.problem(
                    "root",
                    f"tree head of size {size}: the root recomputed from the entries differs; "
                    f"an entry in [{self._good_size}, {size}) was altered, inserted or removed",
                )
            elif id(head) not in self._bad_heads:
                self._good_size = size
            self.report.covered = max(self.report.covered, size)
        following = self._next_head
        self._next_size = heads[following].tree_size if following < len(heads) else -1

    def finish(self, *, require_covered: bool = False) -> Report:
        """Checks that need the whole stream; returns the report."""
        size = self.tree.size
        self.report.entries = size
        beyond = [head for head in self.trusted if head.tree_size > size]
        for head in beyond:
            if head.tree_size > size:
                self._bad_heads.add(id(head))
                self.problem(
                    "truncated",
                    f"a signed tree head covers {head.tree_size} entries but only {size} are "
                    f"present: entries from seq {size} on were removed",
                    size,
                )
        self._check_consistency()
        if require_covered and size > self.report.covered and not beyond:
            self.problem(
                "uncovered",
                f"entries from seq {self.report.covered} on are not covered by a signed tree "
                "head: they were appended after the export or inserted at the end",
                self.report.covered,
            )
        return self.report

    def _check_consistency(self) -> None:
        heads = [h for h in self.trusted if h.tree_size <= self.tree.size]
        for older, newer in itertools.pairwise(heads):
            if older.tree_size == 0 or id(older) in self._bad_heads or id(newer) in self._bad_heads:
                continue
            proof = self.tree.consistency_proof(older.tree_size, newer.tree_size)
            try:
                verify_consistency(
                    older.tree_size, newer.tree_size, proof, older.root_hash, newer.root_hash
                )
            except ProofError as exc:
                self.problem(
                    "consistency",
                    f"tree heads of sizes {older.tree_size} and {newer.tree_size}: {exc}",
                )


def _counted(count: int, singular: str, plural: str | None = None) -> str:
    """``1 entry``, ``2 entries``: never ``1 entries``."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
