"""The bounded request pool (sandbox/api/pool.py): a job's wait holds none of its threads."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import anyio.to_thread

from sandbox.api.pool import bound_threads, wait_for_job
from sandbox.jobs.store import JobState
from sandbox.services import Services
from tests.conftest import build_deployment

SQL = "SELECT industry, count(*) AS n FROM market.enterprises WHERE founded > 1995 GROUP BY 1"


def test_a_waiting_submission_leaves_the_pool_free_and_wakes_when_its_job_ends(
    tmp_path: Path,
) -> None:
    platform, tokens = build_deployment(tmp_path / "home")
    # op-bank's grant on the enterprises is reviewed: the pool's tests watch its run, which
    # a reviewed job hides from its operator by default (tests/api/test_held_timing.py)
    settings = dataclasses.replace(platform.settings, review_timing_hidden=False)
    platform.close()
    services = Services(settings)
    try:
        bank = services.platform.authority.authenticate(tokens["op-bank"])
        # No runner yet: the job stays queued until one starts.
        job = services.desk.submit(
            bank, SQL, purpose=None, fmt="json", rid="wait-1", client="127.0.0.1"
        )
        assert job.state is JobState.QUEUED

        async def scenario() -> tuple[JobState, JobState]:
            bound_threads(1)  # one thread: a wait holding it would block everything else
            early = await wait_for_job(services.runner, job.id, 0.3)
            waiting = asyncio.create_task(wait_for_job(services.runner, job.id, 60))
            await asyncio.sleep(0.3)
            # The only thread is free for other requests while the job still waits.
            assert await asyncio.wait_for(anyio.to_thread.run_sync(lambda: 42), 5) == 42
            assert not waiting.done()
            await anyio.to_thread.run_sync(services.start)
            done = await asyncio.wait_for(waiting, 60)
            return early.state, done.state

        early, done = asyncio.run(scenario())
        assert early is JobState.QUEUED  # the short wait timed out with the job's state
        assert done in (JobState.SUCCEEDED, JobState.AWAITING_REVIEW)
    finally:
        services.stop()


def test_a_small_synchronous_query_runs_at_once_though_its_operator_s_share_is_busy(
    tmp_path: Path,
) -> None:
    platform, tokens = build_deployment(tmp_path / "home")
    settings = dataclasses.replace(platform.settings, job_workers=1, review_timing_hidden=False)
    platform.close()
    services = Services(settings)
    try:
        services.start()
        bank = services.platform.authority.authenticate(tokens["op-bank"])
        desk, store, runner = services.desk, services.store, services.runner
        # A job of the bank's holds its one worker share: claimed by this runner, running.
        queued = store.create(
            operator="op-bank",
            sql=SQL,
            purpose=None,
            fmt="json",
            client=None,
            token_id=bank.token_id,
            datasets=("market.enterprises",),
        )
        assert runner.runner_id is not None
        assert store.claim_job(queued.id, runner.runner_id) is not None

        def submit(n: int, inline: bool, wait_s: float | None = None) -> JobState:
            sql = SQL.replace("1995", str(1990 + n))
            job = desk.submit(
                bank,
                sql,
                purpose=None,
                fmt="json",
                rid=f"r{n}",
                client=None,
                inline=inline,
                wait_s=wait_s,
            )
            return job.state

        # Behind the queue it waits its turn (the share is taken) ...
        assert submit(1, inline=False, wait_s=1.0) is JobState.QUEUED
        # ... a small synchronous query runs now, in this thread, as a job like any other.
        assert submit(2, inline=True) in (JobState.SUCCEEDED, JobState.AWAITING_REVIEW)
    finally:
        services.stop()
