"""Important data (重要数据) in the query service: noised only, every release held for the
owning bureau's review, never answered by a direct run."""

from __future__ import annotations

import pytest

from policies import Actor
from sandbox.core.data_controls import ItemKind
from sandbox.core.errors import QueryRefused
from sandbox.governance.data_lists import DataLists
from sandbox.query.service import Held, QueryService
from tests.conftest import build_deployment

SQL = "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):  # type: ignore[no-untyped-def]
    platform, tokens = build_deployment(tmp_path_factory.mktemp("important") / "home")
    yield platform, tokens
    platform.close()


def test_a_run_is_refused_and_a_job_is_held(deployment) -> None:  # type: ignore[no-untyped-def]
    platform, tokens = deployment
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])  # a dp grant
    assert service.run(insurer, SQL).meta["epsilon_spent"] > 0  # before: released at once
    DataLists(platform).add(Actor.host("test"), ItemKind.IMPORTANT, "health.claims.gender",
                            reason="test")  # fmt: skip
    with pytest.raises(QueryRefused) as info:
        service.run(insurer, SQL.replace("AS n", "AS m"))
    assert info.value.rule == "important.review"
    held = service.run_job(insurer, SQL.replace("AS n", "AS k"))
    assert isinstance(held, Held) and held.epsilon > 0
    assert held.meta["review_datasets"] == ["health.claims"]
    # A query that does not read the important column is released as before.
    other = "SELECT district, count(*) AS n FROM health.claims GROUP BY 1"
    assert service.run(insurer, other).meta["epsilon_spent"] > 0
    bank = platform.authority.authenticate(tokens["op-bank"])  # a reviewed grant
    with pytest.raises(QueryRefused) as info:
        service.run_job(bank, SQL)
    assert info.value.rule == "important.dp_only"
