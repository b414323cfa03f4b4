"""What both procedures share: the clock, ids, and the audit entry of each step.

Every step, allowed or refused, is one audit entry under the step's action
(``registration.accept``, ``grant.apply``, …) with the rule that decided; the entry
of a change is appended inside the change's transaction, so a change is never
committed without it (as in ``policies.admin``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from policies import Actor, Role
from sandbox.core.errors import SandboxError
from sandbox.platform import Platform

__all__ = [
    "Clock",
    "audited",
    "audited_read",
    "new_id",
    "record_allow",
    "sees_everything",
    "step_out",
    "system_clock",
]

Clock = Callable[[], datetime]
"""Injected everywhere a step depends on time (tests move it; nothing sleeps)."""


def system_clock() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@contextmanager
def audited(
    platform: Platform,
    actor: Actor,
    action: str,
    target: str,
    *,
    dataset: str | None = None,
    details: dict[str, Any] | None = None,
) -> Iterator[None]:
    """Record a refusal raised in the block (a :class:`SandboxError`) under ``action``
    with its rule, and re-raise it; the block writes its own allow entry
    (:func:`record_allow`) as the last act of its transaction."""
    try:
        yield
    except SandboxError as exc:
        rule, reason = getattr(exc, "audited", (exc.rule or exc.code, exc.message))
        platform.record_act(
            actor,
            action,
            target,
            "deny",
            rule,
            dataset=dataset,
            details={**(details or {}), "reason": reason},
        )
        raise


def record_allow(
    platform: Platform,
    actor: Actor,
    action: str,
    target: str,
    rule: str,
    *,
    dataset: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """The allow entry of a step (call it inside the step's transaction, last)."""
    platform.record_act(actor, action, target, "allow", rule, dataset=dataset, details=details)


def audited_read(
    platform: Platform,
    actor: Actor,
    kind: str,
    record_id: str | None,
    listing: Callable[[], list[dict[str, Any]]],
    one: Callable[[str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """What the API and the command line answer (one record of ``kind``, or the listing),
    the read recorded as ``<kind>.read`` with the number of rows (a refusal with its rule)."""
    action = f"{kind}.read"
    target = "platform" if record_id is None else f"{kind}:{record_id}"
    with audited(platform, actor, action, target):
        found = listing() if record_id is None else [one(record_id)]
        record_allow(platform, actor, action, target, "allow.read", details={"rows": len(found)})
    return found


def sees_everything(actor: Actor) -> bool:
    """Admins and auditors see every application; bureaus their domains'; operators theirs."""
    return actor.role in (Role.ADMIN, Role.AUDITOR)


def step_out(event: Any) -> dict[str, Any]:
    """What both procedures show of a step (a row of an ``*_events`` table): when, who,
    the step and the states it moved between; each adds its own columns."""
    return {
        "at": event.at,
        "actor": event.actor,
        "role": event.role,
        "step": event.step,
        "from": event.from_state,
        "to": event.to_state,
    }
