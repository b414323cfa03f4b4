"""The vocabulary of authorization: actions, targets, rules, and the :class:`Decision`.

Every action is ``object.verb`` (the Casbin ``obj`` and ``act``).  Every
outcome names exactly one rule from :data:`RULES`; a denial's rule is the
reason, stable across releases, documented in ``docs/policy.md`` (a test checks).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sandbox.core.errors import (
    BudgetExhausted,
    Forbidden,
    NotFound,
    QuotaExceeded,
    SandboxError,
    Withheld,
)

from .grant_terms import Grant

__all__ = [
    "ACTIONS",
    "RULES",
    "WITHHELD",
    "BudgetState",
    "DailyUsage",
    "Decision",
    "Target",
    "TargetKind",
]


class TargetKind(enum.StrEnum):
    PLATFORM = "platform"
    DOMAIN = "domain"
    DATASET = "dataset"
    GRANT = "grant"
    ACCOUNT = "account"
    TOKEN = "token"
    QUERY = "query"


_K = TargetKind
ACTIONS: Mapping[str, frozenset[TargetKind]] = {
    "dataset.query": frozenset({_K.QUERY}),
    "catalog.read": frozenset({_K.PLATFORM, _K.DOMAIN, _K.DATASET}),
    "dataset.register": frozenset({_K.DOMAIN, _K.DATASET}),
    "dataset.classify": frozenset({_K.DOMAIN, _K.DATASET}),
    "dataset.freeze": frozenset({_K.DATASET}),
    "dataset.unfreeze": frozenset({_K.DATASET}),
    "registration.decide": frozenset({_K.DOMAIN}),
    "grant.issue": frozenset({_K.DATASET}),
    "grant.read": frozenset({_K.GRANT, _K.ACCOUNT, _K.DOMAIN, _K.DATASET, _K.PLATFORM}),
    "grant.narrow": frozenset({_K.GRANT}),
    "grant.release_mode": frozenset({_K.GRANT}),
    "grant.suspend": frozenset({_K.GRANT}),
    "grant.resume": frozenset({_K.GRANT}),
    "grant.revoke": frozenset({_K.GRANT}),
    "job.read": frozenset({_K.ACCOUNT}),
    "job.review": frozenset({_K.DATASET}),
    "result.read": frozenset({_K.ACCOUNT}),
    "receipt.read": frozenset({_K.ACCOUNT}),
    "budget.read": frozenset({_K.ACCOUNT}),
    "usage.read": frozenset({_K.ACCOUNT, _K.DOMAIN, _K.DATASET, _K.PLATFORM}),
    "statement.read": frozenset({_K.ACCOUNT, _K.DOMAIN, _K.PLATFORM}),
    "audit.read": frozenset({_K.PLATFORM}),
    "audit.export": frozenset({_K.PLATFORM}),
    "audit.verify": frozenset({_K.PLATFORM}),
    "audit.cosign": frozenset({_K.PLATFORM, _K.DOMAIN}),
    "witness.register": frozenset({_K.ACCOUNT}),
    "account.create": frozenset({_K.ACCOUNT}),
    "account.list": frozenset({_K.PLATFORM}),
    "account.disable": frozenset({_K.ACCOUNT}),
    "account.licence": frozenset({_K.ACCOUNT}),
    "token.issue": frozenset({_K.ACCOUNT}),
    "token.revoke": frozenset({_K.TOKEN}),
    "enrolment.issue": frozenset({_K.ACCOUNT}),
    "enrolment.approve": frozenset({_K.ACCOUNT}),
    "operator.freeze": frozenset({_K.ACCOUNT}),
    "operator.unfreeze": frozenset({_K.ACCOUNT}),
    "key.rotate": frozenset({_K.PLATFORM}),
}
"""Every action the decision API knows, with the target kinds it accepts."""

RULES: Mapping[str, str] = {
    # allow
    "allow.role": "the role may perform the action in the target's domain (Casbin policy line)",
    "allow.grant": "a live grant covers every dataset and column the query touches",
    "allow.own": "an account asks for a token of its own, with a token it holds (every role "
    "may; no policy line needed)",
    "allow.enrolment": "an account's holder redeemed a live enrolment code for its token",
    "allow.enrolment_pending": "an account's holder redeemed a live enrolment code issued by "
    "an admin account, for a token it made: the token waits for a second administrator",
    # request shape
    "action.unknown": "the action is not in the action table (deny by default)",
    "target.invalid": "the target is not of a kind this action accepts",
    "query.no_datasets": "a query decision must name the datasets the query touches",
    # who
    "auth.token_missing": "no bearer token was sent (no Authorization header, or not Bearer)",
    "auth.token_unknown": "the bearer token is malformed or was never issued",
    "auth.token_expired": "the bearer token is past its expiry",
    "auth.token_revoked": "the bearer token was revoked",
    "enrolment.unknown": "the enrolment code is malformed or was never issued",
    "enrolment.used": "the enrolment code was already redeemed, or a newer one voided it",
    "enrolment.expired": "the enrolment code is past its expiry",
    "enrolment.holder_token": "a code issued by an admin account gives a token only for one its "
    "holder made (token_sha256) and a second administrator approved",
    "enrolment.token_hash": "token_sha256 is not a SHA-256 in hex, or that token is in use",
    "enrolment.same_admin": "the administrator who issued an enrolment code cannot approve it: "
    "a second administrator must (dual control)",
    "enrolment.not_pending": "the enrolment is not waiting for approval (not redeemed, already "
    "approved, or a host console's code)",
    "enrolment.fingerprint": "the fingerprint given is not that of the token the code was "
    "redeemed with",
    "account.unknown": "the acting account does not exist",
    "account.disabled": "the acting account is disabled",
    "role.not_permitted": "no Casbin policy line lets this role perform the action",
    "domain.outside": "the role may do this, but not in this domain (another bureau's)",
    "owner.mismatch": "an operator may read only its own jobs, results, receipts and usage",
    "token.not_own": "a token is issued only to its own account (asked for with a token it "
    "holds, or by redeeming an enrolment code): nobody, the admin included, gets another's",
    "licence.missing": "the operator has no licence on record",
    "licence.expired": "the operator's licence is past its validity",
    "licence.suspended": "the operator's licence is suspended",
    "licence.withdrawn": "the operator's licence is withdrawn (退出)",
    "operator.frozen": "the operator is frozen by an emergency action (应急处置)",
    # what
    "dataset.unknown": "the dataset is not registered",
    "dataset.frozen": "the dataset is frozen by an emergency action (应急处置)",
    "grant.unknown": "no grant has this id",
    "grant.not_own": "the grant belongs to another operator",
    "grant.missing": "the operator holds no grant on a dataset the query touches",
    "grant.purpose_mismatch": "no grant on the dataset is for the stated purpose",
    "grant.revoked": "the grant was revoked",
    "grant.suspended": "the grant is suspended",
    "grant.not_yet_valid": "the grant's validity has not started",
    "grant.expired": "the grant's validity has ended",
    "column.unknown": "a column the query touches is not in the dataset",
    "column.l4": "an L4 (core) column never leaves in any form",
    "column.above_ceiling": "a column is above the grant's ceiling level",
    "column.not_listed": "a column is not in the grant's explicit column list",
    "column.not_groupable": "a quasi or sensitive column is grouped without the grant allowing it",
    "budget.per_query": "the requested epsilon exceeds the grant's per-query epsilon",
    "quota.queries_per_day": "the grant's queries-per-day quota is used up",
    "quota.rows_per_day": "scanning this dataset would exceed the grant's rows-per-day quota",
    "budget.exhausted": "the grant's privacy budget cannot pay for this query",
}
"""Every rule a decision can name, with its meaning."""

GRANT_RULE_ORDER: tuple[str, ...] = (
    "grant.revoked",
    "grant.suspended",
    "grant.not_yet_valid",
    "grant.expired",
    "column.unknown",
    "column.l4",
    "column.above_ceiling",
    "column.not_listed",
    "column.not_groupable",
    "budget.per_query",
    "quota.queries_per_day",
    "quota.rows_per_day",
    "budget.exhausted",
)
"""Per-grant rules in checking order: among several failing grants, the one that got
furthest names the reason (it is the most specific thing to fix)."""

_ERROR_OF_RULE: Mapping[str, type[SandboxError]] = {
    "dataset.unknown": NotFound,
    "grant.unknown": NotFound,
    "quota.queries_per_day": QuotaExceeded,
    "quota.rows_per_day": QuotaExceeded,
    "budget.exhausted": BudgetExhausted,
    "budget.per_query": BudgetExhausted,
}


_NO_DATASET = ("dataset.unknown", "{datasets} does not exist or is not granted to you")
_NO_GRANT = ("grant.unknown", "no grant {id}")
WITHHELD: Mapping[tuple[str, str], tuple[str, str]] = {
    ("query", "dataset.unknown"): _NO_DATASET,
    ("query", "grant.missing"): _NO_DATASET,
    ("grant", "grant.unknown"): _NO_GRANT,
    ("grant", "grant.not_own"): _NO_GRANT,
    ("grant", "domain.outside"): _NO_GRANT,
}
"""(target kind, rule) -> (rule, message) the caller sees instead: "does not exist" and
"not yours" answer alike (404 ``not_found``), so neither tells whether another
operator's grant or a dataset one holds no grant on exists.  The audit records the
real rule; :meth:`Decision.error` returns a :class:`~sandbox.core.errors.Withheld`."""


@dataclass(frozen=True)
class Target:
    """What an action applies to: ``platform``, or ``kind:id`` (``dataset:health.claims``)."""

    kind: TargetKind
    id: str = ""

    @classmethod
    def parse(cls, text: str | Target | None) -> Target:
        if isinstance(text, Target):
            return text
        if text is None or text == "platform":
            return cls(TargetKind.PLATFORM)
        kind, sep, ident = text.partition(":")
        try:
            target_kind = TargetKind(kind)
        except ValueError:
            target_kind = None
        if not sep or not ident or target_kind is None:
            raise ValueError("target is 'platform' or 'KIND:ID'")
        return cls(target_kind, ident)

    @classmethod
    def dataset(cls, dataset_id: str) -> Target:
        return cls(TargetKind.DATASET, dataset_id)

    @classmethod
    def grant(cls, grant_id: str) -> Target:
        return cls(TargetKind.GRANT, grant_id)

    @classmethod
    def account(cls, name: str) -> Target:
        return cls(TargetKind.ACCOUNT, name)

    @classmethod
    def domain(cls, name: str) -> Target:
        return cls(TargetKind.DOMAIN, name)

    @classmethod
    def token(cls, token_id: str) -> Target:
        return cls(TargetKind.TOKEN, token_id)

    @classmethod
    def platform(cls) -> Target:
        return cls(TargetKind.PLATFORM)

    def __str__(self) -> str:
        return self.kind.value if self.kind is TargetKind.PLATFORM else f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class DailyUsage:
    """A grant's use so far today (UTC day)."""

    queries: int = 0
    rows_scanned: int = 0


