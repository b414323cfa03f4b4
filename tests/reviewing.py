"""Run a query, then release it through the real review flow, in process.

Under a ``reviewed`` grant (the demo's op-bank) exact values leave only after the owning
bureau's recorded approval.  :class:`Reviewing` drives the real job desk over a test's own
platform and query service: the operator's query is submitted as a job, runs and is held
(``awaiting_review``); each bureau owning a reviewed dataset it touches approves it through
the desk (recorded as ``job.review``); the released table, metadata and receipt are what
the operator then fetches.  Under a ``dp`` grant the job simply succeeds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from policies import Actor
from policies.accounts import list_accounts
from sandbox.core.errors import Conflict, EnclaveError, QueryRefused
from sandbox.jobs.desk import JobDesk
from sandbox.jobs.runner import JobRunner
from sandbox.jobs.store import Job, JobStore
from sandbox.platform import Platform
from sandbox.query.service import QueryResult, QueryService

__all__ = ["Reviewing", "reviewing"]


class Reviewing:
    """The job desk of one platform and query service, with a started runner."""

    def __init__(self, platform: Platform, service: QueryService) -> None:
        self.platform = platform
        self.store = JobStore(platform.engine, platform.data_keys)
        self.runner = JobRunner(
            platform, service, self.store, workers=1, result_ttl_s=lambda: 3600.0, poll_s=0.1
        )
        self.desk = JobDesk(platform, service, self.store, self.runner, lambda: platform.settings)

    def submit(self, operator: Actor, sql: str, *, purpose: str | None = None) -> Job:
        """Submit and wait: the job as it stands (``awaiting_review``, ``succeeded``, …)."""
        return self.desk.submit(
            operator, sql, purpose=purpose, fmt="arrow", rid=_rid(), client=None, wait_s=60
        )

    def bureau_of(self, dataset: str) -> Actor:
        """The bureau account whose domains hold ``dataset``."""
        domain = dataset.split(".", 1)[0]
        with self.platform.engine.connect() as conn:
            accounts = list_accounts(conn)
        for account in accounts:
            if account.role.value == "bureau" and domain in account.domains:
                return Actor.of(account)
        raise LookupError(f"no bureau owns {domain}")

    def approve(self, job: Job, reason: str = "checked: aggregates only") -> Job:
        """Every owning bureau approves (each recorded); the job as it ends."""
        for dataset in job.review_datasets:
            job = self.desk.review(
                self.bureau_of(dataset),
                job.id,
                approve=True,
                reason=reason,
                rid=_rid(),
                client=None,
            )
        return job

    def held(self, operator: Actor, sql: str) -> tuple[Job, pa.Table]:
        """The held job and the table its reviewer sees (what approval would release)."""
        job = self.submit(operator, sql)
        if job.state.value != "awaiting_review":
            raise _error(job)
        assert job.state.value == "awaiting_review", job.state
        reviewer = self.bureau_of(job.review_datasets[0])
        shown_job, table = self.desk.review_show(reviewer, job.id, _rid(), None)
        return shown_job, table

    def run(self, operator: Actor, sql: str, *, purpose: str | None = None) -> QueryResult:
        """As :meth:`QueryService.run`, through the review: the released result."""
        job = self.submit(operator, sql, purpose=purpose)
        if job.state.value == "awaiting_review":
            job = self.approve(job)
        if job.state.value != "succeeded":
            raise _error(job)
        job, table = self.desk.result(operator, job.id, "arrow", _rid(), None)
        meta: dict[str, Any] = dict(job.meta or {})
        return QueryResult(table, meta, job.receipt or {})

    def close(self) -> None:
        self.runner.stop()


@contextmanager
def reviewing(platform: Platform, service: QueryService) -> Iterator[Reviewing]:
    desk = Reviewing(platform, service)
    desk.runner.start()
    try:
        yield desk
    finally:
        desk.close()


def _rid() -> str:
    return uuid.uuid4().hex


def _error(job: Job) -> Exception:
    """The error a job that did not succeed stands for (as the client raises it)."""
    message = job.message or f"job {job.id} is {job.state.value}"
    if job.state.value == "refused":
        return QueryRefused(message, rule=job.rule)
    if job.state.value in ("cancelled", "expired", "awaiting_review"):
        return Conflict(message, rule=job.rule or "job.review")
    return EnclaveError(message, rule=job.rule)
