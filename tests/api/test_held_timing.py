"""Through a real server: a reviewed job's run is hidden from its operator until it ends.

An outside attack (December 2026) read a k-1 membership bit from a held job before any
review: a ``WHERE`` threshold withheld or not switched the held query between reading
nothing and every row, which its CPU time in ``/v1/usage`` (13-22 ms against 104-141 ms)
and the moment it reached ``awaiting_review`` told apart.  Now (``sandbox/jobs/held_view.py``,
the default ``review_timing_hidden``) op-bank sees its reviewed job as one state with
nothing that moves with the run, its CPU time reaches its usage only on release, and a
cancel ends it at once whatever it was doing.
"""

from __future__ import annotations

import time

import pytest

from sandbox.core.errors import Conflict
from tests.api.conftest import claims_grant_of

#: The attack's device on the demo: the threshold is withheld (a cell under k) or not.
SWITCH = (
    "SELECT district, gender, count(*) AS n{i}, count(DISTINCT hospital_id) AS h "
    "FROM health.claims WHERE claim_amount > (SELECT count(*) FROM health.claims "
    "WHERE district = 'D16' AND diagnosis_code = '{code}') GROUP BY 1, 2"
)
#: What a job shows whatever its run does (cancel_requested aside).
STILL = {"state", "started_at", "finished_at", "expires_at", "progress", "meta", "result"}


def _cpu_ms(server) -> int:
    with server.client("op-bank") as bank:
        return sum(r["cpu_ms"] for r in bank.usage() if r["dataset"] == "health.claims")


def _seen(job: dict) -> dict:
    return {k: job.get(k) for k in STILL}


def _held(server, job_id: str) -> dict:
    """The job as its bureau opens it, once held (the bureau's view waits for the run)."""
    with server.client("bureau-health") as bureau:
        for _ in range(20):
            try:
                return bureau.review(job_id)
            except Conflict as exc:  # still computing after the bureau's wait
                assert exc.rule == "review.computing"
                time.sleep(0.5)
    raise AssertionError(f"job {job_id} was never held")


def test_a_reviewed_job_shows_one_state_from_submission_to_its_end(server) -> None:
    with server.client("op-bank") as bank:
        jobs = [bank.submit(SWITCH.format(i=i, code=code), wait=True) for i, code in
                enumerate(("C91", "ZZZ"))]  # fmt: skip
        first = [_seen(job) for job in jobs]
        assert (
            first[0]
            == first[1]
            == {
                "state": "awaiting_review",
                "started_at": None,
                "finished_at": None,
                "expires_at": None,
                "progress": 0.0,
                "meta": None,
                "result": None,
            }
        )
        ids = [job["id"] for job in jobs]
        # queued, running and held alike: listed as awaiting review, never as running
        assert not {j["id"] for j in bank.jobs(state=["running", "queued"])} & set(ids)
        assert set(ids) <= {j["id"] for j in bank.jobs(state=["awaiting_review"])}
    for job_id in ids:
        _held(server, job_id)
    with server.client("op-bank") as bank:
        after = [_seen(bank.job(job_id)) for job_id in ids]
        with pytest.raises(Conflict) as info:
            bank.result(ids[0])
        assert "awaiting_review" in info.value.message
    assert after == [{**f, "result": None} for f in first]


def test_cpu_time_reaches_usage_only_with_the_release(server) -> None:
    before = _cpu_ms(server)
    with server.client("op-bank") as bank:
        kept = bank.submit(SWITCH.format(i=10, code="C91"), wait=True)
        dropped = bank.submit(SWITCH.format(i=11, code="ZZZ"), wait=True)
    _held(server, kept["id"])
    _held(server, dropped["id"])
    assert _cpu_ms(server) == before, "held runs: nothing metered to the operator yet"
    with server.client("bureau-health") as bureau:
        bureau.reject(dropped["id"], "not this one")
        assert _cpu_ms(server) == before, "a rejected run's CPU time never reaches it"
        bureau.approve(kept["id"], "fine")
    with server.client("auditor") as auditor:
        (hold,) = [
            e
            for e in auditor.audit_entries(target=f"query:{kept['id']}")
            if e["details"].get("held_for_review")
        ]
    assert _cpu_ms(server) == before + hold["details"]["cpu_ms"], "metered on release"


