"""Operators take turns for the job workers: one operator's backlog does not hold up others.

The store's choice (round robin across operators, by who was served least recently) is
checked claim by claim; concurrent claimers never take one job twice; and over a real
server with two workers, a job one operator submits after another's eight starts
before most of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.core.db import open_control_db
from sandbox.jobs.store import JobState, JobStore, StoredResult
from tests.api.conftest import (
    FAST_PUBLICITY,
    LAB_EVENTS,
    LAB_PAIRS,
    LiveServer,
    deployment,
    held_job,
    lab_files,
    register,
)
from tests.enrolling import enrol


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'control.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = open_control_db(url)
    yield JobStore(engine)
    engine.dispose()


def submit(store: JobStore, operator: str, n: int = 1) -> list[str]:
    return [
        store.create(operator=operator, sql="SELECT 1", purpose=None, fmt="json", client=None).id
        for _ in range(n)
    ]


def finish(store: JobStore, job_id: str) -> None:
    store.finish(job_id, JobState.SUCCEEDED, result=StoredResult("released", b"x", None, 0, 0, 0))


def test_claims_take_turns_across_operators(store: JobStore) -> None:
    runner = store.runners.register()
    a = submit(store, "op-a", 8)
    b = submit(store, "op-b")
    c = submit(store, "op-c", 2)
    order = []
    while (job := store.claim(runner)) is not None:
        order.append(job.id)
        finish(store, job.id)
    # Oldest first among operators never served, then whoever waited longest since.
    assert order[:5] == [a[0], b[0], c[0], a[1], c[1]]
    assert order[5:] == a[2:]
    # A newcomer is served before the operator with the backlog.
    more_a = submit(store, "op-a", 3)
    d = submit(store, "op-d")
    first, second = store.claim(runner), store.claim(runner)
    assert first is not None and second is not None
    assert (first.id, second.id) == (d[0], more_a[0])


def test_an_operator_served_while_others_wait_goes_to_the_back(store: JobStore) -> None:
    runner = store.runners.register()
    a = submit(store, "op-a", 4)
    first = store.claim(runner)
    assert first is not None and first.id == a[0]
    b = submit(store, "op-b", 2)
    # A's first job still runs; B was never served: B goes next, then A, then B.
    claimed = [store.claim(runner) for _ in range(3)]
    assert [j.id for j in claimed if j is not None] == [b[0], a[1], b[1]]


def test_one_operator_never_holds_every_worker(store: JobStore) -> None:
    """With a cap of one running job per operator, a second worker stays free for others."""
    runner = store.runners.register()
    a = submit(store, "op-a", 3)
    first = store.claim(runner, per_operator=1)
    assert first is not None and first.id == a[0]
    # op-a's backlog waits while its job runs, even with a worker idle and nobody else queued.
    assert store.claim(runner, per_operator=1) is None
    b = submit(store, "op-b")
    second = store.claim(runner, per_operator=1)
    assert second is not None and second.id == b[0]
    finish(store, first.id)
    third = store.claim(runner, per_operator=1)
    assert third is not None and third.id == a[1]
    # The cap counts this runner's jobs: another process's workers take their own turn.
    other = store.runners.register()
    fourth = store.claim(other, per_operator=1)
    assert fourth is not None and fourth.id == a[2]
    # Without a cap, the old behaviour: an operator may take every worker.
    c = submit(store, "op-c", 2)
    assert [store.claim(runner).id, store.claim(runner).id] == c  # type: ignore[union-attr]


def test_held_jobs_have_a_lane_of_their_own(store: JobStore) -> None:
    """Jobs bound for review run on their own workers (held_view): neither lane claims the
    other's jobs, counts them against an operator's cap, or reads their starts for turns."""
    runner = store.runners.register()

    h = [held_job(store, "op-a", "SELECT 2"), held_job(store, "op-a", "SELECT 2")]
    assert store.claim(runner, per_operator=1) is None, "the general lane leaves held jobs"
    running = store.claim(runner, held=True)
    assert running is not None and running.id == h[0] and running.prepaid == 0.0
    # op-a's held run counts nothing against its cap for its other jobs
    a = submit(store, "op-a", 2)
    first = store.claim(runner, per_operator=1)
    assert first is not None and first.id == a[0]
    assert store.claim(runner, per_operator=1) is None  # its visible job does count
    # turns in one lane never read the other's starts: op-b, never served in the general
    # lane, and op-a, served in it, take the held lane in the order of their held jobs
    hb = held_job(store, "op-b", "SELECT 2")
    second = store.claim(runner, held=True)
    assert second is not None and second.id == hb, "op-a was served in this lane"
    third = store.claim(runner, held=True)
    assert third is not None and third.id == h[1]
    assert store.claim(runner, held=True) is None
    # op-c, just served in the general lane, still goes first in the held lane with the
    # older held job (read across lanes, op-d, never served at all, would go first)
    hc, hd = held_job(store, "op-c", "SELECT 2"), held_job(store, "op-d", "SELECT 2")
    c = submit(store, "op-c")
    assert store.claim(runner).id == c[0]  # type: ignore[union-attr]
    assert [store.claim(runner, held=True).id for _ in "cd"] == [hc, hd]  # type: ignore[union-attr]


def test_the_runner_caps_each_operator_below_its_workers() -> None:
    """The default cap: one less than the workers (at least one); the setting overrides."""
    from sandbox.jobs.runner import JobRunner

    def cap(workers: int, per_operator: int = 0) -> int:
        runner = JobRunner(
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            workers=workers,
            result_ttl_s=lambda: 1.0,
            per_operator=per_operator,
        )
        return runner.per_operator

    assert [cap(1), cap(2), cap(4), cap(4, per_operator=4)] == [1, 1, 3, 4]


def test_concurrent_claimers_never_share_a_job(store: JobStore) -> None:
    for operator in ("op-a", "op-b", "op-c"):
        submit(store, operator, 10)
    runners = [store.runners.register() for _ in range(6)]
    taken: list[str] = []
    lock = threading.Lock()

    def work(runner: str) -> None:
        while (job := store.claim(runner)) is not None:
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=work, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(taken) == 30 and len(set(taken)) == 30
    assert not store.list_jobs(states=[JobState.QUEUED])


SLOW = (
    "SELECT e.bucket, count(*) AS n FROM lab.events e JOIN lab.pairs p ON e.key = p.key "
    "WHERE e.bucket <> p.bucket GROUP BY 1"
)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_late_operator_starts_before_most_of_a_backlog(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tokens = deployment(home)
    # the lab's joins are reviewed; the queue's order is read off their start times, which
    # a reviewed job hides from its operator by default (tests/api/test_held_timing.py)
    env = {
        "SANDBOX_JOB_WORKERS": "2",
        "SANDBOX_THREADS": "1",
        "SANDBOX_REVIEW_TIMING_HIDDEN": "0",
        **FAST_PUBLICITY,
    }
    server = LiveServer(home, tokens, env=env).start()
    try:
        with server.client("admin") as admin:
            admin.create_account(
                name="bureau-lab", role="bureau", organisation="Lab", domains=["lab"]
            )
        server.tokens["bureau-lab"] = enrol(server.url, tokens["admin"], home, "bureau-lab")
        events, pairs = lab_files(tmp_path, rows=6_000)
        until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        with server.client("bureau-lab") as bureau:
            for toml, path in ((LAB_EVENTS, events), (LAB_PAIRS, pairs)):
                upload = bureau.upload(path, domain="lab")
                register(server, "bureau-lab", toml, upload_id=upload["upload_id"])
                for operator in ("op-bank", "op-planner"):
                    bureau.issue_grant(
                        dataset=toml.split('id = "')[1].split('"')[0],
                        operator=operator,
                        purpose_code="lab",
                        purpose_text="fairness test",
                        valid_until=until,
                        max_level="L2",
                        # A join on a non-entity key: exact, held (dp joins only on keys).
                        release_mode="reviewed",
                    )
        with server.client("op-bank") as bank, server.client("op-planner") as planner:
            started = time.monotonic()
            backlog = [bank.submit(SLOW)["id"] for _ in range(8)]
            late = planner.submit(SLOW)["id"]
            jobs = {}
            for job_id in [*backlog, late]:
                client = planner if job_id == late else bank
                jobs[job_id] = client.wait(job_id, timeout=300)
            elapsed = time.monotonic() - started
        assert all(j["state"] == "awaiting_review" for j in jobs.values()), jobs  # all ran
        late_start = _moment(jobs[late]["started_at"])
        before = [j for j in backlog if _moment(jobs[j]["started_at"]) < late_start]
        # Two workers: the two of the backlog running when the late job came, at most one
        # more that started as the late job was being queued; never most of the eight.
        assert len(before) <= 3, (len(before), elapsed)
    finally:
        server.stop()
