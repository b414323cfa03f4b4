"""A window that cannot be computed on its outputs' types is refused before the charge.

``SELECT district, sum(district) OVER () …`` (the sum of a VARCHAR) could never run:
the released table's types follow from the plan, not from the data.  It once failed
only after the run was charged, as ``disclosure.arithmetic`` ("computing the windows
over the released rows failed"): an analyst paid ε for a query that could not run, and
was not told why.  Now the service binds the windows over an empty table of the
released outputs' types (``sandbox/query/window_types.py``) when it authorizes the
query: ``guard.window``, nothing charged, under a ``dp`` grant or a ``reviewed`` one
alike.  What fails only on values stays the run's (held under review).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from sandbox.core.errors import QueryRefused
from sandbox.platform import Platform
from sandbox.query.held_failure import held_failure
from sandbox.query.release import PreparedWithWindows, prepare
from sandbox.query.service import Held, QueryService
from sandbox.query.window_types import Unchecked, check_window_types, stats_types
from tests.conftest import build_deployment
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access
from tests.sandbox.query.test_service_charging import grant_of, ledger, usage
from tests.sandbox.query.test_totals import EXACT

UNTYPED = "SELECT district, sum(district) OVER () FROM health.claims GROUP BY district"
VALID = (
    "SELECT district, count(*) AS n, sum(count(*)) OVER () AS total, "
    "rank() OVER (ORDER BY count(*) DESC) AS r FROM health.claims GROUP BY district"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Any]]:
    platform, tokens = build_deployment(tmp_path_factory.mktemp("window-types") / "home")
    yield platform, tokens
    platform.close()


def _districts(platform: Platform) -> set[str]:
    with platform.enclave.cursor() as cur:
        rows = cur.sql("SELECT DISTINCT district FROM health.claims").fetchall()
    return {r[0] for r in rows if r[0] is not None}


def _no_value(message: str, values: set[str]) -> None:
    tokens = set(re.findall(r"\w+", message))
    assert not tokens & values, message


def _deny(platform: Platform, rid: str) -> Any:
    (entry,) = [e for e in platform.audit.entries(limit=10_000) if e.request_id == rid]
    return entry


def test_under_a_budget_it_is_refused_before_any_charge(world: Any) -> None:
    platform, tokens = world
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    grant = grant_of(platform, tokens, "op-insurer")
    before, used = ledger(platform, grant.id), usage(platform, grant.id)
    with pytest.raises(QueryRefused) as info:
        service.run(insurer, UNTYPED, request_id="untyped-run")
    assert info.value.rule == "guard.window"
    message = info.value.message
    assert "SUM(district) OVER ()" in message and "VARCHAR" in message
    assert "__" not in message and "Binder" not in message
    _no_value(message, _districts(platform))
    assert ledger(platform, grant.id) == before
    after = usage(platform, grant.id)
    assert (after.queries if after else 0) == (used.queries if used else 0)
    entry = _deny(platform, "untyped-run")
    assert entry.decision == "deny" and entry.rule == "guard.window"
    assert "epsilon_spent" not in entry.details  # refused before it ran: nothing charged
    # explain and a job's submission say so too, before a job exists
    answer = service.explain(insurer, UNTYPED)
    assert answer == {"accepted": False, "rule": "guard.window", "message": message}
    with pytest.raises(QueryRefused) as checked:
        service.check(insurer, UNTYPED)
    assert checked.value.rule == "guard.window"
    assert ledger(platform, grant.id) == before


def test_the_window_and_what_it_reads_are_named(world: Any) -> None:
    platform, tokens = world
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    sql = (
        "SELECT district, count(*) AS n, avg(district) OVER (PARTITION BY count(*)) AS a "
        "FROM health.claims GROUP BY district"
    )
    answer = service.explain(insurer, sql)
    assert answer["rule"] == "guard.window"
    assert answer["message"] == (
        'the window AVG(district) OVER (PARTITION BY COUNT(*)) (output "a") cannot be '
        "computed over the released outputs' types (it reads COUNT(*), released as BIGINT; "
        "district, released as VARCHAR): check its arguments' types"
    )


@pytest.mark.parametrize(
    "sql",
    [
        # a default is cast only when a row needs it: binding alone passes it
        "SELECT district, count(*) AS n, lag(count(*), 1, 'abc') OVER (ORDER BY district) "
        "AS s FROM health.claims GROUP BY district",
        # beside grouping sets, over the stacked rows
        "SELECT district, count(*) AS n, lead(avg(claim_amount), 1, 'x') "
        "OVER (ORDER BY district) AS s FROM health.claims GROUP BY ROLLUP (district)",
    ],
)
def test_a_default_of_the_wrong_type_is_refused_before_any_charge(world: Any, sql: str) -> None:
    platform, tokens = world
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    grant = grant_of(platform, tokens, "op-insurer")
    before = ledger(platform, grant.id)
    with pytest.raises(QueryRefused) as info:
        service.run(insurer, sql)
    assert info.value.rule == "guard.window"
    assert "released as" in info.value.message
    _no_value(info.value.message, _districts(platform))
    assert ledger(platform, grant.id) == before


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT district, coalesce(district, 5) AS c, count(*) AS n FROM health.claims "
        "GROUP BY district",
        "SELECT district, coalesce(district, 5) AS c, count(*) AS n FROM health.claims "
        "GROUP BY ROLLUP (district)",
    ],
)
def test_an_output_of_types_that_do_not_combine_is_refused_before_any_charge(
    world: Any, sql: str
) -> None:
    """Outputs are computed over the released statistics under TRY: what fails there on
    no row is the binding, the types' alone (it was charged, then release.outputs)."""
    platform, tokens = world
    service = QueryService(platform)
    for account in ("op-insurer", "op-bank"):  # under a budget, and under review
        actor = platform.authority.authenticate(tokens[account])
        grant = grant_of(platform, tokens, account)
        budgeted = not grant.review_required
        before = ledger(platform, grant.id) if budgeted else None
        used = usage(platform, grant.id)
        run = service.run if budgeted else service.run_job
        with pytest.raises(QueryRefused) as info:
            run(actor, sql)
        assert info.value.rule == "guard.output_types"
        _no_value(info.value.message, _districts(platform))
        if budgeted:
            assert ledger(platform, grant.id) == before
        after = usage(platform, grant.id)
        assert (after.queries if after else 0) == (used.queries if used else 0)


