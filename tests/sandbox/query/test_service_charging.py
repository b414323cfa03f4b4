"""Every run that touched data is charged, whatever its outcome; the cost is known before.

The failing enclave is real: the demo deployment reopened with a DuckDB memory limit of
1 MB, under which every aggregate over the claims runs out of memory in the enclave.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies import Administration
from policies.metering import budget_state, day_of, usage_today
from sandbox.core.errors import Conflict, QueryRefused, QueryTimeout, QuotaExceeded
from sandbox.core.settings import Settings
from sandbox.enclave.enclave import LIMITS_MESSAGE
from sandbox.platform import Platform
from sandbox.query.held_failure import held_failure
from sandbox.query.service import Held, QueryService
from tests.conftest import build_deployment

SQL = "SELECT district, count(*) AS n FROM health.claims GROUP BY 1"


@pytest.fixture(scope="module")
def homes(tmp_path_factory):  # type: ignore[no-untyped-def]
    """One demo deployment, opened twice in turn: normally, and starved of memory."""
    home = tmp_path_factory.mktemp("charging") / "home"
    platform, tokens = build_deployment(home)
    platform.close()
    return home, tokens


def open_platform(home: Path, **options: object) -> Platform:
    return Platform(Settings(home=home, threads=1, **options))  # type: ignore[arg-type]


def grant_of(platform: Platform, tokens, operator: str):  # type: ignore[no-untyped-def]
    """The operator's grant on health.claims, as its bureau sees it."""
    admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
    bureau = platform.authority.authenticate(tokens["bureau-health"])
    (grant,) = [
        g
        for g in admin.list_grants(bureau)
        if g.operator == operator and g.dataset == "health.claims"
    ]
    return grant


def usage(platform: Platform, grant_id: str):  # type: ignore[no-untyped-def]
    with platform.engine.connect() as conn:
        return usage_today(conn, [grant_id], day_of(datetime.now(UTC))).get(grant_id)


def ledger(platform: Platform, grant_id: str) -> float:
    """The grant's remaining ε, read from the budget ledger itself."""
    with platform.engine.connect() as conn:
        state = budget_state(conn, grant_id)
    assert state is not None
    return state.remaining


def test_a_run_that_fails_in_the_enclave_spends_epsilon_and_quota(homes) -> None:  # type: ignore[no-untyped-def]
    home, tokens = homes
    platform = open_platform(home, memory_limit="1MB")
    try:
        service = QueryService(platform)
        insurer = platform.authority.authenticate(tokens["op-insurer"])
        grant = grant_of(platform, tokens, "op-insurer")
        before_eps = ledger(platform, grant.id)
        before = usage(platform, grant.id)
        with pytest.raises(QueryTimeout) as info:
            service.run(insurer, SQL, request_id="starved-run")
        assert (info.value.rule, info.value.message) == ("enclave.limits", LIMITS_MESSAGE)
        assert ledger(platform, grant.id) == before_eps - 1.0
        after = usage(platform, grant.id)
        assert after is not None
        assert after.queries == (before.queries if before else 0) + 1
        assert after.rows_scanned == (before.rows_scanned if before else 0) + 10_000
        (entry,) = [
            e for e in platform.audit.entries(limit=10_000) if e.request_id == "starved-run"
        ]
        assert entry.decision == "deny" and entry.rule == "enclave.limits"
        assert entry.details["epsilon_spent"] == 1.0
    finally:
        platform.close()


def test_a_failed_run_without_a_budget_is_still_counted(homes) -> None:  # type: ignore[no-untyped-def]
    home, tokens = homes
    platform = open_platform(home, memory_limit="1MB")
    try:
        bank = platform.authority.authenticate(tokens["op-bank"])
        grant = grant_of(platform, tokens, "op-bank")
        before = usage(platform, grant.id)
        # Under review the failure is held like a result (whether it failed is data).
        held = QueryService(platform).run_job(bank, SQL)
        assert isinstance(held, Held)
        assert isinstance(held_failure(held.table), QueryTimeout)
        after = usage(platform, grant.id)
        assert after is not None
        assert after.queries == (before.queries if before else 0) + 1
    finally:
        platform.close()


def test_a_cancelled_job_is_charged_like_a_run(homes) -> None:  # type: ignore[no-untyped-def]
    """A job cancelled as its query starts (a real job slot on the server's enclave) paid."""
    from sandbox.enclave.shared import JobSlot, job_slot
    from sandbox.services import ServerPlatform

    home, tokens = homes
    platform = ServerPlatform(Settings(home=home, threads=1), progress_cursors=2)
    try:
        service = QueryService(platform)
        insurer = platform.authority.authenticate(tokens["op-insurer"])
        grant = grant_of(platform, tokens, "op-insurer")
        before_eps = ledger(platform, grant.id)
        before = usage(platform, grant.id)
        slot = JobSlot()
        slot.cancel(("job.cancelled", "cancelled by its operator"))
        with job_slot(slot), pytest.raises(Conflict) as info:
            service.run_job(insurer, f"{SQL} LIMIT 7", request_id="cancelled-job")
        assert info.value.rule == "job.cancelled"
        assert ledger(platform, grant.id) == before_eps - 1.0
        after = usage(platform, grant.id)
        assert after is not None
        assert after.queries == (before.queries if before else 0) + 1
        (entry,) = [
            e for e in platform.audit.entries(limit=10_000) if e.request_id == "cancelled-job"
        ]
        assert entry.rule == "job.cancelled" and entry.details["epsilon_spent"] == 1.0
    finally:
        platform.close()


