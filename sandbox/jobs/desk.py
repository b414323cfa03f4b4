# Over 400 lines: each act on a job is authorized and audited alike, through shared helpers.
"""What operators and bureaus do with jobs: submit, watch, cancel, fetch, review.

Each act is authorized by the decision API and audited:

- **submit**: the query is checked at once (authorization, guard, budget) and a
  refusal is recorded and returned with its rule; an accepted job is recorded
  once, when it runs (``dataset.query``, target ``query:JOB``, request id = job id).
- **status and list** of one's own jobs are not recorded when allowed (polling would
  flood the trail with entries that release nothing); a denial is.
- **cancel** (``job.cancel``), **result** (``result.read``), **receipt**
  (``receipt.read``) and every **review** act (``job.review``) are recorded.

Review: a job whose grant requires review stops in ``awaiting_review`` holding its
desensitized result.  Each bureau owning a dataset that needs review approves or
rejects it (with a reason).  One rejection refuses the job; when every such
dataset is approved the result is released: re-authorized, ε spent, usage
counted, audit entry durable and receipt signed (:meth:`QueryService.release_held`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from policies import Actor, Decision, Role, Target
from sandbox.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    QueryRefused,
    RateLimited,
    SandboxError,
    Withheld,
)
from sandbox.core.settings import Settings
from sandbox.core.timeutil import to_rfc3339
from sandbox.core.wording import counted
from sandbox.jobs.acting import job_actor
from sandbox.jobs.held_view import seen_by_operator
from sandbox.jobs.runner import Hint, JobRunner, arrow_bytes
from sandbox.jobs.states import ACTIVE_STATES
from sandbox.jobs.store import Job, JobState, JobStore, StoredResult
from sandbox.platform import Platform
from sandbox.query.release import result_sha256
from sandbox.query.service import Held, QueryService

__all__ = ["FORMATS", "JobDesk", "read_table"]

FORMATS = ("json", "csv", "parquet", "arrow")


def _no_job(job_id: str, rule: str, reason: str) -> Withheld:
    """The answer for a job that is not the caller's: the very one for a missing job."""
    return Withheld(f"no job {job_id}", rule="job.unknown", actual_rule=rule, actual_reason=reason)


def read_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.BufferReader(data)).read_all()


