"""What a verification found: the problems, each with its kind and first entry, and a summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PROBLEM_KINDS", "Problem", "Report"]

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


def _counted(count: int, singular: str, plural: str | None = None) -> str:
    """``1 entry``, ``2 entries``: never ``1 entries``."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