def test_a_successful_run_is_charged_once(homes) -> None:  # type: ignore[no-untyped-def]
    """Charged before it runs, not again when it commits (ε and the query count)."""
    home, tokens = homes
    platform = open_platform(home)
    try:
        service = QueryService(platform)
        insurer = platform.authority.authenticate(tokens["op-insurer"])
        grant = grant_of(platform, tokens, "op-insurer")
        before_eps = ledger(platform, grant.id)
        before = usage(platform, grant.id)
        result = service.run(insurer, f"{SQL} ORDER BY 1")
        assert result.meta["epsilon_spent"] == 1.0
        assert ledger(platform, grant.id) == before_eps - 1.0
        after = usage(platform, grant.id)
        assert after is not None
        assert after.queries == (before.queries if before else 0) + 1
    finally:
        platform.close()


def test_reads_multiplied_by_reuse_are_what_the_rows_quota_sees(homes) -> None:  # type: ignore[no-untyped-def]
    home, tokens = homes
    platform = open_platform(home)
    try:
        service = QueryService(platform)
        bank = platform.authority.authenticate(tokens["op-bank"])
        grant = grant_of(platform, tokens, "op-bank")
        used = usage(platform, grant.id)
        so_far = used.rows_scanned if used else 0
        admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
        admin.narrow_grant(
            platform.authority.authenticate(tokens["bureau-health"]),
            grant.id,
            rows_per_day=so_far + 50_000,
            reason="quota",
        )
        eight = " UNION ALL ".join(["SELECT district FROM health.claims"] * 8)
        sql = f"SELECT district, count(*) AS n FROM ({eight}) GROUP BY 1"
        answer = service.explain(bank, SQL)
        assert answer["reads"] == {"health.claims": 1} and answer["rows_read"] == 10_000
        with pytest.raises(QuotaExceeded) as info:
            service.run_job(bank, sql)
        assert info.value.rule == "quota.rows_per_day"
        assert "80,000 rows of health.claims (8 reads)" in info.value.message
        service.run_job(bank, SQL)  # one read fits
        after = usage(platform, grant.id)
        assert after is not None and after.rows_scanned == so_far + 10_000
    finally:
        platform.close()


def test_a_fan_out_is_refused_before_the_guard_and_audited(homes) -> None:  # type: ignore[no-untyped-def]
    home, tokens = homes
    platform = open_platform(home)
    try:
        bank = platform.authority.authenticate(tokens["op-bank"])
        ctes = ["c0 AS (SELECT district FROM health.claims)"]
        for i in range(1, 6):
            copies = " UNION ALL ".join([f"SELECT district FROM c{i - 1}"] * 10)
            ctes.append(f"c{i} AS ({copies})")
        sql = "WITH " + ", ".join(ctes) + " SELECT district, count(*) AS n FROM c5 GROUP BY 1"
        with pytest.raises(QueryRefused) as info:
            QueryService(platform).run_job(bank, sql, request_id="fan-out")
        assert info.value.rule == "guard.cost"
        assert "reads health.claims 100,000 times" in info.value.message
        (entry,) = [e for e in platform.audit.entries(limit=10_000) if e.request_id == "fan-out"]
        assert entry.decision == "deny" and entry.rule == "guard.cost"
        assert "epsilon_spent" not in entry.details  # refused before it ran: nothing charged
    finally:
        platform.close()


def test_a_held_run_is_charged_when_it_runs_and_released_without_a_second_charge(homes) -> None:  # type: ignore[no-untyped-def]
    """Review after the run: the run paid (even its last query of the day); release is free.

    op-bank's health grant is ``reviewed`` (exact: no ε); what a run is charged is the
    query, counted against the grant's daily quota before it runs."""
    home, tokens = homes
    platform = open_platform(home)
    try:
        service = QueryService(platform)
        bank = platform.authority.authenticate(tokens["op-bank"])
        grant = grant_of(platform, tokens, "op-bank")
        assert grant.review_required
        used = usage(platform, grant.id)
        so_far = used.queries if used else 0
        admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
        admin.narrow_grant(
            platform.authority.authenticate(tokens["bureau-health"]),
            grant.id,
            queries_per_day=so_far + 1,
            reason="one more query today",
        )
        sql = "SELECT hospital_id, count(*) AS n FROM health.claims GROUP BY 1"
        held = service.run_job(bank, sql)
        assert isinstance(held, Held) and held.epsilon == 0
        after = usage(platform, grant.id)
        assert after is not None and after.queries == so_far + 1  # charged when it ran
        released = service.release_held(bank, sql, held)
        assert released.meta["epsilon_spent"] == 0 and not released.meta["cached"]
        again = usage(platform, grant.id)
        assert again is not None and again.queries == so_far + 1  # nothing charged again
        with pytest.raises(QuotaExceeded):  # the day's last query went to the held run
            service.run_job(bank, f"{sql} ORDER BY 1")
    finally:
        platform.close()
