"""Through a real server: a held run's length moves nothing its operator sees.

With ``review_timing_hidden`` (the default) a job bound for review shows its operator
one state until it ends (``sandbox/jobs/held_view.py``).  What was left open at stop 50:
the held run occupied one of the operator's workers (two workers let an operator run one
job at a time), so its next ``dp`` job started when the held run ended, and the next
held run's charge landed in ``/v1/usage`` when that one started.  Now held runs have a
lane of workers of their own (``held_job_workers``), are charged when submitted, and a
review-bound job refused when its run starts (a grant suspended meanwhile) is held for
its bureau like a failure on the data, never shown ended at that moment.

The lab's slow join runs until ``query_timeout_s`` stops it, so it is reliably still
running while the test looks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sandbox.core.errors import Conflict
from tests.api.conftest import SLOW_JOIN, LiveServer, claims_grant_of, start_lab

TRIPS = "SELECT count(*) AS n FROM transport.trips"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "SANDBOX_REVIEW_TIMING_HIDDEN": "1",  # the default, which start_lab turns off
        "SANDBOX_JOB_WORKERS": "2",  # one job of an operator at a time (workers - 1)
        "SANDBOX_HELD_JOB_WORKERS": "1",
        "SANDBOX_THREADS": "1",
        "SANDBOX_QUERY_TIMEOUT_S": "12",
        "SANDBOX_SYNC_INLINE_ROWS": "0",  # every job behind the queue, none run inline
    }
    server = start_lab(tmp_path_factory.mktemp("held-lane"), env)
    try:
        with server.client("bureau-transport") as bureau:
            bureau.issue_grant(
                dataset="transport.trips",
                operator="op-bank",
                purpose_code="lab-tests",
                purpose_text="a dp query beside a held run",
                valid_until="2030-01-01T00:00:00Z",
                max_level="L2",
                epsilon_total=50.0,
                epsilon_per_query=1.0,
            )
        yield server
    finally:
        server.stop()


def _computing(server: LiveServer, job_id: str) -> bool:
    """Whether the bureau finds the held job still being computed (its view waits a
    moment for it first)."""
    with server.client("bureau-lab") as bureau:
        try:
            bureau.review(job_id)
        except Conflict as exc:
            assert exc.rule == "review.computing"
            return True
    return False


def _held(server: LiveServer, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    with server.client("bureau-lab") as bureau:
        while time.monotonic() < deadline:
            try:
                return bureau.review(job_id)
            except Conflict as exc:
                assert exc.rule == "review.computing"
    raise AssertionError(f"job {job_id} was never held")


def _queries(server: LiveServer) -> int:
    with server.client("op-bank") as bank:
        return sum(r["queries"] for r in bank.usage() if r["dataset"] == "lab.events")


def test_a_held_run_holds_up_no_other_job_of_its_operator(lab: LiveServer) -> None:
    with lab.client("op-bank") as bank:
        slow = bank.submit(SLOW_JOIN)
        assert slow["state"] == "awaiting_review"
        time.sleep(1.0)  # its held worker has taken it
        visible = bank.submit(TRIPS, wait=True)
        assert visible["state"] == "succeeded", visible
        # the held run is still running: before, this job waited for it (per operator: 1)
        assert _computing(lab, slow["id"])
        bank.cancel(slow["id"])


def test_a_held_job_is_charged_when_submitted(lab: LiveServer) -> None:
    """Two held jobs, one held worker busy with the first for seconds: both counted at
    once (before, the second's query landed in the usage when its run started)."""
    before = _queries(lab)
    with lab.client("op-bank") as bank:
        first = bank.submit(SLOW_JOIN)
        second = bank.submit(SLOW_JOIN.replace("count(*) AS n", "count(*) AS m"))
    assert _queries(lab) == before + 2
    assert _computing(lab, first["id"])
    with lab.client("op-bank") as bank:
        for job in (second, first):
            assert bank.cancel(job["id"])["state"] == "cancelled"
    assert _queries(lab) == before + 2, "a cancelled job's charge stands"
    with lab.client("auditor") as auditor:
        # never run: the charge's entry is its cancel's (reviewed, no budget: ε 0)
        (ended,) = auditor.audit_entries(target=f"query:{second['id']}")
    assert (ended["decision"], ended["rule"]) == ("deny", "job.cancelled")
    assert ended["details"]["epsilon_spent"] == 0.0


def test_a_held_job_refused_when_it_runs_is_held_for_its_bureau(lab: LiveServer) -> None:
    """Its refusal comes when the held runs before it end: shown then, it would tell when
    they ended.  So it waits in review like a failure on the data."""
    with lab.client("bureau-lab") as bureau:
        (grant,) = [
            g
            for g in bureau.grants(domain="lab")
            if g["dataset"] == "lab.pairs" and g["operator"] == "op-bank"
        ]
    with lab.client("op-bank") as bank:
        slow = bank.submit(SLOW_JOIN)
        second = bank.submit(SLOW_JOIN.replace("count(*) AS n", "count(*) AS r"))
        with lab.client("bureau-lab") as bureau:
            bureau.grant_status(grant["id"], "suspend", "a test: refused when it runs")
        try:
            time.sleep(2.5)  # past the submission's check standing in (runner.HINT_S)
            bank.cancel(slow["id"])  # the second runs now, and is refused
            held = _held(lab, second["id"])
            assert held["failed"]["rule"].startswith("grant."), held["failed"]
            assert held["result"] == {"columns": [], "rows": []}
            seen = bank.job(second["id"])
            assert (seen["state"], seen["rule"], seen["finished_at"]) == (
                "awaiting_review",
                None,
                None,
            )
            with lab.client("bureau-lab") as bureau:
                ended = bureau.approve(second["id"], "the operator may know how it ended")
            assert ended["state"] == "refused" and ended["rule"] == held["failed"]["rule"]
            assert bank.job(second["id"])["rule"] == held["failed"]["rule"]
        finally:
            with lab.client("bureau-lab") as bureau:
                bureau.grant_status(grant["id"], "resume", "the test is over")


QUICK = "SELECT e.bucket, count(*) AS n FROM lab.events e GROUP BY 1"


def test_a_held_job_computes_even_what_it_could_repeat(lab: LiveServer) -> None:
    """Submitted before its twin was released, it runs after: answered from the release
    cache then, it would be shown ended when the held runs before it ended.  It is held
    like any other, and its approval answers from the cache."""
    with lab.client("op-bank") as bank:
        twin = bank.submit(QUICK)
        _held(lab, twin["id"])
        slow = bank.submit(SLOW_JOIN)  # holds the one held worker
        later = bank.submit(QUICK)
        with lab.client("bureau-lab") as bureau:
            assert bureau.approve(twin["id"], "fine")["state"] == "succeeded"
        bank.cancel(slow["id"])
        held = _held(lab, later["id"])
        assert held["failed"] is None and held["job"]["state"] == "awaiting_review"
        with lab.client("bureau-lab") as bureau:
            released = bureau.approve(later["id"], "the same release")
        assert released["state"] == "succeeded"
        assert bank.result(later["id"]).equals(bank.result(twin["id"]))


# -- in one process: the ends a live server reaches only by chance -------------------------


def _services(tmp_path):  # type: ignore[no-untyped-def]
    from sandbox.services import Services
    from tests.conftest import build_deployment

    platform, tokens = build_deployment(tmp_path / "home")
    settings = platform.settings
    platform.close()
    return Services(settings), tokens


def _held_job(services, tokens, sql: str):  # type: ignore[no-untyped-def]
    bank = services.platform.authority.authenticate(tokens["op-bank"])
    job = services.desk.submit(bank, sql, purpose=None, fmt="json", rid="r-0001", client="t")
    assert job.review_bound and job.prepaid == 0.0
    return job


def test_a_held_job_whose_grant_no_longer_holds_for_review_is_held_refused(tmp_path) -> None:
    from policies.grants import ReleaseMode
    from sandbox.jobs.store import JobState
    from sandbox.query.held_failure import held_failure

    services, tokens = _services(tmp_path)  # not started: the job waits, queued
    try:
        job = _held_job(
            services, tokens, "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1"
        )
        bureau = services.platform.authority.authenticate(tokens["bureau-health"])
        admin = services.administration()
        grant = claims_grant_of(admin, bureau, "op-bank")
        admin.set_release_mode(bureau, grant.id, ReleaseMode.DP, reason="now dp")
        ended = services.runner.run_now(job.id)
        assert ended.state is JobState.AWAITING_REVIEW  # not shown refused when it ran
        stored = services.store.result(job.id)
        assert stored is not None and stored.cache_key is None
        from sandbox.jobs.desk import read_table

        failure = held_failure(read_table(stored.data))
        assert failure is not None and failure.rule == "review.changed"
    finally:
        services.platform.close()


def test_a_held_job_interrupted_while_released_fails_as_any_job(tmp_path) -> None:
    """Approved and being released (``running`` again), a stop fails it: held again as a
    failure, no bureau could review it (all approved) and its result would be lost."""
    from sandbox.jobs.store import JobState

    services, tokens = _services(tmp_path)
    try:
        job = _held_job(
            services, tokens, "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1"
        )
        assert services.runner.run_now(job.id).state is JobState.AWAITING_REVIEW
        services.runner.start()
        review = {"dataset": "health.claims", "by": "bureau-health", "verdict": "approve"}
        services.store.add_review(
            job.id, {**review, "reason": "fine", "at": "2026-12-06T00:00:00Z"}
        )
        assert services.store.begin_release(job.id, services.runner.runner_id)
        services.runner.stop(grace_s=0.1)
        ended = services.store.get(job.id)
        assert (ended.state, ended.rule) == (JobState.FAILED, "job.interrupted")
    finally:
        services.platform.close()


def test_a_held_job_cancelled_before_it_ran_has_its_charge_in_the_trail(tmp_path) -> None:
    services, tokens = _services(tmp_path)
    try:
        job = _held_job(
            services, tokens, "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1"
        )
        bank = services.platform.authority.authenticate(tokens["op-bank"])
        services.desk.cancel(bank, job.id, "r-0002", "t")
        from audit import EntryFilter

        found = services.platform.audit.entries(EntryFilter(action="dataset.query"), limit=10_000)
        entries = [e for e in found if e.request_id == job.id]
        assert [(e.decision, e.rule, e.details["epsilon_spent"]) for e in entries] == [
            ("deny", "job.cancelled", 0.0)
        ]
    finally:
        services.platform.close()
