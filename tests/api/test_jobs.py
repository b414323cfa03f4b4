"""Jobs over real HTTP: progress and cancel of a slow query, limits, and restart survival.

The slow query is a join of two synthetic datasets of a test bureau (registered
through the API from uploads) on a key with eight values: 60,000² / 8 pairs.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from sandbox.core.errors import QueryRefused, RateLimited
from tests.api.conftest import (
    LAB_EVENTS,
    SLOW_JOIN,
    LiveServer,
    lab_files,
    register,
    start_lab,
)

QUICK = "SELECT e.bucket, count(*) AS n FROM lab.events e GROUP BY 1"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """A server (one job worker) whose op-bank holds a grant on the lab datasets."""
    root = tmp_path_factory.mktemp("jobs")
    server = start_lab(root, {"SANDBOX_JOB_WORKERS": "1", "SANDBOX_THREADS": "1"})
    try:
        yield server
    finally:
        server.stop()


def approved(lab: LiveServer, client, job: dict) -> dict:
    """The lab grants are reviewed: the lab bureau approves a held job; the job as it ends."""
    assert job["state"] == "awaiting_review", job
    with lab.client("bureau-lab") as bureau:
        bureau.approve(job["id"], "lab test")
    return client.job(job["id"])


def wait_state(client, job_id: str, states: set[str], timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while True:
        job = client.job(job_id)
        if job["state"] in states or time.time() > deadline:
            return job
        time.sleep(0.05)


def test_cancel_a_running_job_with_progress(lab: LiveServer) -> None:
    with lab.client("op-bank") as bank:
        job = bank.submit(SLOW_JOIN)
        assert job["state"] == "queued"
        running = wait_state(bank, job["id"], {"running"})
        assert running["state"] == "running"
        seen = []
        deadline = time.time() + 10
        while time.time() < deadline and not any(p > 0 for p in seen):
            seen.append(bank.job(job["id"])["progress"])
            time.sleep(0.2)
        assert any(p > 0 for p in seen), "progress is published while the query runs"
        cancelled = bank.cancel(job["id"])
        assert cancelled["cancel_requested"]
        final = bank.wait(job["id"], timeout=20)
        assert (final["state"], final["rule"]) == ("cancelled", "job.cancelled")
    with lab.client("auditor") as auditor:
        rules = {e["rule"] for e in auditor.audit_entries(target=f"query:{job['id']}")}
        assert rules == {"job.cancelled"}
        assert auditor.audit_entries(action="job.cancel", actor="op-bank", limit=1)


def test_queued_job_is_cancelled_at_once_and_limits_hold(lab: LiveServer) -> None:
    with lab.client("admin") as admin:
        admin.update_settings(max_jobs_per_operator=2)
    try:
        with lab.client("op-bank") as bank:
            slow = bank.submit(SLOW_JOIN)
            queued = bank.submit(QUICK)
            with pytest.raises(RateLimited) as info:
                bank.submit(QUICK)
            assert info.value.rule == "jobs.concurrency" and info.value.retry_after >= 1
            assert bank.cancel(queued["id"])["state"] == "cancelled"
            bank.cancel(slow["id"])
            assert bank.wait(slow["id"], timeout=20)["state"] == "cancelled"
    finally:
        with lab.client("admin") as admin:
            admin.update_settings(max_jobs_per_operator=8)


def test_request_limits(lab: LiveServer) -> None:
    with lab.client("admin") as admin:
        admin.update_settings(max_sql_length=200, max_body_bytes=4096)
    time.sleep(1.1)  # run-time settings apply within a second
    try:
        with lab.client("op-bank") as bank:
            with pytest.raises(QueryRefused) as info:
                bank.submit(QUICK + " " * 300)
            assert info.value.rule == "guard.sql_length"
            with pytest.raises(QueryRefused) as info:
                bank.submit(QUICK + " " * 300, wait=True)
            assert info.value.rule == "guard.sql_length"
            verdict = bank.explain(QUICK + " " * 300)  # explain honours the limit too
            assert (verdict["accepted"], verdict["rule"]) == (False, "guard.sql_length")
            assert "longer than 200 characters" in verdict["message"]
            assert bank.explain(QUICK)["accepted"]
        big = httpx.post(
            f"{lab.url}/v1/explain",
            headers={"Authorization": f"Bearer {lab.tokens['op-bank']}"},
            json={"sql": "x" * 10_000},
        )
        assert big.status_code == 413 and big.json()["code"] == "request_too_large"
    finally:
        with lab.client("admin") as admin:
            admin.update_settings(max_sql_length=20_000, max_body_bytes=1_048_576)
    # The rate limit: a fresh token, a tiny limit, 429 with Retry-After; recorded once.
    with lab.client("op-planner") as planner:
        token = planner.issue_own_token(days=1, label="rate")["token"]
    with lab.client("admin") as admin:
        admin.update_settings(rate_limit_per_minute=3)
    time.sleep(1.1)
    try:
        codes = [
            httpx.get(f"{lab.url}/v1/me", headers={"Authorization": f"Bearer {token}"})
            for _ in range(5)
        ]
        assert [r.status_code for r in codes][:3] == [200, 200, 200]
        limited = codes[-1]
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["rule"] == "api.rate_limit"
    finally:
        with lab.client("admin") as admin:
            admin.update_settings(rate_limit_per_minute=1200)
    with lab.client("auditor") as auditor:
        refused = auditor.audit_entries(action="api.rate_limit", actor="op-planner")
        assert len(refused) == 1


def test_jobs_survive_a_crash_and_a_shutdown(lab: LiveServer) -> None:
    with lab.client("op-bank") as bank:
        done = approved(lab, bank, bank.submit(QUICK, wait=True))
        assert done["state"] == "succeeded"
        slow = bank.submit(SLOW_JOIN)
        assert wait_state(bank, slow["id"], {"running"})["state"] == "running"
        queued = bank.submit(QUICK.replace("AS n", "AS rows_"), format="csv")
        assert bank.job(queued["id"])["state"] == "queued"  # one worker, busy
    lab.kill()  # SIGKILL: nothing runs at shutdown
    lab.start()
    with lab.client("op-bank") as bank:
        failed = bank.wait(slow["id"], timeout=20)
        assert (failed["state"], failed["rule"]) == ("failed", "job.interrupted")
        held = bank.wait(queued["id"], timeout=20)
        assert approved(lab, bank, held)["state"] == "succeeded"
        assert bank.result(done["id"]).num_rows == 4  # released before the crash, still there
        # A graceful stop interrupts what runs after a grace period, and says so.
        slow = bank.submit(SLOW_JOIN)
        assert wait_state(bank, slow["id"], {"running"})["state"] == "running"
    lab.stop()
    lab.start()
    with lab.client("op-bank") as bank:
        job = bank.job(slow["id"])
        assert (job["state"], job["rule"]) == ("failed", "job.interrupted")
        assert "shut down" in job["message"]
    with lab.client("auditor") as auditor:
        entries = auditor.audit_entries(target=f"query:{slow['id']}")
        assert [e["rule"] for e in entries] == ["job.interrupted"]
        assert auditor.audit_verify()["ok"]


def test_multiple_workers_share_the_home(lab: LiveServer, tmp_path: Path) -> None:
    """Two server processes: queries on both, and a registration while they serve."""
    lab.stop()
    lab.start(workers=2)
    try:
        with lab.client("op-bank") as bank:
            variants = [QUICK.replace("AS n", f"AS n{i}") for i in range(6)]  # each runs
            jobs = [approved(lab, bank, bank.submit(q, wait=True)) for q in variants]
            assert {j["state"] for j in jobs} == {"succeeded"}
            with lab.client("bureau-lab") as bureau:
                events, _ = lab_files(tmp_path, rows=1000)
                upload = bureau.upload(events, domain="lab")
                reg = register(lab, "bureau-lab", LAB_EVENTS, upload_id=upload["upload_id"])
                assert reg["replaced"] and reg["dataset"]["row_count"] == 1000
            after = [approved(lab, bank, bank.submit(q, wait=True)) for q in variants]
            counts = {n for j in after for n in bank.result(j["id"]).column(1).to_pylist()}
            assert counts == {250}
    finally:
        lab.stop()
        lab.start()
