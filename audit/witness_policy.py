"""Witness policies in the C2SP tlog-policy format (https://c2sp.org/tlog-policy).

One statement a line; ``#`` starts a comment line; items are separated by spaces/tabs::

    log <vkey> [<url>]                 a log key (type 0x01); optional
    witness <name> <vkey> [<url>]      a witness key (cosignature type 0x04)
    group <name> <k>|all|any <name>... k of these members (witnesses or earlier groups)
    quorum <name>|none                 exactly one: what must cosign

"k of these n witness keys" is ``group g <k> w1 … wn`` and ``quorum g``.  Names must be
defined before use; a member appears once per group; duplicate keys are refused.
Pure: :func:`parse_policy` takes the text, :meth:`WitnessPolicy.satisfied` the set of
witnesses whose cosignatures verified.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field

from audit.errors import ProofError
from audit.note import ED25519, ED25519_COSIGNATURE, Verifier, parse_vkey

__all__ = ["WitnessPolicy", "parse_policy"]


@dataclass(frozen=True)
class _Group:
    threshold: int
    members: tuple[str, ...]


@dataclass
class WitnessPolicy:
    logs: list[Verifier] = field(default_factory=list)
    witnesses: dict[str, Verifier] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    quorum: str = "none"

    def witnessed(self, name: str, cosigned: Set[str]) -> bool:
        if name == "none":
            return True
        if name in self.witnesses:
            return name in cosigned
        group = self.groups[name]
        return sum(self.witnessed(m, cosigned) for m in group.members) >= group.threshold

    def satisfied(self, cosigned: Set[str]) -> bool:
        """Whether the witnesses named in ``cosigned`` meet the quorum."""
        return self.witnessed(self.quorum, cosigned)

    def describe(self) -> str:
        if self.quorum == "none":
            return "no cosignatures required"
        if self.quorum in self.witnesses:
            return f"a cosignature by {self.quorum}"
        group = self.groups[self.quorum]
        return f"{group.threshold} of {len(group.members)} ({', '.join(group.members)})"


def _fail(number: int, message: str) -> ProofError:
    return ProofError(f"witness policy line {number}: {message}")


def parse_policy(text: str) -> WitnessPolicy:
    """Parse a policy file; raise :class:`ProofError` naming the line that is wrong."""
    policy = WitnessPolicy()
    quorum_seen = False
    keys: set[bytes] = set()
    for number, raw in enumerate(text.split("\n"), start=1):
        if any(ord(c) < 0x20 and c != "\t" for c in raw.rstrip("\r")) or "\x7f" in raw:
            raise _fail(number, "control characters are not allowed")
        items = raw.replace("\t", " ").split()
        if not items or items[0].startswith("#"):
            continue
        word, args = items[0], items[1:]
        if word == "log" and len(args) in (1, 2):
            try:
                log = parse_vkey(args[0])
            except ProofError as exc:
                raise _fail(number, str(exc)) from None
            if log.sig_type != ED25519 or log.public_key in keys:
                raise _fail(number, "a log key must be a new Ed25519 (type 0x01) vkey")
            keys.add(log.public_key)
            policy.logs.append(log)
        elif word == "witness" and len(args) in (2, 3):
            name = args[0]
            if name == "none" or name in policy.witnesses or name in policy.groups:
                raise _fail(number, f"the name {name!r} is already defined")
            try:
                witness = parse_vkey(args[1])
            except ProofError as exc:
                raise _fail(number, str(exc)) from None
            if witness.sig_type != ED25519_COSIGNATURE or witness.public_key in keys:
                raise _fail(number, "a witness key must be a new cosignature (type 0x04) vkey")
            keys.add(witness.public_key)
            policy.witnesses[name] = witness
        elif word == "group" and len(args) >= 3:
            name, k, members = args[0], args[1], tuple(args[2:])
            if name == "none" or name in policy.witnesses or name in policy.groups:
                raise _fail(number, f"the name {name!r} is already defined")
            for member in members:
                if member not in policy.witnesses and member not in policy.groups:
                    raise _fail(number, f"{member!r} is not defined on an earlier line")
            if len(set(members)) != len(members):
                raise _fail(number, "a member is listed twice")
            if k == "all":
                threshold = len(members)
            elif k == "any":
                threshold = 1
            elif k.isdigit() and k == str(int(k)) and 1 <= int(k) <= len(members):
                threshold = int(k)
            else:
                raise _fail(number, f"the threshold must be all, any or 1..{len(members)}")
            policy.groups[name] = _Group(threshold, members)
        elif word == "quorum" and len(args) == 1:
            if quorum_seen:
                raise _fail(number, "there must be exactly one quorum line")
            if args[0] != "none" and args[0] not in (*policy.witnesses, *policy.groups):
                raise _fail(number, f"{args[0]!r} is not defined on an earlier line")
            policy.quorum, quorum_seen = args[0], True
        else:
            raise _fail(number, f"cannot read {word!r} with {len(args)} items")
    if not quorum_seen:
        raise ProofError("witness policy: there must be exactly one quorum line")
    return policy
