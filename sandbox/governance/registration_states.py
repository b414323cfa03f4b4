"""The registration procedure (申请、受理、审查、公示、凭证发放) as one pure function.

A bureau applies; the admin accepts (受理) or refuses it, then reviews it (审查) with a
comment; an approved application is listed publicly (公示) for the publicity period,
during which anyone with an account may object and the admin must resolve every
objection; only then is the certificate issued (凭证发放).  A new version of a dataset
whose classification is unchanged takes the short form: accept, review, issue, with no
publicity (nothing the public was shown changes).

:func:`advance` says which state a step leads to, or raises the refusal that names its
rule: who may make each step (:data:`TRANSITIONS`), from which states, and the
time and objection conditions.  No I/O: the caller passes the facts it read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from policies.actors import Role
from sandbox.core.errors import Conflict, Forbidden

__all__ = [
    "TRANSITIONS",
    "Facts",
    "RegState",
    "RegStep",
    "Transition",
    "advance",
]


class RegState(enum.StrEnum):
    APPLIED = "applied"  # 申请: waiting for acceptance
    ACCEPTED = "accepted"  # 受理: waiting for review
    PUBLICITY = "publicity"  # 公示: listed publicly, objections may be filed
    REVIEWED = "reviewed"  # short form: reviewed, no publicity needed
    ISSUED = "issued"  # 凭证发放: loaded, certified
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class RegStep(enum.StrEnum):
    ACCEPT = "accept"
    REFUSE = "refuse"  # 不予受理
    APPROVE = "approve"  # review passed
    REJECT = "reject"  # review failed
    OBJECT = "object"
    UPHOLD = "uphold"  # an objection upheld: the application is rejected
    DISMISS = "dismiss"  # an objection dismissed: publicity goes on
    ISSUE = "issue"
    WITHDRAW = "withdraw"


@dataclass(frozen=True)
class Transition:
    roles: frozenset[Role]
    sources: frozenset[RegState]
    target: RegState
    own_domain: bool = False
    """Only a bureau holding the application's domain may make it."""


_S = RegState
_ADMIN = frozenset({Role.ADMIN})
_OPEN = frozenset({_S.APPLIED, _S.ACCEPTED, _S.PUBLICITY, _S.REVIEWED})

TRANSITIONS: dict[RegStep, Transition] = {
    RegStep.ACCEPT: Transition(_ADMIN, frozenset({_S.APPLIED}), _S.ACCEPTED),
    RegStep.REFUSE: Transition(_ADMIN, frozenset({_S.APPLIED}), _S.REJECTED),
    RegStep.APPROVE: Transition(_ADMIN, frozenset({_S.ACCEPTED}), _S.PUBLICITY),
    RegStep.REJECT: Transition(_ADMIN, frozenset({_S.ACCEPTED}), _S.REJECTED),
    RegStep.OBJECT: Transition(frozenset(Role), frozenset({_S.PUBLICITY}), _S.PUBLICITY),
    RegStep.UPHOLD: Transition(_ADMIN, frozenset({_S.PUBLICITY}), _S.REJECTED),
    RegStep.DISMISS: Transition(_ADMIN, frozenset({_S.PUBLICITY}), _S.PUBLICITY),
    RegStep.ISSUE: Transition(_ADMIN, frozenset({_S.PUBLICITY, _S.REVIEWED}), _S.ISSUED),
    RegStep.WITHDRAW: Transition(frozenset({Role.BUREAU}), _OPEN, _S.WITHDRAWN, own_domain=True),
}
"""Who may make each step, from which states, to which state (docs/governance.md)."""


@dataclass(frozen=True, kw_only=True)
class Facts:
    """What the step depends on besides the state, read by the caller."""

    now: datetime
    own_domain: bool = False
    """The actor is a bureau holding the application's domain."""
    short_form: bool = False
    """A new version with an unchanged classification: no publicity."""
    publicity_until: datetime | None = None
    open_objections: int = 0


def advance(state: RegState, step: RegStep, role: Role, facts: Facts) -> RegState:
    """The state ``step`` leads to from ``state``, or the refusal naming its rule.

    Checked in this order: the role (``registration.role``), the bureau's domain
    (``registration.domain``), the state (``registration.state``), then the step's own
    conditions (``registration.publicity_over``, ``registration.publicity_not_over``,
    ``registration.objection_unresolved``, ``registration.no_objection``).
    """
    rule = TRANSITIONS[step]
    if role not in rule.roles:
        who = " or ".join(sorted(r.value for r in rule.roles))
        raise Forbidden(
            f"only {who} may {step.value} a registration application", rule="registration.role"
        )
    if rule.own_domain and not facts.own_domain:
        raise Forbidden(
            f"only the applying bureau may {step.value} this application",
            rule="registration.domain",
        )
    if state not in rule.sources:
        raise Conflict(
            f"an application that is {state.value} cannot be {_done(step)}",
            rule="registration.state",
        )
    if step is RegStep.OBJECT:
        if facts.publicity_until is None or facts.now >= facts.publicity_until:
            raise Conflict(
                "the publicity period is over: objections are no longer accepted",
                rule="registration.publicity_over",
            )
    elif step in (RegStep.UPHOLD, RegStep.DISMISS):
        if facts.open_objections < 1:
            raise Conflict(
                "no objection is waiting to be resolved", rule="registration.no_objection"
            )
    elif step is RegStep.ISSUE and state is RegState.PUBLICITY:
        if facts.publicity_until is None or facts.now < facts.publicity_until:
            until = (
                "" if facts.publicity_until is None else f" (it ends {_at(facts.publicity_until)})"
            )
            raise Conflict(
                f"the publicity period is not over{until}: the certificate waits for it",
                rule="registration.publicity_not_over",
            )
        if facts.open_objections:
            raise Conflict(
                f"{facts.open_objections} objection(s) filed during publicity are unresolved",
                rule="registration.objection_unresolved",
            )
    elif step is RegStep.APPROVE and facts.short_form:
        return RegState.REVIEWED
    return rule.target


def _done(step: RegStep) -> str:
    return {
        RegStep.ACCEPT: "accepted",
        RegStep.REFUSE: "refused",
        RegStep.APPROVE: "approved",
        RegStep.REJECT: "rejected",
        RegStep.OBJECT: "objected to",
        RegStep.UPHOLD: "resolved",
        RegStep.DISMISS: "resolved",
        RegStep.ISSUE: "issued a certificate",
        RegStep.WITHDRAW: "withdrawn",
    }[step]


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
