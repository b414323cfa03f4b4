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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.chain import GENESIS_HASH, entry_hash
from audit.entry import Entry, peek
from audit.errors import InvalidEntry, ProofError, SignatureError
from audit.merkle import SHA256, Hasher, hash_leaves, verify_consistency
from audit.quick import fields_pinned, fields_quick
from audit.report import PROBLEM_KINDS, Problem, Report
from audit.signing import TreeHead, verify_tree_head
from audit.tree import MemoryTree

__all__ = ["PROBLEM_KINDS", "Checker", "Fed", "Problem", "Report"]

_T = TypeVar("_T")


@dataclass
class Fed(Generic[_T]):
    """What :meth:`Checker.feed_many` recomputed, one item an entry."""

    chains: list[bytes]
    leaves: list[bytes]
    picked: list[_T | None]  # empty unless a ``pick`` was given


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
        if self.strict and self.tree.size >= self.trust_below:
            try:
                Entry.from_bytes(canonical, strict=True)
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

    def feed_many(
        self,
        entries: Sequence[bytes],
        pick: Callable[[dict[str, Any]], _T] | None = None,
    ) -> Fed[_T]:
        """:meth:`feed` each of ``entries`` in order, with the same checks, in bulk.

        Entries that :func:`audit.quick.fields_quick` proves well formed (strictly: a
        ``strict=False`` checker only asks less of the others; below ``trust_below``
        only parsed, :func:`audit.quick.fields_pinned`) and that continue the chain
        are hashed in one tight loop, and their leaves added to the tree in one batch,
        up to each tree head's size, where the head is checked; any other entry goes
        through :meth:`feed`, which checks and reports it.  Returns each entry's
        recomputed entry and leaf hashes and, with ``pick``, ``pick`` of its members
        (None if it is not even loosely a JSON entry).
        """
        fed: Fed[_T] = Fed([], [], [])
        start, count = 0, len(entries)
        while start < count:
            size = self.tree.size
            stop = count
            if self._next_size >= 0:
                stop = min(stop, start + self._next_size - size)
            if size < self.trust_below:
                stop = min(stop, start + self.trust_below - size)
            start = self._feed_run(entries, start, stop, fed, pick)
            if start < stop:  # not proven here: checked and explained one by one
                canonical = entries[start]
                chain, leaf = self.feed(canonical)
                fed.chains.append(chain)
                fed.leaves.append(leaf)
                if pick is not None:
                    try:
                        fed.picked.append(pick(Entry.from_bytes(canonical).__dict__))
                    except InvalidEntry:
                        fed.picked.append(None)  # reported as malformed by feed if strict
                start += 1
        return fed

    def feed_proven(
        self, first_seq: int, first_prev: bytes, chains: bytes, leaves: Sequence[bytes]
    ) -> bool:
        """Take a run of entries proven elsewhere (:func:`audit.parallel.prove_range`):
        well formed, each linked to the one before, from an entry claiming ``first_seq``
        and ``first_prev``, with these chain hashes (32 bytes each) and leaf hashes.

        Taken only if it continues this checker's chain: ``first_seq`` is the next seq
        and ``first_prev`` the chain head here, so the run proves what :meth:`feed_many`
        would have.  The tree heads at sizes inside the run are checked as there.
        Returns False, changing nothing, if the run does not continue the chain.
        """
        if (
            first_seq != self.expected_seq
            or first_prev != self.chain
            or len(chains) != 32 * len(leaves)
            or self.tree.size < self.trust_below
        ):
            return False
        tree, base, done = self.tree, self.tree.size, 0
        while done < len(leaves):
            stop = len(leaves)
            if self._next_size >= 0:
                stop = min(stop, self._next_size - base)
            tree.extend(leaves[done:stop])
            done = stop
            self.chain = chains[32 * (done - 1) : 32 * done]
            self.expected_seq = first_seq + done
            if tree.size == self._next_size:
                self._check_heads_at(tree.size)
        return True

    def _feed_run(
        self,
        entries: Sequence[bytes],
        start: int,
        stop: int,
        fed: Fed[_T],
        pick: Callable[[dict[str, Any]], _T] | None,
    ) -> int:
        """The common case of :meth:`feed_many` over ``entries[start:stop]``, no head
        inside; returns where it stopped: ``stop``, or the first entry it cannot prove."""
        sha256 = hashlib.sha256
        quick = fields_quick if self.tree.size >= self.trust_below else fields_pinned
        chain, seq = self.chain, self.expected_seq
        add_chain, add_pick = fed.chains.append, fed.picked.append
        for canonical in itertools.islice(entries, start, stop):
            fields = quick(canonical, seq, chain)
            if fields is None:
                break
            chain = sha256(chain + canonical).digest()
            add_chain(chain)
            if pick is not None:
                add_pick(pick(fields))
            seq += 1
        done = seq - self.expected_seq
        if not done:
            return start
        self.chain, self.expected_seq = chain, seq
        run = entries[start : start + done]
        leaves = hash_leaves(self.hasher, run)
        fed.leaves.extend(leaves)
        tree = self.tree
        tree.extend(leaves)
        if tree.size == self._next_size:
            self._check_heads_at(tree.size)
        return start + done

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
