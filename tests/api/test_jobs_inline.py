"""A small synchronous job runs in the request's thread, created already claimed.

``JobDesk.submit(inline=True)`` writes the job ``running`` on this process's runner in
the transaction of the run's charge and finishes it in the one that stores its release:
two control-plane transactions in all (one for an answer from the release cache, which
charges nothing); nothing is read back.  It stays a job like
any other: the same audit entries as a queued job run by a worker, cancellable while it
runs, and an orphan failed by the next runner (``job.interrupted``, audited) if its
server dies before finishing it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.queries import EntryFilter
from sandbox.client import ConnectionFailed
from sandbox.jobs.store import JobState
from sandbox.services import Services
from tests.api.conftest import (
    SLOW_JOIN,
    LiveServer,
    start_lab,
)
from tests.conftest import build_deployment

SQL = "SELECT industry, count(*) AS n FROM market.enterprises WHERE founded > {} GROUP BY 1"


def _query_entries(services: Services, job_id: str) -> list[dict[str, Any]]:
    found = services.platform.audit.entries(EntryFilter(target=f"query:{job_id}"), limit=10)
    return [
        {
            "actor": e.actor,
            "action": e.action,
            "decision": e.decision,
            "rule": e.rule,
            "request_id_is_job": e.request_id == job_id,
            "details": sorted(e.details),
        }
        for e in found
    ]


def test_an_inline_job_is_written_once_claimed_and_audited_as_a_queued_one(
    tmp_path: Path,
) -> None:
    platform, tokens = build_deployment(tmp_path / "home")
    # a reviewed grant's job never runs inline by default (its run is hidden from its
    # operator: tests/api/test_held_timing.py); this test is about the inline run
    settings = dataclasses.replace(platform.settings, review_timing_hidden=False)
    platform.close()
    services = Services(settings)
    try:
        services.start()
        bank = services.platform.authority.authenticate(tokens["op-bank"])
        desk, store = services.desk, services.store

        def submit(n: int, inline: bool) -> Any:
            return desk.submit(
                bank,
                SQL.format(1990 + n),
                purpose=None,
                fmt="json",
                rid=f"r{n}",
                client="127.0.0.1",
                inline=inline,
                wait_s=None if inline else 30.0,
            )

        writer = services.platform.control_writer
        groups = writer.groups
        inline = submit(1, inline=True)
        assert inline.state in (JobState.SUCCEEDED, JobState.AWAITING_REVIEW)
        # Created with the charge, ended with the release (or its hold): two transactions.
        assert writer.groups == groups + 2
        # What the desk returned is what the store holds (built from the writes).
        assert inline == store.get(inline.id)
        # Claimed in the insert that created it: by this process's runner, never queued.
        assert inline.runner == services.runner.runner_id
        assert inline.started_at == inline.created_at
        # A released (dp) query asked again is answered from the release cache: nothing
        # is charged, so its row is written with its end, in one transaction.
        insurer = services.platform.authority.authenticate(tokens["op-insurer"])
        counts = "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1"
        first = desk.submit(
            insurer, counts, purpose=None, fmt="json", rid="i1", client=None, inline=True
        )
        assert first.state is JobState.SUCCEEDED
        groups = writer.groups
        again = desk.submit(
            insurer, counts, purpose=None, fmt="json", rid="i2", client=None, inline=True
        )
        assert again.state is JobState.SUCCEEDED and again == store.get(again.id)
        assert again.meta is not None and again.meta["cached"]
        assert writer.groups == groups + 1
        queued = submit(2, inline=False)
        assert queued.state is inline.state
        assert queued.started_at is not None and queued.started_at >= queued.created_at
        # The same audit entries either way: one dataset.query entry per job, the job's id
        # as its request id, with the same details.
        entries = _query_entries(services, inline.id)
        assert len(entries) == 1 and entries[0]["action"] == "dataset.query"
        assert entries[0]["request_id_is_job"]
        assert entries == _query_entries(services, queued.id)
    finally:
        services.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose op-bank may run SLOW_JOIN, small enough by its cost bound
    (``sync_inline_rows``) to run inline when submitted with ``wait=true``."""
    root = tmp_path_factory.mktemp("inline")
    server = start_lab(root, {"SANDBOX_JOB_WORKERS": "1", "SANDBOX_SYNC_INLINE_ROWS": "1000000"})
    try:
        yield server
    finally:
        server.stop()


def _submit_in_background(lab: LiveServer) -> tuple[threading.Thread, list[Any]]:
    """``POST /v1/jobs?wait=true`` of SLOW_JOIN from another thread; its answer (or error)."""
    answer: list[Any] = []

    def post() -> None:
        try:
            with lab.client("op-bank") as bank:
                answer.append(bank.submit(SLOW_JOIN, wait=True, timeout=60))
        except Exception as exc:  # the server was killed under it
            answer.append(exc)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, answer


def _running(lab: LiveServer, known: set[str], timeout: float = 30) -> dict[str, Any]:
    """The op-bank job that started running and is not in ``known``."""
    deadline = time.time() + timeout
    with lab.client("op-bank") as bank:
        while time.time() < deadline:
            fresh = [j for j in bank.jobs(state=["running"]) if j["id"] not in known]
            if fresh:
                return fresh[0]
            time.sleep(0.05)
    raise AssertionError("no inline job started running")


def _all_ids(lab: LiveServer) -> set[str]:
    with lab.client("op-bank") as bank:
        return {j["id"] for j in bank.jobs(limit=1000)}


def test_a_running_inline_job_is_cancelled(lab: LiveServer) -> None:
    known = _all_ids(lab)
    thread, answer = _submit_in_background(lab)
    job = _running(lab, known)
    assert job["started_at"] == job["created_at"], "claimed when created: never queued"
    with lab.client("op-bank") as bank:
        asked = bank.cancel(job["id"])
        assert asked["cancel_requested"]
    thread.join(60)
    assert not thread.is_alive()
    (final,) = answer
    assert (final["state"], final["rule"]) == ("cancelled", "job.cancelled")
    with lab.client("auditor") as auditor:
        rules = {e["rule"] for e in auditor.audit_entries(target=f"query:{job['id']}")}
        assert rules == {"job.cancelled"}
        cancels = auditor.audit_entries(action="job.cancel", target=f"job:{job['id']}")
        assert [e["decision"] for e in cancels] == ["allow"]


def test_an_inline_job_whose_server_dies_is_failed_by_the_next(lab: LiveServer) -> None:
    known = _all_ids(lab)
    thread, answer = _submit_in_background(lab)
    job = _running(lab, known)
    lab.kill()  # SIGKILL between the job's creation and its finish: nothing runs at exit
    thread.join(60)
    assert isinstance(answer[0], ConnectionFailed), answer  # no answer came
    lab.start()
    with lab.client("op-bank") as bank:
        failed = bank.wait(job["id"], timeout=30)
        assert (failed["state"], failed["rule"]) == ("failed", "job.interrupted")
    with lab.client("auditor") as auditor:
        entries = auditor.audit_entries(target=f"query:{job['id']}")
        assert [(e["decision"], e["rule"]) for e in entries] == [("deny", "job.interrupted")]
        assert auditor.audit_verify()["ok"]
