"""The decision itself, as pure functions over facts already loaded (no I/O).

:func:`evaluate` runs the rule chain in a fixed order and stops at the first
denial (deny by default: an outcome is an allow only when the last rule
passed).  For a query it returns, per dataset, the grants that pass every
*static* rule (status, validity, columns); :func:`finish` then applies the
*dynamic* rules (today's quotas, remaining budget), which change with every
query and are therefore read fresh while the static outcome is cached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sandbox.core.classification import Level, Role
from sandbox.core.product_tables import PRODUCT_PURPOSE_PREFIX

from .actors import Account, AccountStatus, Actor, LicenceStatus
from .actors import Role as AccountRole
from .decision import (
    ACTIONS,
    GRANT_RULE_ORDER,
    RULES,
    BudgetState,
    DailyUsage,
    Decision,
    Target,
    TargetKind,
)
from .grant_terms import Grant, GrantStatus, epsilon_to_micro

__all__ = ["DatasetFacts", "Facts", "Outcome", "Permit", "Request", "evaluate", "finish"]

Permit = Callable[[str, str, str, str], "tuple[bool, str | None]"]
"""Casbin check: (subject, domain, object, action) -> (allowed, matched policy line)."""

PLATFORM = "platform"


@dataclass(frozen=True)
class DatasetFacts:
    id: str
    domain: str
    frozen: bool
    row_count: int
    columns: Mapping[str, tuple[Level, Role]]  # lower-case name -> (level, role)


@dataclass(frozen=True)
class Request:
    actor: Actor
    action: str
    target: Target
    datasets: tuple[str, ...] = ()
    columns: Mapping[str, frozenset[str]] = field(default_factory=dict)
    group_by: Mapping[str, frozenset[str]] = field(default_factory=dict)
    purpose: str | None = None
    epsilon: float | None = None
    #: Charged when it ran (a held result released after review): its quotas and
    #: budget were checked and spent then, so the dynamic rules do not apply again.
    paid: bool = False


@dataclass(frozen=True)
class Facts:
    account: Account | None
    datasets: Mapping[str, DatasetFacts] = field(default_factory=dict)
    grants: Mapping[str, Sequence[Grant]] = field(default_factory=dict)  # query: by dataset
    target_grant: Grant | None = None


@dataclass(frozen=True)
class Outcome:
    """A static decision, the per-dataset candidate grants, and the time window it holds for."""

    decision: Decision
    candidates: tuple[tuple[str, tuple[Grant, ...]], ...] = ()
    rows: Mapping[str, int] = field(default_factory=dict)
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def holds_at(self, now: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= now) and (
            self.valid_until is None or now < self.valid_until
        )


class _Deny(Exception):
    def __init__(self, rule: str, reason: str) -> None:
        assert rule in RULES, rule
        super().__init__(reason)
        self.rule, self.reason = rule, reason


def evaluate(request: Request, facts: Facts, permit: Permit, now: datetime) -> Outcome:
    """Run the static rule chain; the first failing rule decides."""
    bounds: list[datetime] = []
    policy: str | None = None

    def decide(allowed: bool, rule: str, reason: str, grants: tuple[Grant, ...] = ()) -> Decision:
        return Decision(
            allowed=allowed,
            rule=rule,
            reason=reason,
            actor=request.actor.name,
            action=request.action,
            target=str(request.target),
            grants=grants,
            policy=policy,
            datasets=request.datasets,
        )

    try:
        account = _check_actor(request, facts)
        if request.action == "token.issue":
            _check_own_token(request)
            decision = decide(True, "allow.own", "an account may ask for a token of its own")
            return _window(Outcome(decision), bounds, now)
        domains = _domains(request, facts)
        for domain in domains:
            policy = _check_role(request, account, domain, permit)
        _check_dataset_target(request, facts)
        _check_owner(request, facts)
        if request.action != "dataset.query":
            decision = decide(True, "allow.role", "the role's policy allows it")
            return _window(Outcome(decision), bounds, now)
        assert account is not None  # operators are accounts, never the host console
        _check_licence(account, now, bounds)
        if account.frozen:
            raise _Deny("operator.frozen", "the operator is frozen (emergency action)")
        candidates = _check_datasets(request, facts, now, bounds)
    except _Deny as deny:
        return _window(Outcome(decide(False, deny.rule, deny.reason)), bounds, now)
    chosen = tuple(grants[0] for _, grants in candidates)
    rows = {ds: facts.datasets[ds].row_count for ds in request.datasets}
    decision = replace(
        decide(True, "allow.grant", "live grants cover the query", chosen), dataset_rows=rows
    )
    return _window(Outcome(decision, candidates, rows), bounds, now)


def finish(
    outcome: Outcome,
    request: Request,
    usage: Mapping[str, DailyUsage],
    spent: Mapping[str, int],
) -> Decision:
    """Apply the dynamic rules (quotas, budget) to a static outcome; picks one grant per dataset."""
    static = outcome.decision
    if not static.allowed or not outcome.candidates:
        return static
    chosen: list[Grant] = []
    for dataset, grants in outcome.candidates:
        failures: list[_Deny] = []
        for grant in grants:
            try:
                if not request.paid:
                    _check_dynamic(grant, outcome.rows[dataset], usage, spent, request.epsilon)
            except _Deny as deny:
                failures.append(deny)
                continue
            chosen.append(grant)
            break
        else:
            worst = _furthest(failures)
            return static.amend(allowed=False, rule=worst.rule, reason=worst.reason, grants=())
    budgets = {
        g.id: BudgetState(
            total=g.epsilon_total, per_query=g.epsilon_per_query, spent=spent.get(g.id, 0) / 1e6
        )
        for g in chosen
        if g.epsilon_total is not None
    }
    used = {g.id: usage.get(g.id, DailyUsage()) for g in chosen}
    return static.amend(
        grants=tuple(chosen), budgets=budgets, usage=used, dataset_rows=outcome.rows
    )


# -- the chain ---------------------------------------------------------------------------


def _check_actor(request: Request, facts: Facts) -> Account | None:
    if request.action not in ACTIONS:
        raise _Deny("action.unknown", f"unknown action '{request.action}'")
    if request.target.kind not in ACTIONS[request.action]:
        kinds = ", ".join(sorted(k.value for k in ACTIONS[request.action]))
        raise _Deny("target.invalid", f"{request.action} applies to: {kinds}")
    if request.action == "dataset.query" and not request.datasets:
        raise _Deny("query.no_datasets", "a query must name the datasets it touches")
    if request.actor.is_host:
        return None
    account = facts.account
    if account is None:
        raise _Deny("account.unknown", f"account '{request.actor.name}' does not exist")
    if account.status is not AccountStatus.ACTIVE:
        raise _Deny("account.disabled", f"account '{account.name}' is disabled")
    return account


def _domains(request: Request, facts: Facts) -> list[str]:
    kind, ident = request.target.kind, request.target.id
    if kind is TargetKind.QUERY:
        return sorted({ds.split(".", 1)[0] for ds in request.datasets})
    if kind is TargetKind.DOMAIN:
        return [ident]
    if kind is TargetKind.DATASET:
        domain, dot, table = ident.partition(".")
        if not dot or not table:
            raise _Deny("target.invalid", "a dataset target is 'domain.table'")
        return [domain]  # its role is checked first: whether it exists is no one else's business
    if kind is TargetKind.GRANT:
        if facts.target_grant is None:
            raise _Deny("grant.unknown", f"no grant {ident}")
        return [facts.target_grant.domain]
    return [PLATFORM]


def _check_role(request: Request, account: Account | None, domain: str, permit: Permit) -> str:
    obj, act = request.action.split(".", 1)
    allowed, line = permit(request.actor.subject, domain, obj, act)
    if allowed:
        return line or ""
    if account is not None and account.role is AccountRole.BUREAU:
        if any(permit(account.name, own, obj, act)[0] for own in account.domains):
            raise _Deny(
                "domain.outside", f"{request.action} in domain '{domain}' is outside its domains"
            )
    raise _Deny(
        "role.not_permitted", f"the {request.actor.role.value} role may not {request.action}"
    )


def _check_dataset_target(request: Request, facts: Facts) -> None:
    """A dataset target must be registered (except to register it), checked only once the
    role may act in its domain: an outsider learns the same either way."""
    target = request.target
    if target.kind is not TargetKind.DATASET or request.action == "dataset.register":
        return
    if target.id not in facts.datasets:
        raise _Deny("dataset.unknown", f"dataset {target.id} is not registered")


def _check_own_token(request: Request) -> None:
    """Tokens go only to their own account: no role (the admin's neither) gets another's."""
    actor = request.actor
    if actor.is_host or request.target.id != actor.name:
        raise _Deny(
            "token.not_own",
            "a token is issued only to its own account; another account enrols with a "
            "one-time code (enrolment.issue)",
        )


def _check_owner(request: Request, facts: Facts) -> None:
    if request.actor.role is not AccountRole.OPERATOR or request.actor.is_host:
        return
    target = request.target
    if target.kind is TargetKind.ACCOUNT and target.id != request.actor.name:
        raise _Deny("owner.mismatch", "an operator reads only its own records")
    grant = facts.target_grant
    if (
        target.kind is TargetKind.GRANT
        and grant is not None
        and grant.operator != request.actor.name
    ):
        raise _Deny("grant.not_own", f"grant {grant.id} belongs to another operator")


def _check_licence(account: Account, now: datetime, bounds: list[datetime]) -> None:
    licence = account.licence
    if licence is None:
        raise _Deny("licence.missing", "the operator has no licence on record")
    if licence.status is LicenceStatus.WITHDRAWN:
        raise _Deny("licence.withdrawn", "the operator's licence is withdrawn")
    if licence.status is LicenceStatus.SUSPENDED:
        raise _Deny("licence.suspended", "the operator's licence is suspended")
    bounds.append(licence.valid_until)
    if now >= licence.valid_until:
        raise _Deny("licence.expired", "the operator's licence has expired")


def _check_datasets(
    request: Request, facts: Facts, now: datetime, bounds: list[datetime]
) -> tuple[tuple[str, tuple[Grant, ...]], ...]:
    # Existence and a grant first, for every dataset: to an operator without a grant a
    # dataset it names is answered as unknown (Decision.error), whatever its state.
    for dataset in request.datasets:
        if dataset not in facts.datasets:
            raise _Deny("dataset.unknown", f"dataset {dataset} is not registered")
        if not facts.grants.get(dataset):
            raise _Deny("grant.missing", f"no grant on {dataset} for this operator")
    for dataset in request.datasets:
        if facts.datasets[dataset].frozen:
            raise _Deny("dataset.frozen", f"dataset {dataset} is frozen (emergency action)")
    out = []
    for dataset in request.datasets:
        grants = list(facts.grants.get(dataset, ()))
        if request.purpose is None or not request.purpose.startswith(PRODUCT_PURPOSE_PREFIX):
            # A data product's grant serves that product's queries only (the query
            # service checks a product purpose's SQL against the product's template).
            grants = [g for g in grants if not g.purpose_code.startswith(PRODUCT_PURPOSE_PREFIX)]
            if not grants:
                raise _Deny("grant.missing", f"no grant on {dataset} for this operator")
        if request.purpose is not None:
            grants = [g for g in grants if g.purpose_code == request.purpose]
            if not grants:
                raise _Deny("grant.purpose_mismatch", f"no grant on {dataset} for this purpose")
        passing: list[Grant] = []
        failures: list[_Deny] = []
        for grant in grants:
            bounds.extend((grant.valid_from, grant.valid_until))
            try:
                _check_grant(grant, facts.datasets[dataset], request, now)
            except _Deny as deny:
                failures.append(deny)
            else:
                passing.append(grant)
        if not passing:
            raise _furthest(failures)
        out.append((dataset, tuple(passing)))
    return tuple(out)


def _check_grant(grant: Grant, info: DatasetFacts, request: Request, now: datetime) -> None:
    if grant.status is GrantStatus.REVOKED:
        raise _Deny("grant.revoked", f"grant {grant.id} was revoked")
    if grant.status is GrantStatus.SUSPENDED:
        raise _Deny("grant.suspended", f"grant {grant.id} is suspended")
    if now < grant.valid_from:
        raise _Deny("grant.not_yet_valid", f"grant {grant.id} is not valid yet")
    if now >= grant.valid_until:
        raise _Deny("grant.expired", f"grant {grant.id} has expired")
    grouped = request.group_by.get(info.id, frozenset())
    for name in sorted(request.columns.get(info.id, frozenset()) | grouped):
        found = info.columns.get(name)
        if found is None:
            raise _Deny("column.unknown", f"column '{name}' is not in {info.id}")
        level, role = found
        if level is Level.L4:
            raise _Deny("column.l4", f"column '{name}' of {info.id} is L4 and never leaves")
        if level > grant.max_level:
            raise _Deny(
                "column.above_ceiling",
                f"column '{name}' ({level.name}) is above the ceiling {grant.max_level.name}",
            )
        if grant.columns is not None and name not in grant.columns:
            raise _Deny("column.not_listed", f"column '{name}' is not among the grant's columns")
        if name in grouped and role in (Role.QUASI, Role.SENSITIVE):
            if name not in grant.groupable:
                raise _Deny("column.not_groupable", f"grant does not allow grouping by '{name}'")
    per_query = grant.epsilon_per_query
    if request.epsilon is not None and per_query is not None and request.epsilon > per_query:
        raise _Deny("budget.per_query", f"epsilon above the per-query limit {per_query:g}")


def _check_dynamic(
    grant: Grant,
    rows: int,
    usage: Mapping[str, DailyUsage],
    spent: Mapping[str, int],
    epsilon: float | None,
) -> None:
    today = usage.get(grant.id, DailyUsage())
    if grant.queries_per_day is not None and today.queries >= grant.queries_per_day:
        raise _Deny("quota.queries_per_day", f"grant {grant.id}: daily query quota used up")
    if grant.rows_per_day is not None and today.rows_scanned + rows > grant.rows_per_day:
        raise _Deny("quota.rows_per_day", f"grant {grant.id}: daily rows-scanned quota reached")
    if grant.epsilon_total is not None:
        remaining = epsilon_to_micro(grant.epsilon_total) - spent.get(grant.id, 0)
        need = 1 if epsilon is None else max(1, epsilon_to_micro(epsilon))
        if remaining < need:
            raise _Deny("budget.exhausted", f"grant {grant.id}: privacy budget exhausted")


def _furthest(failures: Sequence[_Deny]) -> _Deny:
    return max(failures, key=lambda d: GRANT_RULE_ORDER.index(d.rule))


def _window(outcome: Outcome, bounds: Sequence[datetime], now: datetime) -> Outcome:
    past = [b for b in bounds if b <= now]
    future = [b for b in bounds if b > now]
    return replace(
        outcome,
        valid_from=max(past) if past else None,
        valid_until=min(future) if future else None,
    )
