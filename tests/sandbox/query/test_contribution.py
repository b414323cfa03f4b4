"""C and G come from the data: each dataset's [contribution], narrowed by the grants."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import Administration
from sandbox.core.classification import Contribution, parse_classification
from sandbox.core.errors import InvalidInput
from sandbox.enclave.demo_data import demo_spec
from sandbox.query.contribution import effective_contribution
from sandbox.query.rewrite import ContributionBounds
from sandbox.query.service import QueryService
from tests.conftest import build_deployment

DEFAULT = ContributionBounds(max_rows_per_entity=2, max_groups_per_entity=3)
CLAIMS_BY_AGE = "SELECT floor(age / 10) * 10 AS band, count(*) AS n FROM health.claims GROUP BY 1"
JOIN = (
    "SELECT e.industry, sum(s.employees) AS employees FROM market.enterprises e "
    "JOIN hrss.social_insurance s ON e.credit_code = s.credit_code GROUP BY 1"
)


@dataclass(frozen=True)
class FakeGrant:
    """The three attributes effective_contribution reads of a grant."""

    dataset: str
    max_rows_per_entity: int | None = None
    max_groups_per_entity: int | None = None


def test_a_dataset_without_the_section_gets_the_platform_default() -> None:
    stored = demo_spec("health.claims").to_dict()
    del stored["contribution"]
    spec = parse_classification(stored)
    assert effective_contribution([], {"health.claims": spec}, DEFAULT) == Contribution(2, 3)


def test_the_declared_bounds_apply_and_a_grant_narrows_them() -> None:
    specs = {"health.claims": demo_spec("health.claims")}
    assert effective_contribution([], specs, DEFAULT) == Contribution(9, 4, 9)
    narrowing = FakeGrant("health.claims", max_rows_per_entity=2)
    assert effective_contribution([narrowing], specs, DEFAULT) == Contribution(2, 4, 9)
    wider = FakeGrant("health.claims", max_rows_per_entity=50, max_groups_per_entity=50)
    assert effective_contribution([wider], specs, DEFAULT) == Contribution(9, 4, 9)


def test_a_join_runs_under_the_strictest_of_its_datasets() -> None:
    specs = {d: demo_spec(d) for d in ("market.enterprises", "hrss.social_insurance")}
    assert effective_contribution([], specs, DEFAULT) == Contribution(1, 1)
    specs = {d: demo_spec(d) for d in ("health.claims", "transport.trips")}
    # T: the least any dataset declares (trips declares none).
    assert effective_contribution([], specs, DEFAULT) == Contribution(9, 4, 9)


@given(
    st.lists(st.tuples(st.integers(1, 50), st.integers(1, 50)), min_size=1, max_size=4),
    st.lists(st.tuples(st.none() | st.integers(1, 60), st.none() | st.integers(1, 60))),
)
def test_the_effective_bounds_never_exceed_any_declaration(
    declared: list[tuple[int, int]], narrowing: list[tuple[int | None, int | None]]
) -> None:
    base = demo_spec("market.enterprises").to_dict()
    specs = {
        f"d{i}": parse_classification(
            base | {"contribution": {"max_rows_per_entity": c, "max_groups_per_entity": g}}
        )
        for i, (c, g) in enumerate(declared)
    }
    grants = [FakeGrant("d0", c, g) for c, g in narrowing]
    got = effective_contribution(grants, specs, DEFAULT)
    rows = [c for c, _ in declared] + [c for c, _ in narrowing if c is not None]
    groups = [g for _, g in declared] + [g for _, g in narrowing if g is not None]
    assert got == Contribution(min(rows), min(groups))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    platform, tokens = build_deployment(tmp_path_factory.mktemp("contribution") / "home")
    yield platform, tokens
    platform.close()


def _explain(deployment, operator: str, sql: str) -> dict:
    platform, tokens = deployment
    answer = QueryService(platform).explain(platform.authority.authenticate(tokens[operator]), sql)
    assert answer["accepted"], answer
    return answer


def _grant(deployment, bureau: str, operator: str, dataset: str):
    platform, tokens = deployment
    admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
    actor = platform.authority.authenticate(tokens[bureau])
    (grant,) = [
        g for g in admin.list_grants(actor) if g.operator == operator and g.dataset == dataset
    ]
    return admin, actor, grant


def test_a_query_runs_under_its_datasets_bounds_and_a_narrowed_grant(deployment) -> None:
    """The bounds reach the rewrite: explain shows them and the plan caps by them."""
    answer = _explain(deployment, "op-insurer", CLAIMS_BY_AGE)
    # G = 2, not the dataset's 4: age declares two values per person (key_groups); T = 9
    # binds below C·G = 18.
    assert answer["contribution"] == {
        "max_rows_per_entity": 9,
        "max_groups_per_entity": 2,
        "max_total_rows_per_entity": 9,
    }
    admin, bureau, grant = _grant(deployment, "bureau-health", "op-insurer", "health.claims")
    with pytest.raises(InvalidInput) as info:  # a grant never widens the data's bounds
        admin.narrow_grant(bureau, grant.id, max_rows_per_entity=10, reason="wider")
    assert "can only narrow the dataset's" in info.value.message
    narrowed = admin.narrow_grant(bureau, grant.id, max_rows_per_entity=2, reason="one visit")
    assert narrowed.to_dict()["max_rows_per_entity"] == 2
    answer = _explain(deployment, "op-insurer", CLAIMS_BY_AGE)
    # C·G = 4 is below T: T no longer binds.
    assert answer["contribution"] == {
        "max_rows_per_entity": 2,
        "max_groups_per_entity": 2,
        "max_total_rows_per_entity": None,
    }
    with pytest.raises(InvalidInput) as info:  # and a narrowing is never undone
        admin.narrow_grant(bureau, grant.id, max_rows_per_entity=3, reason="back")
    assert "max_rows_per_entity raised or removed" in info.value.message
    platform, tokens = deployment
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    auth = QueryService(platform)._authorize(insurer, CLAIMS_BY_AGE, "rid-c", None, None)
    assert auth.prepared.plan.bounds == ContributionBounds(2, 2)


def test_a_join_explains_the_strictest_bounds(deployment) -> None:
    answer = _explain(deployment, "op-bank", JOIN)
    assert answer["contribution"] == {
        "max_rows_per_entity": 1,
        "max_groups_per_entity": 1,
        "max_total_rows_per_entity": None,
    }
