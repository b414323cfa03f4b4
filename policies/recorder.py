"""Where decisions and administrative acts are recorded: an injected audit recorder.

The authorization engine depends only on this protocol; the deployment wires
in :class:`audit.AuditTrail` (whose ``append`` has exactly these keywords), and
tests may use :class:`MemoryRecorder`.  A recorder that raises makes the act
fail (fail closed): nothing is decided or changed without its audit entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sandbox.core.errors import AuditUnavailable, SandboxError

if TYPE_CHECKING:
    from .actors import Actor
    from .decision import Decision

__all__ = [
    "AUDIT_ACTIONS",
    "FailureSink",
    "MemoryRecorder",
    "NullRecorder",
    "Recorder",
    "append_entry",
    "decision_entry",
]

AUDIT_ACTIONS: Mapping[str, str] = {
    "auth.authenticate": "a bearer token was refused (successful authentications are not "
    "recorded on their own: the decision that follows names the actor)",
    "<action>": "every decision of the decision API, under the action's own name "
    "(e.g. dataset.query, grant.read), allow or deny, with the rule that decided",
    "account.create": "an account was created (role, organisation, domains, licence)",
    "account.disable": "an account was disabled",
    "account.licence": "an operator's licence number, validity or status changed",
    "account.list": "the account list was read",
    "token.issue": "an account asked for a token of its own, with a token it holds (the new "
    "token's id and expiry; never the token)",
    "token.revoke": "a token was revoked",
    "enrolment.issue": "an admin issued a one-time enrolment code for an account (its id and "
    "expiry; never the code)",
    "enrolment.redeem": "an enrolment code was redeemed for a token of its account, or refused",
    "grant.issue": "a bureau issued a grant (full terms in details)",
    "grant.narrow": "a bureau narrowed a grant (new terms and version)",
    "grant.release_mode": "a bureau chose a grant's release mode (dp or reviewed; new terms "
    "and version), or the system migrated a grant stored before release modes existed "
    "(actor `system`, rule `grant.release_mode.migrated`)",
    "grant.suspend": "a bureau suspended a grant",
    "grant.resume": "a bureau resumed a suspended grant",
    "grant.revoke": "a bureau revoked a grant",
    "dataset.freeze": "an admin froze a dataset (emergency action)",
    "dataset.unfreeze": "an admin lifted a dataset freeze",
    "operator.freeze": "an admin froze an operator (emergency action)",
    "operator.unfreeze": "an admin lifted an operator freeze",
    "usage.read": "the usage ledger was read",
    "statement.read": "a monthly statement was produced",
}
"""Audit actions this package appends (documented in docs/policy.md; a test checks)."""


class Recorder(Protocol):
    """The slice of :class:`audit.AuditTrail` the authorization engine needs."""

    def append(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        target: str,
        decision: str,
        rule: str,
        request_id: str | None = None,
        client: str | None = None,
        dataset: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> object: ...


class FailureSink(Protocol):
    """Takes the audit fields of refusals nobody can be named for, to record them in bulk."""

    def add(self, fields: dict[str, Any]) -> None: ...


class NullRecorder:
    """Records nothing: for benchmarks of the decision engine alone."""

    def append(self, **fields: Any) -> None:
        return None


class MemoryRecorder:
    """Keeps entries in a list: for tests and for callers that batch entries themselves."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def append(self, **fields: Any) -> int:
        self.entries.append(dict(fields))
        return len(self.entries) - 1


def append_entry(recorder: Recorder, **fields: Any) -> object:
    """Append through ``recorder``; any failure becomes :class:`AuditUnavailable`."""
    try:
        return recorder.append(**fields)
    except SandboxError:
        raise
    except Exception as exc:
        raise AuditUnavailable(
            f"audit trail unavailable ({type(exc).__name__})", rule="audit.append"
        ) from None


def decision_entry(
    actor: Actor,
    decision: Decision,
    *,
    details: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    client: str | None = None,
) -> dict[str, Any]:
    """The audit fields of one decision: who (and with which token), what, allow/deny, the
    rule and why."""
    body = decision.audit_details()
    if decision.datasets:
        body["datasets"] = list(decision.datasets)
    body.update(details or {})
    body.update(actor.audit_details())
    return {
        "actor": actor.name,
        "role": actor.role.value,
        "action": decision.action,
        "target": decision.target,
        "decision": "allow" if decision.allowed else "deny",
        "rule": decision.rule,
        "request_id": request_id or actor.request_id,
        "client": client or actor.client,
        "dataset": decision.datasets[0] if len(decision.datasets) == 1 else None,
        "details": body,
    }
