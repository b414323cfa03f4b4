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

__all__ = ["Clock", "audited", "new_id", "record_allow", "sees_everything", "system_clock"]

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
    base = {**(details or {}), **actor.audit_details()}
    try:
        yield
    except SandboxError as exc:
        rule, reason = getattr(exc, "audited", (exc.rule or exc.code, exc.message))
        platform.record(
            actor=actor.name,
            role=actor.role.value,
            action=action,
            target=target,
            decision="deny",
            rule=rule,
            dataset=dataset,
            request_id=actor.request_id,
            client=actor.client,
            details={**base, "reason": reason},
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
    platform.record(
        actor=actor.name,
        role=actor.role.value,
        action=action,
        target=target,
        decision="allow",
        rule=rule,
        dataset=dataset,
        request_id=actor.request_id,
        client=actor.client,
        details={**(details or {}), **actor.audit_details()},
    )


def sees_everything(actor: Actor) -> bool:
    """Admins and auditors see every application; bureaus their domains'; operators theirs."""
    return actor.role in (Role.ADMIN, Role.AUDITOR)
