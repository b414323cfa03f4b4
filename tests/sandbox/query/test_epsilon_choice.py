"""The analyst's ε per query, and each output's 95% interval before and after spending.

On the demo deployment: op-insurer's grant on health.claims has ε 10 in total and at
most 1 per query; op-bank's is reviewed (no budget).
"""

from __future__ import annotations

import pytest

from sandbox.core.errors import QueryRefused
from sandbox.query.service import QueryService
from tests.conftest import build_deployment

SQL = (
    # By gender: two groups of about 5,000 claims (16 districts of about 600 left every
    # average's cell under its release threshold at ε 0.5 and C·G = 36 rows a person).
    "SELECT gender, count(*) AS n, sum(claim_amount) AS total, avg(claim_amount) AS mean "
    "FROM health.claims GROUP BY 1"
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):  # type: ignore[no-untyped-def]
    platform, tokens = build_deployment(tmp_path_factory.mktemp("epsilon") / "home")
    yield platform, tokens
    platform.close()


def test_explain_takes_the_analysts_epsilon_and_states_accuracy_first(deployment) -> None:  # type: ignore[no-untyped-def]
    platform, tokens = deployment
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    default = service.explain(insurer, SQL)
    half = service.explain(insurer, SQL, epsilon=0.25)
    assert default["accepted"] and half["accepted"], (default, half)
    assert default["epsilon"] == 1.0 and half["epsilon"] == 0.25
    before, after = default["accuracy"], half["accuracy"]
    # the key says what a group needs to be shown: a noisy count of at least released_from
    # (of rows here: count(*) selects the groups at C > 1), higher at a smaller ε
    assert before["gender"]["key"] is True and before["gender"]["counting"] == "rows"
    assert before["gender"]["released_from"] >= 10  # the k floor at least
    assert after["gender"]["released_from"] > before["gender"]["released_from"]
    assert before["n"]["half_width"] > 0 and before["total"]["half_width"] > 0
    assert before["mean"]["kind"] == "average" and before["mean"]["half_width"] is None
    assert before["mean"]["sum_half_width"] > 0 and before["mean"]["count_half_width"] > 0
    # A quarter of the ε: about four times the half-width (Laplace, whole units).
    assert 3.5 < after["n"]["half_width"] / before["n"]["half_width"] < 4.5
    assert 3.5 < after["total"]["half_width"] / before["total"]["half_width"] < 4.5


def test_epsilon_above_the_grants_maximum_is_refused_by_name(deployment) -> None:  # type: ignore[no-untyped-def]
    platform, tokens = deployment
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    verdict = service.explain(insurer, SQL, epsilon=1.5)
    assert not verdict["accepted"]
    assert verdict["rule"] == "budget.epsilon_per_query"
    assert "per-query maximum" in verdict["message"]
    with pytest.raises(QueryRefused) as info:
        service.run(insurer, SQL, epsilon=2.0)
    assert info.value.rule == "budget.epsilon_per_query"


def test_a_run_spends_the_chosen_epsilon_and_reports_accuracy(deployment) -> None:  # type: ignore[no-untyped-def]
    platform, tokens = deployment
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    before = service.explain(insurer, SQL + " ORDER BY 1", epsilon=0.5)["epsilon_remaining"]
    result = service.run(insurer, SQL + " ORDER BY 1", epsilon=0.5)
    assert result.meta["epsilon_spent"] == 0.5
    assert result.meta["epsilon_remaining"] == pytest.approx(before - 0.5)
    accuracy = result.meta["accuracy"]
    assert (
        accuracy["n"]["half_width"]
        == service.explain(insurer, SQL, epsilon=0.5)["accuracy"]["n"]["half_width"]
    )
    # Each released average has its own interval, from its noisy sum and count.
    widths = accuracy["mean"]["half_widths"]
    assert len(widths) == result.table.num_rows > 0
    for row, width in zip(result.table.to_pylist(), widths, strict=True):
        if width is not None:  # at least the sum's half-width over the (noisy) count
            assert width >= accuracy["mean"]["sum_half_width"] / (row["n"] + 100)
    assert any(width is not None for width in widths)


def test_no_epsilon_without_a_budget(deployment) -> None:  # type: ignore[no-untyped-def]
    platform, tokens = deployment
    service = QueryService(platform)
    bank = platform.authority.authenticate(tokens["op-bank"])
    verdict = service.explain(bank, SQL, epsilon=0.5)
    assert not verdict["accepted"] and verdict["rule"] == "budget.epsilon"


