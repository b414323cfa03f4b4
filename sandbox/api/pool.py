"""Blocking request work in a bounded pool; waiting for a job on the event loop.

Routes and dependencies declared with ``def`` run in anyio's default thread pool
(40 threads unless told otherwise).  Every one of them does DuckDB or SQLite work
under the GIL, so 40 of them at once only queue for the same cores and stretch every
request's latency; :func:`bound_threads` sizes the pool from the ``http_threads``
setting instead.  A request that waits (``POST /v1/jobs?wait=true``) must then not
hold one of those few threads while its job runs: :func:`wait_for_job` waits on the
event loop and borrows a thread only to read the job's state.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio.to_thread

from sandbox.jobs.runner import JobRunner
from sandbox.jobs.store import ACTIVE_STATES, Job

__all__ = ["bound_threads", "wait_for_job"]

POLL_S = 0.25
"""How often a wait reads the job's state (a finish in another process is seen then)."""


def bound_threads(threads: int) -> None:
    """Size the default thread pool of the running event loop (call from the lifespan)."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = threads


async def wait_for_job(runner: JobRunner, job_id: str, timeout_s: float) -> Job:
    """The job once it left ``queued``/``running``, or as it is after ``timeout_s``.

    A finish in this process wakes the wait at once: its watcher is registered before
    the state is read, so a finish in between is not missed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        woken = asyncio.Event()

        def wake(woken: asyncio.Event = woken) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(woken.set)

        unwatch = runner.watch(wake)
        try:
            job = await anyio.to_thread.run_sync(runner.store.get, job_id)
            remaining = deadline - loop.time()
            if job.state not in ACTIVE_STATES or remaining <= 0:
                return job
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), min(POLL_S, remaining))
        finally:
            unwatch()