def test_under_review_it_is_refused_not_held(world: Any) -> None:
    platform, tokens = world
    service = QueryService(platform)
    bank = platform.authority.authenticate(tokens["op-bank"])
    grant = grant_of(platform, tokens, "op-bank")
    assert grant.review_required
    used = usage(platform, grant.id)
    with pytest.raises(QueryRefused) as info:
        service.run_job(bank, UNTYPED, request_id="untyped-job")
    assert info.value.rule == "guard.window"
    _no_value(info.value.message, _districts(platform))
    after = usage(platform, grant.id)
    assert (after.queries if after else 0) == (used.queries if used else 0)
    assert "epsilon_spent" not in _deny(platform, "untyped-job").details


def test_a_window_over_types_it_takes_runs_and_is_charged_once(world: Any) -> None:
    platform, tokens = world
    service = QueryService(platform)
    insurer = platform.authority.authenticate(tokens["op-insurer"])
    grant = grant_of(platform, tokens, "op-insurer")
    before = ledger(platform, grant.id)
    assert service.explain(insurer, VALID)["accepted"]
    result = service.run(insurer, VALID)
    assert result.table.num_rows and result.meta["epsilon_spent"] == 1.0
    counts = result.table.column("n").to_pylist()
    assert set(result.table.column("total").to_pylist()) == {sum(counts)}
    assert ledger(platform, grant.id) == before - 1.0
    again = service.run(insurer, VALID)  # the release cache: nothing spent
    assert again.meta["epsilon_spent"] == 0.0
    assert ledger(platform, grant.id) == before - 1.0


def test_what_fails_on_values_is_still_held_under_review(world: Any) -> None:
    """An overflow around a window depends on the values: not refused before the run;
    it runs under TRY (NULL where it fails) and the result is held for review."""
    platform, tokens = world
    service = QueryService(platform)
    bank = platform.authority.authenticate(tokens["op-bank"])
    sql = (
        "SELECT district, count(*) AS n, greatest(max(count(*)) OVER () - 1, 0) "
        "* 9223372036854775807 AS x FROM health.claims GROUP BY district"
    )
    assert service.explain(bank, sql)["accepted"]
    held = service.run_job(bank, sql)
    assert isinstance(held, Held) and held_failure(held.table) is None
    assert set(held.table.column("x").to_pylist()) == {None}


def test_the_dry_run_reads_the_stats_query_types_only(world: Any) -> None:
    """The check binds the stats query in the enclave (no row read) and releases an
    empty table of its types; where that cannot be had, it decides nothing."""
    platform, _ = world
    from sandbox.query.release import release_database

    database = release_database()
    try:
        prepared = prepare(UNTYPED, access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
        assert isinstance(prepared, PreparedWithWindows)
        with platform.enclave.cursor() as cur:
            with pytest.raises(QueryRefused):
                check_window_types(prepared, partial(stats_types, cur), database)
            valid = prepare(VALID, access(), EXACT, max_sql_length=MAX_SQL_LENGTH)
            assert isinstance(valid, PreparedWithWindows)
            check_window_types(valid, partial(stats_types, cur), database)  # no refusal

        def unbound(sql: str) -> Any:
            raise Unchecked

        with pytest.raises(Unchecked):
            check_window_types(prepared, unbound, database)
    finally:
        database.close()


def test_a_starved_enclave_still_refuses_it(tmp_path: Path) -> None:
    """Binding reads no row: under a memory limit no aggregate over the claims can run
    in, the refusal is the same (and nothing is charged)."""
    from sandbox.core.settings import Settings

    platform, tokens = build_deployment(tmp_path / "home")
    platform.close()
    platform = Platform(Settings(home=tmp_path / "home", threads=1, memory_limit="1MB"))
    try:
        insurer = platform.authority.authenticate(tokens["op-insurer"])
        grant = grant_of(platform, tokens, "op-insurer")
        before = ledger(platform, grant.id)
        with pytest.raises(QueryRefused) as info:
            QueryService(platform).run(insurer, UNTYPED)
        assert info.value.rule == "guard.window"
        assert ledger(platform, grant.id) == before
    finally:
        platform.close()
