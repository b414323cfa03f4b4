"""A generalisation declared ``exact_only`` binds exact releases, not noised ones.

``generalize = { band = 10, exact_only = true }``: a grant without a budget (every
release reviewed) still reads ``age`` in bands of 10 in every clause; under a privacy
budget the column is used at full detail (``WHERE age > 37``, ``GROUP BY age``), where
the noise protects each person.  The plan cache keeps the two readings apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from policies import Actor
from sandbox.core.access import budgeted_spec
from sandbox.core.classification import ClassificationError, parse_classification
from sandbox.core.generalization import Generalization
from sandbox.query.service import QueryService
from sandbox.reclassify import reclassify
from tests.conftest import build_deployment

DEMO = Path(__file__).parents[3] / "sandbox" / "enclave" / "demo" / "health.claims.toml"
EXACT_ONLY = DEMO.read_text("utf-8").replace(
    "generalize = { band = 10 }", "generalize = { band = 10, exact_only = true }"
)


def test_it_parses_and_round_trips() -> None:
    spec = parse_classification(EXACT_ONLY)
    age = spec.column("age")
    assert age.generalize == Generalization("band", width=10, exact_only=True)
    assert age.generalize.to_dict() == {"band": 10, "exact_only": True}
    assert age.generalize.describe() == "bands of 10 (exact releases only)"
    assert parse_classification(DEMO.read_text("utf-8")).column("age").generalize == (
        Generalization("band", width=10)
    )
    # stripped under a budget only: the other columns, and the spec without it, unchanged
    assert budgeted_spec(spec).column("age").generalize is None
    plain = parse_classification(DEMO.read_text("utf-8"))
    assert budgeted_spec(plain) is plain


@pytest.mark.parametrize(
    "value",
    ["{ exact_only = true }", '{ band = 10, exact_only = "yes" }', "{ band = 10, other = 1 }"],
)
def test_malformed_declarations_are_refused(value: str) -> None:
    text = EXACT_ONLY.replace("{ band = 10, exact_only = true }", value)
    with pytest.raises(ClassificationError) as info:
        parse_classification(text)
    assert "generalize" in str(info.value)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Any:
    platform, tokens = build_deployment(tmp_path_factory.mktemp("exact_only") / "home")
    reclassify(platform, parse_classification(EXACT_ONLY), Actor.host("test"))
    yield platform, tokens
    platform.close()


CUT = "SELECT count(*) AS n FROM health.claims WHERE age > 37"
BY_AGE = "SELECT age, count(*) AS n FROM health.claims GROUP BY age"


def test_under_a_budget_the_column_is_used_at_full_detail(deployment: Any) -> None:
    platform, tokens = deployment
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])  # a dp grant
    bank = platform.authority.authenticate(tokens["op-bank"])  # reviewed
    # reviewed first, then dp, then reviewed again: one service, one plan cache
    assert service.explain(bank, CUT)["rule"] == "guard.generalisation"
    assert service.explain(insurer, CUT)["accepted"]
    assert service.explain(bank, CUT)["rule"] == "guard.generalisation"
    ages = [row["age"] for row in service.run_job(insurer, BY_AGE).table.to_pylist()]
    # Bands of 10 over ages 18..90 give at most 8 groups.  Which single years pass the
    # noisy threshold depends on the deployment's noise (about 20 of them here), so the
    # bound sits well below that and well above the banded count.
    assert len(ages) > 10 and any(age % 10 for age in ages)  # single years, not bands
    held = service.run_job(bank, BY_AGE)  # reviewed: banded, and held
    assert {row["age"] % 10 for row in held.table.to_pylist()} == {0}