@dataclass(frozen=True)
class BudgetState:
    """A grant's privacy budget: total, per-query cap, spent and remaining epsilon."""

    total: float
    per_query: float | None
    spent: float

    @property
    def remaining(self) -> float:
        return max(0.0, self.total - self.spent)


@dataclass(frozen=True)
class Decision:
    """Allow or deny, the rule that decided, and (for queries) the grant per dataset."""

    allowed: bool
    rule: str
    reason: str
    actor: str
    action: str
    target: str
    grants: tuple[Grant, ...] = ()
    policy: str | None = None
    datasets: tuple[str, ...] = ()
    budgets: Mapping[str, BudgetState] = field(default_factory=dict)
    usage: Mapping[str, DailyUsage] = field(default_factory=dict)
    dataset_rows: Mapping[str, int] = field(default_factory=dict)
    #: Datasets whose important data (重要数据) the query reads: every release is held for
    #: the owning bureau's review, whatever the grant's mode (set by the query service).
    held_for: tuple[str, ...] = ()

    def amend(self, **changes: Any) -> Decision:
        """A copy with ``changes``: :func:`dataclasses.replace` without its per-field
        introspection, which would be a fifth of a cached decision's cost.  Valid while
        every field is an ``__init__`` field and nothing is derived in ``__post_init__``
        (``tests/policies/test_probe.py`` compares the two)."""
        assert _DECISION_FIELDS.issuperset(changes), sorted(changes)
        copy = object.__new__(Decision)
        copy.__dict__.update(self.__dict__, **changes)
        return copy

    @property
    def grant(self) -> Grant | None:
        """The grant used, for a single-dataset query."""
        return self.grants[0] if self.grants else None

    def grant_for(self, dataset_id: str) -> Grant:
        for grant in self.grants:
            if grant.dataset == dataset_id:
                return grant
        raise KeyError(dataset_id)

    @property
    def review_required(self) -> bool:
        return bool(self.held_for) or any(g.review_required for g in self.grants)

    @property
    def review_datasets(self) -> list[str]:
        """The datasets whose owning bureaus review a held release."""
        return sorted({*(g.dataset for g in self.grants if g.review_required), *self.held_for})

    @property
    def k(self) -> int | None:
        """The minimum group size that applies: the largest k of the grants used."""
        return max((g.k for g in self.grants), default=None)

    def error(self) -> SandboxError:
        """The error the caller sees: the rule's, or not-found when the rule would tell it
        that a dataset or grant of someone else exists (:data:`WITHHELD`)."""
        kind, _, ident = self.target.partition(":")
        shown = WITHHELD.get((kind, self.rule))
        if shown is not None:
            rule, template = shown
            return Withheld(
                template.format(id=ident, datasets="dataset " + " or ".join(self.datasets)),
                rule=rule,
                actual_rule=self.rule,
                actual_reason=self.reason,
            )
        cls = _ERROR_OF_RULE.get(self.rule, Forbidden)
        return cls(self.reason, rule=self.rule)

    def raise_for_denial(self) -> Decision:
        if not self.allowed:
            raise self.error()
        return self

    def audit_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"reason": self.reason}
        if self.policy:
            details["policy"] = self.policy
        if self.grants:
            details["grants"] = [{"id": g.id, "version": g.version} for g in self.grants]
        return details


_DECISION_FIELDS = frozenset(f.name for f in fields(Decision))
