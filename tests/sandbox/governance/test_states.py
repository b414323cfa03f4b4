"""The procedures' state machines, one step per line of the case files (cases/*.csv)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.actors import Role
from sandbox.core.errors import Conflict, Forbidden, InvalidInput, SandboxError
from sandbox.governance.application_states import (
    APP_TRANSITIONS,
    AppState,
    AppStep,
    advance_application,
)
from sandbox.governance.registration_states import (
    TRANSITIONS,
    Facts,
    RegState,
    RegStep,
    advance,
)

CASES = Path(__file__).parent / "cases"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def rows(name: str) -> list[list[str]]:
    text = (CASES / name).read_text("utf-8").splitlines()
    return [r for r in csv.reader(text) if r and not r[0].startswith("#")]


def _until(when: str) -> datetime | None:
    return {"none": None, "before": NOW + timedelta(days=1), "after": NOW - timedelta(seconds=1)}[
        when
    ]


@pytest.mark.parametrize("case", rows("registration_steps.csv"), ids=lambda c: "-".join(c[:3]))
def test_registration_step(case: list[str]) -> None:
    state, step, role, own, short, when, objections, expected = case
    facts = Facts(
        now=NOW,
        own_domain=own == "yes",
        short_form=short == "yes",
        publicity_until=_until(when),
        open_objections=int(objections),
    )
    run = lambda: advance(RegState(state), RegStep(step), Role(role), facts)  # noqa: E731
    if "." in expected:
        with pytest.raises(SandboxError) as refused:
            run()
        assert refused.value.rule == expected
        assert isinstance(
            refused.value, Forbidden if expected.endswith(("role", "domain")) else Conflict
        )
    else:
        assert run() is RegState(expected)


@pytest.mark.parametrize("case", rows("application_steps.csv"), ids=lambda c: "-".join(c[:3]))
def test_application_step(case: list[str]) -> None:
    state, step, role, own, amended, reason, expected = case
    run = lambda: advance_application(  # noqa: E731
        AppState(state),
        AppStep(step),
        Role(role),
        own=own == "yes",
        amended=amended == "yes",
        reason=reason,
    )
    if "." in expected:
        with pytest.raises(SandboxError) as refused:
            run()
        assert refused.value.rule == expected
        kinds = {"state": Conflict, "reason": InvalidInput}
        assert isinstance(refused.value, kinds.get(expected.split(".")[1], Forbidden))
    else:
        assert run() is AppState(expected)


def test_every_step_has_cases() -> None:
    steps = {r[1] for r in rows("registration_steps.csv")}
    assert steps == {s.value for s in TRANSITIONS}
    assert {r[1] for r in rows("application_steps.csv")} == {s.value for s in APP_TRANSITIONS}


@given(
    state=st.sampled_from(RegState),
    step=st.sampled_from(RegStep),
    role=st.sampled_from(Role),
    own=st.booleans(),
    short=st.booleans(),
    offset=st.integers(-10, 10),
    objections=st.integers(0, 3),
)
def test_closed_by_construction(
    state: RegState, step: RegStep, role: Role, own: bool, short: bool, offset: int, objections: int
) -> None:
    """Any step either lands where the table says, or is refused with a named rule; nothing
    leaves a final state, nobody but the admin issues, and no certificate is issued while
    publicity runs or an objection is open."""
    facts = Facts(
        now=NOW,
        own_domain=own,
        short_form=short,
        publicity_until=NOW + timedelta(hours=offset),
        open_objections=objections,
    )
    try:
        after = advance(state, step, role, facts)
    except SandboxError as refused:
        assert refused.rule and refused.rule.startswith("registration.")
        return
    assert state not in (RegState.ISSUED, RegState.REJECTED, RegState.WITHDRAWN)
    assert role in TRANSITIONS[step].roles
    if after is RegState.ISSUED:
        assert role is Role.ADMIN
        if state is RegState.PUBLICITY:
            assert offset <= 0 and objections == 0