def test_a_reviewed_job_is_cancelled_at_once_in_any_state(server) -> None:
    with server.client("op-bank") as bank:
        job = bank.submit(SWITCH.format(i=20, code="C91"))
        cancelled = bank.cancel(job["id"])
        assert (cancelled["state"], cancelled["rule"]) == ("cancelled", "job.cancelled")
        assert bank.job(job["id"])["state"] == "cancelled"


def test_jobs_held_for_review_count_against_the_limit_in_every_state(server) -> None:
    """Counted while one may still run (query_timeout_s), queued, running or held alike:
    a count of the running ones only would tell when a held run finished."""
    from sandbox.core.errors import RateLimited

    with server.client("admin") as admin:
        admin.update_settings(max_jobs_per_operator=2)
    try:
        with server.client("op-bank") as bank, pytest.raises(RateLimited) as info:
            # earlier tests' held jobs of the last query_timeout_s count too
            for i in (30, 31, 32):
                _held(server, bank.submit(SWITCH.format(i=i, code="C91"))["id"])
        assert info.value.rule == "jobs.concurrency"
        assert "submitted for review within" in info.value.message
    finally:
        with server.client("admin") as admin:
            admin.update_settings(max_jobs_per_operator=8)


def test_a_job_whose_grant_became_reviewed_before_it_ran_is_refused(tmp_path) -> None:
    """Shown as it runs (dp when submitted), it would be held in view of its operator if
    its grant were made reviewed before it ran: refused before it is charged instead."""
    from policies.grants import ReleaseMode
    from sandbox.jobs.store import JobState
    from sandbox.services import Services
    from tests.conftest import build_deployment

    platform, tokens = build_deployment(tmp_path / "home")
    settings = platform.settings
    platform.close()
    services = Services(settings)  # not started: the job waits, queued
    try:
        insurer = services.platform.authority.authenticate(tokens["op-insurer"])
        job = services.desk.submit(
            insurer,
            "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1",
            purpose=None,
            fmt="json",
            rid="changed-0001",
            client="test",
        )
        assert job.state is JobState.QUEUED and not job.review_bound
        bureau = services.platform.authority.authenticate(tokens["bureau-health"])
        admin = services.administration()
        grant = claims_grant_of(admin, bureau, "op-insurer")
        admin.set_release_mode(bureau, grant.id, ReleaseMode.REVIEWED, reason="now reviewed")
        ended = services.runner.run_now(job.id)
        assert (ended.state, ended.rule) == (JobState.REFUSED, "review.changed")
    finally:
        services.platform.close()


def test_an_ended_held_job_shows_nothing_its_run_wrote(server) -> None:
    """An outside attack (stop 51) cancelled a held job, or a cheap one queued behind it,
    and read the run's length from the cancelled job's ``started_at`` and ``progress``,
    and whether it had been held from its ``expires_at`` and ``meta``.  Cancelled,
    rejected or expired, a review-bound job shows none of them, in either world."""
    cheap = "SELECT gender, count(*) AS n{i} FROM health.claims GROUP BY 1"
    shown: dict[str, list[dict]] = {}
    for i, code in enumerate(("C91", "ZZZ")):
        with server.client("op-bank") as bank:
            probe = bank.submit(SWITCH.format(i=40 + i, code=code))
            dummy = bank.submit(cheap.format(i=40 + i))
            rejected = bank.submit(SWITCH.format(i=50 + i, code=code))
        _held(server, dummy["id"])  # the probe's run is over, the dummy's too
        _held(server, rejected["id"])
        with server.client("bureau-health") as bureau:
            bureau.reject(rejected["id"], "not this one")
        with server.client("op-bank") as bank:
            bank.cancel(dummy["id"])
            bank.cancel(probe["id"])
            ended = [bank.job(j["id"]) for j in (probe, dummy, rejected)]
        # finished_at: the cancel's or the verdict's moment, which the run does not move
        kept = (STILL - {"finished_at"}) | {"rule"}
        shown[code] = [{k: job.get(k) for k in kept} for job in ended]
    assert shown["C91"] == shown["ZZZ"]
    nothing = {"started_at": None, "progress": 0.0, "expires_at": None, "meta": None}
    for job in shown["C91"]:
        assert {k: job[k] for k in nothing} == nothing, job
    assert [j["rule"] for j in shown["C91"]] == [
        "job.cancelled",
        "job.cancelled",
        "review.rejected",
    ]
