"""Grant-time rules of the negative list and important data (pure), case by case."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from policies.grant_controls import check_grant_controls, limited_items
from policies.grant_terms import GrantTerms, ReleaseMode
from sandbox.core.classification import Level
from sandbox.core.data_controls import WHOLE, DatasetControls
from sandbox.core.errors import Forbidden
from sandbox.enclave.demo_data import demo_spec

SPEC = demo_spec("health.claims")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TERMS = GrantTerms(
    purpose_code="research",
    purpose_text="claims research",
    valid_from=NOW,
    valid_until=NOW + timedelta(days=30),
    max_level=Level.L2,
    columns=frozenset({"age", "district"}),
    epsilon_total=1.0,
)


def rule_of(terms: GrantTerms, controls: DatasetControls, **kw: object) -> str | None:
    try:
        check_grant_controls(terms, SPEC, controls, **kw)  # type: ignore[arg-type]
    except Forbidden as exc:
        return exc.rule
    return None


@pytest.mark.parametrize(
    ("terms", "controls", "rule"),
    [
        (TERMS, DatasetControls(prohibited=frozenset({WHOLE})), "negative.prohibited"),
        (TERMS, DatasetControls(prohibited=frozenset({"age"})), "negative.prohibited"),
        (TERMS, DatasetControls(prohibited=frozenset({"claim_amount"})), None),
        # No column list: a prohibited column is not among what the grant gives.
        (replace(TERMS, columns=None), DatasetControls(prohibited=frozenset({"age"})), None),
        (
            replace(TERMS, groupable=frozenset({"gender"})),
            DatasetControls(prohibited=frozenset({"gender"})),
            "negative.prohibited",
        ),
        (TERMS, DatasetControls(limited=frozenset({"district"})), "negative.limited"),
        (TERMS, DatasetControls(limited=frozenset({WHOLE})), "negative.limited"),
        (replace(TERMS, columns=None), DatasetControls(limited=frozenset({"age"})), None),
        (TERMS, DatasetControls(important=frozenset({"age"})), None),
        (
            replace(TERMS, release_mode=ReleaseMode.REVIEWED),
            DatasetControls(important=frozenset({"age"})),
            "important.dp_only",
        ),
        # Reached through the ceiling (no column list), or not at all (above it).
        (
            replace(TERMS, columns=None, release_mode=ReleaseMode.REVIEWED),
            DatasetControls(important=frozenset({"age"})),
            "important.dp_only",
        ),
        (
            replace(TERMS, columns=None, release_mode=ReleaseMode.REVIEWED),
            DatasetControls(important=frozenset({"diagnosis_code"})),
            None,
        ),
    ],
)
def test_rule(terms: GrantTerms, controls: DatasetControls, rule: str | None) -> None:
    assert rule_of(terms, controls) == rule


def test_co_approval_covers_exactly_the_limited_items() -> None:
    controls = DatasetControls(limited=frozenset({WHOLE, "district"}))
    assert limited_items(TERMS, controls) == frozenset({WHOLE, "district"})
    assert rule_of(TERMS, controls, co_approved=frozenset({"district"})) == "negative.limited"
    assert rule_of(TERMS, controls, co_approved=frozenset({WHOLE, "district"})) is None
    # A narrowing checks prohibited items only; a release-mode choice not limited ones.
    assert rule_of(TERMS, controls, limited=False) is None
