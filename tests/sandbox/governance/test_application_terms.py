"""The grant an application and the bureau's decision make, and the amendments recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import ReleaseMode, Use
from policies.grant_terms import validate_terms
from sandbox.core.classification import Level, parse_classification
from sandbox.core.errors import InvalidInput
from sandbox.governance.application_terms import (
    AMENDABLE,
    Asked,
    Decided,
    amendments_of,
    grant_terms_for,
)

CLAIMS = parse_classification(
    (Path(__file__).parents[3] / "sandbox/enclave/demo/health.claims.toml").read_text("utf-8")
)
NOW = datetime(2026, 12, 1, tzinfo=UTC)
ASKED = Asked(
    dataset="health.claims",
    purpose_code="clinic-planning",
    purpose_text="claims per district",
    columns=("District", "claim_amount"),
    groupable=("diagnosis_code",),
    duration_days=30,
    use=Use.PUBLIC_INTEREST,
).to_dict()


def test_as_asked() -> None:
    terms = grant_terms_for(ASKED, Decided(price_per_query=500), NOW, CLAIMS, k_floor=10)
    assert terms.columns == frozenset({"district", "claim_amount"})
    assert terms.max_level is Level.L2  # the highest level among the asked columns
    assert terms.valid_until - terms.valid_from == timedelta(days=30)
    assert terms.release_mode is ReleaseMode.DP and terms.k == 10
    assert terms.tariff.price_per_query == 0  # public interest is free whatever is set
    assert amendments_of(ASKED, Decided(k=20, price_per_query=500)) == {}


def test_amended() -> None:
    decided = Decided(
        columns=("district",), use=Use.COMMERCIAL, price_per_query=500, duration_days=30
    )
    terms = grant_terms_for(ASKED, decided, NOW, CLAIMS, k_floor=10)
    assert terms.columns == frozenset({"district"}) and terms.max_level is Level.L1
    assert terms.tariff.use is Use.COMMERCIAL and terms.tariff.price_per_query == 500
    assert amendments_of(ASKED, decided) == {
        "columns": {"asked": ["claim_amount", "district"], "granted": ["district"]},
        "use": {"asked": "public_interest", "granted": "commercial"},
    }


def test_an_asked_l4_column_is_a_problem_of_the_grant_rules() -> None:
    asked = {**ASKED, "columns": ["district", "id_number"]}
    terms = grant_terms_for(asked, Decided(), NOW, CLAIMS, k_floor=10)
    with pytest.raises(InvalidInput) as refused:
        validate_terms(terms, CLAIMS, k_floor=10)
    assert refused.value.rule == "grant.terms" and "L4" in refused.value.message


@given(
    columns=st.none() | st.lists(st.sampled_from(["district", "age", "gender"]), min_size=1),
    days=st.none() | st.integers(1, 3660),
    use=st.none() | st.sampled_from(Use),
    mode=st.none() | st.sampled_from(ReleaseMode),
)
def test_an_amendment_is_recorded_exactly_when_the_grant_differs_from_the_ask(
    columns: list[str] | None, days: int | None, use: Use | None, mode: ReleaseMode | None
) -> None:
    decided = Decided(
        columns=None if columns is None else tuple(columns),
        duration_days=days,
        use=use,
        release_mode=mode,
    )
    asked_terms = grant_terms_for(ASKED, Decided(), NOW, CLAIMS, k_floor=10)
    granted = grant_terms_for(ASKED, decided, NOW, CLAIMS, k_floor=10)
    changed = amendments_of(ASKED, decided)
    assert set(changed) <= set(AMENDABLE)
    assert ("columns" in changed) == (granted.columns != asked_terms.columns)
    assert ("duration_days" in changed) == (granted.valid_until != asked_terms.valid_until)
    assert ("use" in changed) == (granted.tariff.use != asked_terms.tariff.use)
    # The ask left the mode to the bureau: its choice is no amendment.
    assert "release_mode" not in changed
    asked_dp = {**ASKED, "release_mode": "dp"}
    assert ("release_mode" in amendments_of(asked_dp, decided)) == (mode is ReleaseMode.REVIEWED)
