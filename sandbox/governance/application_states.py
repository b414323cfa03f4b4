"""A grant application (数据授权申请) as one pure function.

An operator applies for a grant on a catalogued dataset; the owning bureau approves it
as asked (the grant is issued), approves it amended (the grant is issued with the
bureau's terms, the differences recorded), or rejects it; the operator may withdraw
it while it waits.  A rejection or an amendment needs a reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from policies.actors import Role
from sandbox.core.errors import Conflict, Forbidden, InvalidInput

__all__ = ["APP_TRANSITIONS", "AppState", "AppStep", "AppTransition", "advance_application"]


class AppState(enum.StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    AMENDED = "amended"  # approved with terms the bureau changed
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class AppStep(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    WITHDRAW = "withdraw"


@dataclass(frozen=True)
class AppTransition:
    role: Role
    target: AppState
    reason_required: bool


APP_TRANSITIONS: dict[AppStep, AppTransition] = {
    AppStep.APPROVE: AppTransition(Role.BUREAU, AppState.APPROVED, reason_required=False),
    AppStep.REJECT: AppTransition(Role.BUREAU, AppState.REJECTED, reason_required=True),
    AppStep.WITHDRAW: AppTransition(Role.OPERATOR, AppState.WITHDRAWN, reason_required=False),
}
"""Who may make each step; every step leaves ``submitted`` (docs/governance.md)."""


def advance_application(
    state: AppState,
    step: AppStep,
    role: Role,
    *,
    own: bool,
    amended: bool = False,
    reason: str = "",
) -> AppState:
    """The state ``step`` leads to, or the refusal naming its rule.

    ``own``: the actor is the bureau holding the dataset's domain (approve, reject) or
    the applying operator (withdraw).  ``amended``: the approval changes the asked terms.
    Order: ``application.role``, ``application.domain`` (or ``application.not_own``),
    ``application.state``, ``application.reason``.
    """
    rule = APP_TRANSITIONS[step]
    if role is not rule.role:
        raise Forbidden(
            f"only the {'owning bureau' if rule.role is Role.BUREAU else 'applying operator'} "
            f"may {step.value} a grant application",
            rule="application.role",
        )
    if not own:
        if rule.role is Role.BUREAU:
            raise Forbidden(
                f"the dataset belongs to another bureau: it may not {step.value} this application",
                rule="application.domain",
            )
        raise Forbidden(
            "only the operator who applied may withdraw this application",
            rule="application.not_own",
        )
    if state is not AppState.SUBMITTED:
        raise Conflict(
            f"the application is already {state.value}: only a submitted one can change",
            rule="application.state",
        )
    needs_reason = rule.reason_required or (step is AppStep.APPROVE and amended)
    if needs_reason and not reason.strip():
        what = "an amendment" if step is AppStep.APPROVE else f"a {step.value}ion"
        raise InvalidInput(
            f"{what} needs a reason the operator can read", rule="application.reason"
        )
    if step is AppStep.APPROVE and amended:
        return AppState.AMENDED
    return rule.target