class JobDesk:
    """Authorized, audited acts on jobs, for one server process."""

    def __init__(
        self,
        platform: Platform,
        service: QueryService,
        store: JobStore,
        runner: JobRunner,
        settings: Callable[[], Settings],
    ) -> None:
        self.platform = platform
        self.service = service
        self.store = store
        self.runner = runner
        self.settings = settings

    # -- authorization helpers -------------------------------------------------------------

    def _require(
        self, actor: Actor, action: str, target: Target, rid: str | None, client: str | None
    ) -> Decision:
        authority = self.platform.authority
        decision = authority.decide(actor, action, target, audit=False)
        if not decision.allowed:
            authority.record_decision(actor, decision, request_id=rid, client=client)
            raise decision.error()
        return decision

    def _record(
        self,
        actor: Actor,
        decision: Decision,
        details: dict[str, Any],
        rid: str | None,
        client: str | None,
        *,
        action: str | None = None,
        target: str | None = None,
        allowed: bool = True,
        rule: str | None = None,
    ) -> None:
        shown = replace(
            decision,
            action=action or decision.action,
            target=target or decision.target,
            allowed=allowed,
            rule=rule or decision.rule,
        )
        self.platform.authority.record_decision(
            actor, shown, details=details, request_id=rid, client=client
        )

    def _own(
        self, actor: Actor, job_id: str, action: str, rid: str | None, client: str | None
    ) -> tuple[Job, Decision]:
        """The job, if ``actor`` may ``action`` it (an operator, its own jobs only).

        Another operator's job is answered exactly as a job that does not exist (404
        ``job.unknown``), so job ids tell nothing; the audit records ``owner.mismatch``.
        """
        try:
            job = self.store.get(job_id)
        except NotFound:
            # Same answer whoever asks: authorize on the asker's own account first.
            self._require(actor, action, Target.account(actor.name), rid, client)
            raise
        authority = self.platform.authority
        decision = authority.decide(actor, action, Target.account(job.operator), audit=False)
        if not decision.allowed:
            authority.record_decision(actor, decision, request_id=rid, client=client)
            if decision.rule == "owner.mismatch":
                raise _no_job(job_id, decision.rule, decision.reason)
            raise decision.error()
        return job, decision

    # -- operator --------------------------------------------------------------------------

    def submit(
        self,
        actor: Actor,
        sql: str,
        *,
        purpose: str | None,
        fmt: str,
        rid: str,
        client: str | None,
        wait_s: float | None = None,
        epsilon: float | None = None,
        inline: bool = False,
    ) -> Job:
        """Check and queue a job; with ``wait_s``, wait that long for its outcome.

        ``epsilon``: the ε the operator chose (checked now and again when the job runs).
        ``inline``: the caller waits for the outcome; if the query reads at most
        ``sync_inline_rows`` rows (its cost bound), it runs now in the calling thread
        rather than behind the queue (where one operator's large job would hold it up).
        """
        limits = self.settings()
        if len(sql) > limits.max_sql_length:
            exc: SandboxError = QueryRefused(
                f"the SQL text is longer than {limits.max_sql_length} characters",
                rule="guard.sql_length",
            )
            self.service.record_refusal(actor, rid, client, sql[:100], exc, 0.0)
            raise exc
        if actor.role is Role.OPERATOR:
            self._within_concurrency(actor, sql, rid, client, review_bound=False)
        auth = self.service.check(
            actor, sql, purpose=purpose, request_id=rid, client=client, epsilon=epsilon
        )
        # A result held for review: never run inline nor waited for, and seen as one state
        # until it ends (held_view), so how long it ran tells its operator nothing.
        bound = auth.decision.review_datasets if auth.decision.review_required else []
        if bound and (not limits.review_timing_hidden or self.service.released_before(actor, auth)):
            bound = []  # shown as it runs (a repeat is answered from the release cache)
        if actor.role is Role.OPERATOR and bound:
            self._within_concurrency(actor, sql, rid, client, review_bound=True)
        small = auth.cost is not None and auth.cost.rows_total <= limits.sync_inline_rows
        # Run here (claimed by this process's runner, never queued): its row is written
        # with its charge, and it ends with its release.  No runner yet (before start):
        # queued, and written before anyone is told of it.
        here = self.runner.runner_id if inline and small and not bound else None
        new = self.store.new(
            operator=actor.name,
            sql=sql,
            purpose=purpose,
            fmt=fmt,
            client=client,
            token_id=actor.token_id,
            datasets=auth.prepared.parsed.datasets,
            epsilon=epsilon,
            runner=here,
            review_datasets=bound,
            prepaid=auth.prepared.epsilon if bound else None,
        )
        if here is not None:
            return self.runner.run_inline(new, Hint(actor, auth))
        if bound:
            # Charged now, its row in the charge's transaction: its run waits for the held
            # runs before it, and a charge then would tell when they ended (held_view).
            prepay = self.service.prepay
            prepay(actor, sql, auth, rid=rid, ref=new.job.id, client=client, also=new.insert)
            job = new.job
        else:
            job = self.store.create_new(new)
        self.runner.notify(job.id, Hint(actor, auth), held=bool(bound))
        if wait_s and not bound:
            job = self.runner.wait(job.id, min(wait_s, limits.sync_wait_s))
        return seen_by_operator(job)

    def _within_concurrency(
        self, actor: Actor, sql: str, rid: str, client: str | None, *, review_bound: bool
    ) -> None:
        """Refuse a submission over the operator's concurrent-jobs limit: its queued and
        running jobs, or (``review_bound``) apart its jobs awaiting review as it sees them
        submitted within the last ``query_timeout_s`` (while one may still run: whether
        it runs or is held is what it must not tell, and a held job may wait days)."""
        settings = self.settings()
        limit = settings.max_jobs_per_operator
        since = None
        if review_bound:
            since = datetime.now(UTC) - timedelta(seconds=settings.query_timeout_s)
        if self.store.active_count(actor.name, bound_since=since) < limit:
            return
        what = "queued or running"
        if review_bound:
            what = f"submitted for review within {settings.query_timeout_s:g} s"
        limited = RateLimited(
            f"at most {counted(limit, 'job')} may be {what} at once", rule="jobs.concurrency"
        )
        limited.retry_after = 2  # type: ignore[attr-defined]
        self.service.record_refusal(actor, rid, client, sql, limited, 0.0)
        raise limited

    def get(self, actor: Actor, job_id: str, rid: str | None, client: str | None) -> Job:
        """The job as ``actor`` sees it (an operator: ``held_view.seen_by_operator``)."""
        job = self._own(actor, job_id, "job.read", rid, client)[0]
        return seen_by_operator(job) if actor.role is Role.OPERATOR else job

    def list_jobs(
        self,
        actor: Actor,
        *,
        states: list[JobState] | None,
        limit: int,
        offset: int,
        rid: str | None,
        client: str | None,
    ) -> list[Job]:
        self._require(actor, "job.read", Target.account(actor.name), rid, client)
        found = self.store.list_jobs(
            operator=actor.name, states=states, limit=limit, offset=offset, seen=True
        )
        return [seen_by_operator(job) for job in found]

    def cancel(self, actor: Actor, job_id: str, rid: str | None, client: str | None) -> Job:
        job, decision = self._own(actor, job_id, "job.read", rid, client)
        try:
            cancelled = self.store.cancel(job_id)
        except SandboxError as exc:
            self._record(
                actor,
                decision,
                {"job": job_id, "reason": exc.message},
                rid,
                client,
                action="job.cancel",
                target=f"job:{job_id}",
                allowed=False,
                rule=exc.rule,
            )
            raise
        if job.state is JobState.RUNNING:  # a review-bound one was cancelled at once
            self.runner.cancel_running(job_id)
        self._record(
            actor,
            decision,
            {"job": job_id, "state_before": job.state.value},
            rid,
            client,
            action="job.cancel",
            target=f"job:{job_id}",
        )
        if job.state is JobState.QUEUED and job.prepaid is not None:
            # charged when submitted, never run: its charge's entry (a run's is its own)
            self.runner.record_end(job, "job.cancelled", "cancelled by its operator")
        return seen_by_operator(cancelled)

    def result(
        self, actor: Actor, job_id: str, fmt: str, rid: str | None, client: str | None
    ) -> tuple[Job, pa.Table]:
        """A succeeded job's released table (recorded as ``result.read``)."""
        job, decision = self._own(actor, job_id, "result.read", rid, client)
        stored = self.store.result(job_id) if job.state is JobState.SUCCEEDED else None
        if stored is None or stored.kind != "released":
            rule = "job.expired" if job.state is JobState.EXPIRED else "job.no_result"
            self._record(
                actor,
                decision,
                {"job": job_id, "state": job.state.value},
                rid,
                client,
                allowed=False,
                rule=rule,
            )
            seen = seen_by_operator(job).state  # named as the operator sees it
            raise Conflict(f"job {job_id} is {seen.value}: no result to fetch", rule=rule)
        details: dict[str, Any] = {"job": job_id, "format": fmt}
        if job.meta:
            details["result_sha256"] = job.meta.get("result_sha256")
        self._record(actor, decision, details, rid, client)
        return job, read_table(stored.data)

    def just_released(self, job: Job) -> pa.Table:
        """The table a submission just released (``wait=true``), without a second entry."""
        stored = self.store.result(job.id)
        if stored is None or stored.kind != "released":
            raise Conflict(f"job {job.id} has no result", rule="job.no_result")
        return read_table(stored.data)

    def receipt(
        self, actor: Actor, job_id: str, rid: str | None, client: str | None
    ) -> dict[str, Any]:
        job, decision = self._own(actor, job_id, "receipt.read", rid, client)
        if job.receipt is None:
            raise Conflict(f"job {job_id} has no receipt (nothing released)", rule="job.no_result")
        self._record(actor, decision, {"job": job_id}, rid, client)
        return job.receipt

    # -- bureau: review --------------------------------------------------------------------

    def _reviewable(self, actor: Actor, job: Job) -> list[tuple[str, Decision]]:
        """The datasets of ``job`` awaiting this bureau's review, with the allowing decision."""
        out = []
        for dataset in job.review_datasets:
            if any(r["dataset"] == dataset for r in job.reviews):
                continue
            decision = self.platform.authority.decide(
                actor, "job.review", Target.dataset(dataset), audit=False
            )
            if decision.allowed:
                out.append((dataset, decision))
        return out

    def review_queue(self, actor: Actor, rid: str | None, client: str | None) -> list[Job]:
        """Jobs with a dataset awaiting this bureau's review (decided per dataset)."""
        entry = {
            "actor": actor.name,
            "role": actor.role.value,
            "action": "job.review",
            "request_id": rid,
            "client": client,
        }
        if actor.role is not Role.BUREAU:
            self.platform.record(
                **entry,
                target="platform",
                decision="deny",
                rule="role.not_permitted",
                details={"reason": "only a bureau reviews jobs", **actor.audit_details()},
            )
            raise Forbidden("only a bureau reviews jobs", rule="role.not_permitted")
        # with the review-bound jobs still computing (held_view): listed from submission
        waiting = self.store.list_jobs(states=[JobState.AWAITING_REVIEW], limit=1000)
        waiting += self.store.list_jobs(states=list(ACTIVE_STATES), review_bound=True, limit=1000)
        queue = sorted(
            (job for job in waiting if self._reviewable(actor, job)),
            key=lambda job: job.created_at,
            reverse=True,
        )
        self.platform.record(
            **entry,
            target="domain:" + ",".join(actor.domains),
            decision="allow",
            rule="allow.role",
            details={"queue": len(queue), **actor.audit_details()},
        )
        return queue

    def _review_target(
        self, actor: Actor, job_id: str, rid: str | None, client: str | None
    ) -> tuple[Job, list[tuple[str, Decision]]]:
        """The job and this bureau's datasets in it awaiting review.

        Only a bureau reviews (``role.not_permitted`` before any lookup); a job touching
        none of its domains is answered as one that does not exist (404 ``job.unknown``,
        the real rule audited).
        """
        if actor.role is not Role.BUREAU:
            self.platform.record(
                actor=actor.name,
                role=actor.role.value,
                action="job.review",
                target=f"job:{job_id}",
                decision="deny",
                rule="role.not_permitted",
                request_id=rid,
                client=client,
                details={"reason": "only a bureau reviews jobs", **actor.audit_details()},
            )
            raise Forbidden("only a bureau reviews jobs", rule="role.not_permitted")
        job = self.store.get(job_id)
        if job.review_bound and job.state in ACTIVE_STATES:
            # listed from submission (review_queue): its result may still be computed
            job = self.runner.wait(job_id, self.settings().sync_wait_s)
            if job.state in ACTIVE_STATES and self._reviewable(actor, job):
                raise Conflict(
                    f"job {job_id} is still being computed: nothing is held to review yet; "
                    "open it again in a moment",
                    rule="review.computing",
                )
        mine = self._reviewable(actor, job) if job.state is JobState.AWAITING_REVIEW else []
        if not mine:
            touched = job.review_datasets or job.datasets
            decisions = [
                self.platform.authority.decide(actor, "job.review", Target.dataset(d), audit=False)
                for d in touched
            ]
            decision = next(
                (d for d in decisions if d.allowed),
                decisions[0] if decisions else None,
            )
            if decision is None:  # a job that names no dataset: nothing to review anywhere
                raise _no_job(job_id, "review.nothing_pending", "the job names no dataset")
            if decision.allowed:  # allowed in principle, but nothing of this bureau waits
                self._record(
                    actor,
                    decision,
                    {"job": job_id, "state": job.state.value},
                    rid,
                    client,
                    allowed=False,
                    rule="review.nothing_pending",
                )
                raise Conflict(
                    f"job {job_id} has nothing awaiting your review ({job.state.value})",
                    rule="review.nothing_pending",
                )
            self.platform.authority.record_decision(actor, decision, request_id=rid, client=client)
            raise _no_job(job_id, decision.rule, decision.reason)
        return job, mine

    def review_show(
        self, actor: Actor, job_id: str, rid: str | None, client: str | None
    ) -> tuple[Job, pa.Table]:
        """The desensitized result that approval would release (recorded: the bureau saw it)."""
        job, mine = self._review_target(actor, job_id, rid, client)
        stored = self.store.result(job_id)
        if stored is None:
            raise Conflict(f"job {job_id} holds no result", rule="job.no_result")
        table = read_table(stored.data)
        details = {"job": job_id, "result_sha256": result_sha256(table)}
        self._record(actor, mine[0][1], details, rid, client)
        return job, table

    def review(
        self,
        actor: Actor,
        job_id: str,
        *,
        approve: bool,
        reason: str,
        rid: str | None,
        client: str | None,
    ) -> Job:
        """Approve or reject for this bureau's datasets; release when all approved."""
        job, mine = self._review_target(actor, job_id, rid, client)
        at = to_rfc3339(datetime.now(UTC))
        verdict = "approve" if approve else "reject"
        for dataset, _ in mine:
            job = self.store.add_review(
                job_id,
                {
                    "dataset": dataset,
                    "by": actor.name,
                    "verdict": verdict,
                    "reason": reason,
                    "at": at,
                },
            )
        self._record(
            actor,
            mine[0][1],
            {"job": job_id, "verdict": verdict, "reason": reason, "datasets": [d for d, _ in mine]},
            rid,
            client,
            target=f"job:{job_id}",
            allowed=approve,
            rule="review.approved" if approve else "review.rejected",
        )
        if not approve:
            refused = self.store.finish(
                job_id,
                JobState.REFUSED,
                rule="review.rejected",
                message=f"rejected by {actor.name}: {reason}",
                expected=[JobState.AWAITING_REVIEW],
            )
            return refused or self.store.get(job_id)
        approved = {r["dataset"] for r in job.reviews if r["verdict"] == "approve"}
        if not set(job.review_datasets) <= approved:
            return job  # another bureau's review is still due
        return self._release(job)

    def _release(self, job: Job) -> Job:
        """Every review approved: release the held result (the job is ``running`` meanwhile)."""
        stored = self.store.result(job.id)
        if stored is None or not self.store.begin_release(job.id, self.runner.runner_id):
            raise Conflict(f"job {job.id} changed meanwhile; look at it again", rule="job.moved")
        try:
            # Like a run, a release acts with the submitting token: revoked, nothing leaves.
            operator = job_actor(self.platform.engine, job)
            held = Held(
                read_table(stored.data),
                stored.groups_suppressed,
                stored.epsilon,
                stored.cache_key or "",
                stored.cpu_ms,
                job.meta or {},
            )
            result = self.service.release_held(
                operator,
                job.sql,
                held,
                purpose=job.purpose,
                request_id=job.id,
                client=job.client,
                review=job.reviews,
            )
        except SandboxError as exc:
            # As a run ends (runner.py): a timeout or the enclave's limits (408) failed,
            # other 4xx were refused; an approved held failure ends as it would have.
            refused = 400 <= exc.status < 500 and exc.status != 408
            state = JobState.REFUSED if refused else JobState.FAILED
            ended = self.store.finish(job.id, state, rule=exc.rule or exc.code, message=exc.message)
            return ended or self.store.get(job.id)
        released = self.store.finish(
            job.id,
            JobState.SUCCEEDED,
            meta={**(job.meta or {}), **result.meta},
            receipt=result.receipt,
            result=StoredResult("released", arrow_bytes(result.table), None, 0, 0.0, 0),
            ttl_s=self.settings().result_ttl_s,
        )
        return released or self.store.get(job.id)