def test_a_job_runs_at_the_epsilon_it_was_submitted_with(deployment) -> None:  # type: ignore[no-untyped-def]
    """Through the real job desk: the ε is stored with the job and charged when it runs."""
    import uuid

    from sandbox.core.errors import QueryRefused as Refused
    from tests.reviewing import reviewing

    platform, tokens = deployment
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    sql = SQL + " ORDER BY 2"
    with reviewing(platform, service) as desk:
        job = desk.desk.submit(
            insurer,
            sql,
            purpose=None,
            fmt="arrow",
            rid=uuid.uuid4().hex,
            client=None,
            wait_s=60,
            epsilon=0.125,
        )
        assert job.state.value == "succeeded", (job.state, job.rule, job.message)
        assert job.epsilon == 0.125
        assert job.meta is not None and job.meta["epsilon_spent"] == 0.125
        assert job.meta["accuracy"]["n"]["half_width"] > 0
        # Re-read from the store (a job run by another process reads its ε from here).
        assert desk.store.get(job.id).epsilon == 0.125
        with pytest.raises(Refused) as info:
            desk.desk.submit(
                insurer,
                sql + ", 1",
                purpose=None,
                fmt="arrow",
                rid=uuid.uuid4().hex,
                client=None,
                epsilon=3.0,
            )
        assert info.value.rule == "budget.epsilon_per_query"


def test_the_intervals_come_from_the_release_database_given(deployment, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A service computes each average's per-cell intervals in its own release database
    (opening one per query cost about 16 ms); the figures are those of a fresh database,
    and a database that cannot serve them leaves them out rather than fail the release."""
    import sandbox.query.service as service_module
    from sandbox.query import cell_accuracy
    from sandbox.query.release import release_database

    platform, tokens = deployment
    seen: list[tuple[object, object]] = []

    def spy(prepared, released, database=None):  # type: ignore[no-untyped-def]
        seen.append((prepared, released))
        return cell_accuracy.result_accuracy(prepared, released, database)

    monkeypatch.setattr(service_module, "result_accuracy", spy)
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    result = service.run(insurer, SQL + " ORDER BY 1 DESC", epsilon=0.5)
    (prepared, released) = seen[-1]
    own = cell_accuracy.result_accuracy(prepared, released)  # type: ignore[arg-type]
    assert own is not None and result.meta["accuracy"] == own
    assert len(own["mean"]["half_widths"]) == result.table.num_rows
    closed = release_database()
    closed.close()
    without = cell_accuracy.result_accuracy(prepared, released, closed)  # type: ignore[arg-type]
    assert without is not None and "half_widths" not in without["mean"]
    assert without["mean"]["sum_half_width"] == own["mean"]["sum_half_width"]


def test_a_released_value_scaled_by_a_constant_has_its_interval_scaled(deployment) -> None:  # type: ignore[no-untyped-def]
    """``sum(claim_amount) / 10000`` (or ``sum(claim_amount / 10000)``, the same after
    normalisation) and ``count(*) * 100.0`` are the noisy statistic times a constant:
    their 95% half-widths are the statistic's times that constant; a statistic plus or
    minus a constant (``sum(x) + 1``, ``10 - count(*)``) keeps the statistic's.  A mean
    scaled or shifted keeps no interval of its own, nor does a key shifted; ``sum(x + 1)``,
    two statistics, has their union bound."""
    platform, tokens = deployment
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    sql = (
        "SELECT gender, count(*) AS n, count(*) * 100.0 AS n100, sum(claim_amount) AS total, "
        "sum(claim_amount / 10000) AS wan, -2 * sum(claim_amount) AS neg, "
        "2 * avg(claim_amount) AS twice_mean, sum(claim_amount) + 1 AS plus, "
        "10 - count(*) AS less, avg(claim_amount) - 1 AS mean_less, "
        "sum(claim_amount + 1) AS shifted "
        "FROM health.claims GROUP BY 1"
    )
    accuracy = service.explain(insurer, sql)["accuracy"]
    n, total = accuracy["n"]["half_width"], accuracy["total"]["half_width"]
    assert n > 0 and total > 0
    assert accuracy["n100"]["half_width"] == pytest.approx(100 * n)
    assert accuracy["wan"]["half_width"] == pytest.approx(total / 10000)
    assert accuracy["neg"]["half_width"] == pytest.approx(2 * total)
    assert accuracy["twice_mean"]["half_width"] is None
    assert accuracy["plus"]["half_width"] == pytest.approx(total)
    assert accuracy["less"]["half_width"] == pytest.approx(n)
    assert accuracy["mean_less"]["half_width"] is None
    assert "sum_half_width" not in accuracy["mean_less"]
    # sum(x + 1) is sum(x) + count(x): two statistics, a union bound over their draws
    # (cell_accuracy._combination), wider than the sum's own
    assert accuracy["shifted"]["half_width"] > total
