# Over 400 lines: one pool's life (claim, run, cancel, recover, monitor) shares its slots and locks.
"""The bounded worker pool that runs jobs, and what happens to jobs when a server stops.

Each server process runs one :class:`JobRunner`: ``workers`` threads claim queued
jobs from the control-plane database (any process may claim any job), run them
through :meth:`sandbox.query.service.QueryService.run_job` inside a
:class:`~sandbox.enclave.shared.JobSlot`, and store the outcome.  A monitor thread
publishes progress, forwards cancellations (a cancel may arrive at any process),
beats the runner's heartbeat, deletes results past their retention, and fails the
running jobs of runners that died.

Restart behaviour: queued jobs stay queued and run when any server is up; a job
that was running when its process stopped is marked ``failed`` with rule
``job.interrupted`` (and an audit entry), at once on a graceful shutdown (after a
grace period) and otherwise as soon as another runner notices the dead process
(same host: at its next start or within seconds; another host: when the heartbeat
is older than ``stale_after_s``).  Released results and results held for review
stay in the database and remain retrievable until they expire.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from sqlalchemy.engine import Connection

from policies import Actor
from sandbox.core.errors import EnclaveError, SandboxError
from sandbox.enclave.shared import JobSlot, job_slot
from sandbox.jobs.acting import job_actor, token_details
from sandbox.jobs.store import ACTIVE_STATES, Job, JobState, JobStore, NewJob, StoredResult
from sandbox.platform import Platform
from sandbox.query.held_failure import failure_table
from sandbox.query.service import Authorized, Held, QueryResult, QueryService

__all__ = ["Hint", "JobRunner", "arrow_bytes"]

log = logging.getLogger("sandbox.jobs.store")

CANCELLED = ("job.cancelled", "cancelled by its operator")
HELD_VISIBLE = frozenset(
    {"request_id", "k", "epsilon", "datasets", "review_datasets", "columns", "query_sha256"}
)
"""What a job awaiting review shows of its held result's metadata: nothing data-dependent."""
HINT_S = 2.0
"""How long a submission's check may stand in for the run's own (seconds)."""
INTERNAL = ("job.internal", "internal error")
INTERRUPTED = ("job.interrupted", "the server process running the job stopped; submit it again")
SHUTDOWN = ("job.interrupted", "the server shut down while the job ran; submit it again")
UNRECORDED = ("job.interrupted", "the job's end could not be recorded; submit it again")


def arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@dataclass(frozen=True)
class Hint:
    """What the process that accepted a job already knows: who, and its check."""

    actor: Actor
    authorized: Authorized


class JobRunner:
    """``workers`` threads running jobs for one server process, plus a monitor thread."""

    def __init__(
        self,
        platform: Platform,
        service: QueryService,
        store: JobStore,
        *,
        workers: int,
        result_ttl_s: Callable[[], float],
        poll_s: float = 1.0,
        monitor_s: float = 0.5,
        stale_after_s: float = 30.0,
        per_operator: int = 0,
        held_workers: int = 1,
    ) -> None:
        self.platform = platform
        self.service = service
        self.store = store
        self.workers = max(1, workers)
        #: Jobs of one operator running at once here (0: one less than the workers, min 1).
        self.per_operator = per_operator or max(1, self.workers - 1)
        #: Threads of their own for the jobs bound for review (held_view): a held run's
        #: length then moves nothing its operator sees (no other job of its waits on it).
        self.held_workers = max(1, held_workers)
        self.result_ttl_s = result_ttl_s
        self.poll_s = poll_s
        self.monitor_s = monitor_s
        self.stale_after_s = stale_after_s
        self.runner_id: str | None = None
        self._wake = threading.Condition()  # the general lane's workers wait on it
        self._wake_held = threading.Condition()  # the held lane's
        self._done = threading.Condition()
        self._slots: dict[str, JobSlot] = {}
        self._slots_lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._hints: dict[str, tuple[float, Hint | None]] = {}
        # notifications so far, per lane: a worker waits only if none came meanwhile
        self._queued = {False: 0, True: 0}
        self._finished = 0
        self._watchers: list[Callable[[], None]] = []  # see watch(); under _done

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.runner_id = self.store.runners.register()
        self.recover()
        self._expire()
        lanes = [(False, n, "job-worker") for n in range(self.workers)]
        lanes += [(True, n, "held-job-worker") for n in range(self.held_workers)]
        for held, n, name in lanes:
            thread = threading.Thread(
                target=self._work, args=(held,), name=f"{name}-{n}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        monitor = threading.Thread(target=self._monitor, name="job-monitor", daemon=True)
        monitor.start()
        self._threads.append(monitor)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop claiming; give running jobs ``grace_s``, then interrupt them (failed)."""
        self._stopping.set()
        for wake in (self._wake, self._wake_held):
            with wake:
                wake.notify_all()
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._slots_lock:
            for slot in self._slots.values():
                slot.cancel(SHUTDOWN)
        for thread in self._threads:
            thread.join(10)
        if self.runner_id is not None:
            for job in self.store.orphaned([self.runner_id]):
                self._interrupt(job, SHUTDOWN)
            self.store.runners.stop(self.runner_id)

    def notify(
        self, job_id: str | None = None, hint: Hint | None = None, *, held: bool = False
    ) -> None:
        """A job was queued in this process: wake one worker of its lane now (``held``:
        a job bound for review).

        With a ``hint`` (the submitting actor and what its check produced), a worker of
        this process that claims the job within :data:`HINT_S` skips reading the account
        and checking the query again.  Which job a worker claims is the store's fair
        choice (:meth:`JobStore.claim`), never the order of notifications.
        """
        with self._wake:
            if job_id is not None:
                self._hints[job_id] = (time.monotonic(), hint)
        wake = self._wake_held if held else self._wake
        with wake:
            self._queued[held] += 1
            wake.notify()

    def wait(self, job_id: str, timeout_s: float) -> Job:
        """The job once it left ``queued``/``running``, or as it is after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self._finished  # read before the job: a finish after it is not missed
            job = self.store.get(job_id)
            remaining = deadline - time.monotonic()
            if job.state not in ACTIVE_STATES or remaining <= 0:
                return job
            with self._done:
                if self._finished == seen:
                    self._done.wait(min(0.25, remaining))

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (from a worker thread) whenever a job ends here; returns the unwatch."""
        with self._done:
            self._watchers.append(wake)

        def unwatch() -> None:
            with self._done:
                self._watchers.remove(wake)

        return unwatch

    def run_inline(self, new: NewJob, hint: Hint) -> Job:
        """Run in this thread a job made claimed by this runner (``JobStore.new`` with
        ``runner=runner_id``) and not written yet; the job as it ended.

        Its row is written in the transaction of the run's charge (or, if the run ends
        before one, with its end), so a job run at once makes two control-plane
        transactions.  It is a job like any other from there: cancellable through its
        slot, an orphan of this runner if the process dies, finished through the
        store's transitions.
        """
        return self._run(new.job, hint, new=new) or self.store.get(new.job.id)

    def run_now(self, job_id: str) -> Job:
        """Run one queued job in the calling thread (the command line without a server)."""
        runner = self.runner_id or self.store.runners.register()
        try:
            job = self.store.claim_job(job_id, runner)
            ended = None if job is None else self._run(job)
        finally:
            if self.runner_id is None:
                self.store.runners.stop(runner)
        return ended or self.store.get(job_id)

    def cancel_running(self, job_id: str) -> bool:
        """Interrupt the job if it runs in this process (else the monitor of its runner will)."""
        with self._slots_lock:
            slot = self._slots.get(job_id)
        if slot is None:
            return False
        slot.cancel(CANCELLED)
        return True

    # -- recovery --------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Fail the running jobs of runners that died; returns their ids."""
        assert self.runner_id is not None
        dead = self.store.runners.dead(stale_after_s=self.stale_after_s, me=self.runner_id)
        failed = []
        for job in self.store.orphaned(dead):
            if self._interrupt(job, INTERRUPTED) is not None:
                failed.append(job.id)
        self.store.runners.forget(dead)
        return failed

    def _interrupt(
        self,
        job: Job,
        reason: tuple[str, str],
        error: str | None = None,
        new: NewJob | None = None,
    ) -> Job | None:
        """Fail the job with ``reason`` and audit it; ``error``: an exception's type name.

        The failed job, or None if it had already ended (nothing recorded then).
        """
        rule, message = reason
        if job.review_bound and not job.reviews:
            failed = self._hold_failure(job, EnclaveError(message, rule=rule))
        else:  # (a review-bound one being released after its approvals ends as any job)
            failed = self.store.finish(job.id, JobState.FAILED, rule=rule, message=message, new=new)
        if failed is None:
            return None
        try:
            self.record_end(job, rule, message, error=error)
        except SandboxError:
            log.warning("could not record the failure of %s (%s)", job.id, rule)
        return failed

    def record_end(self, job: Job, rule: str, message: str, *, error: str | None = None) -> None:
        """The ``deny`` entry of a job that ended without its run recording one (failed,
        refused when it started, cancelled or expired while queued); ``error``: an
        exception's type name.  A job charged when submitted (``prepaid``) has its
        ``epsilon_spent`` here, as a run's refusal would."""
        details: dict[str, Any] = {"reason": message, "job": job.id}
        if error is not None:
            details["error"] = error
        if job.prepaid is not None:
            details["epsilon_spent"] = job.prepaid
        details.update(token_details(self.platform.engine, job))
        self.platform.record(
            actor=job.operator,
            role="operator",
            action="dataset.query",
            target=f"query:{job.id}",
            decision="deny",
            rule=rule,
            request_id=job.id,
            client=job.client,
            details=details,
        )

    def _expire(self) -> None:
        """Expire results past their retention, and jobs bound for review not yet held
        ``result_ttl_s`` after submission (one expired before it ran: its charge's entry)."""
        self.store.expire()
        for job in self.store.expire_held(self.result_ttl_s()):
            if job.state is JobState.QUEUED:  # a running one's run records its own end
                try:
                    self.record_end(job, "job.expired", "it waited past its retention time")
                except SandboxError:
                    log.warning("could not record the expiry of %s", job.id)

    # -- workers ---------------------------------------------------------------------------

    def _next(self, held: bool) -> tuple[Job | None, Hint | None]:
        """The store's next job of a lane in turn across operators (with its check, if
        queued here moments ago)."""
        assert self.runner_id is not None
        per_operator = None if held else self.per_operator
        job = self.store.claim(self.runner_id, per_operator=per_operator, held=held)
        now = time.monotonic()
        with self._wake:
            found = None if job is None else self._hints.pop(job.id, None)
            for stale in [k for k, (at, _) in self._hints.items() if now - at >= HINT_S]:
                del self._hints[stale]  # claimed elsewhere, or too old to stand in
        if job is None or found is None or now - found[0] >= HINT_S:
            return job, None
        return job, found[1]

    def _work(self, held: bool) -> None:
        wake = self._wake_held if held else self._wake
        while not self._stopping.is_set():
            with wake:
                seen = self._queued[held]
            try:
                job, hint = self._next(held)
            except Exception:  # the database is unreachable: retry later
                log.exception("claiming a job failed")
                job, hint = None, None
            if job is None:
                with wake:
                    if self._queued[held] == seen:
                        wake.wait(self.poll_s)
                continue
            try:
                self._run(job, hint)
            except Exception:  # its end could not be written (a full disk, no database)
                log.exception("the end of job %s could not be recorded", job.id)
                self._settle(job)

    def _settle(self, job: Job) -> None:
        """Fail a job whose end could not be recorded, retrying until the store takes it
        or the runner stops: else it stayed ``running`` until this runner was found dead,
        and its worker thread died with the exception (a disk-full test, held jobs run in
        the background since they are never waited for)."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                self._interrupt(job, UNRECORDED)
                return
            except Exception:
                log.warning("job %s: its end still cannot be recorded; retrying", job.id)
                self._stopping.wait(delay)
                delay = min(2 * delay, 10.0)

    def _run_as(self, job: Job) -> Actor:
        """The job's operator now; a refusal (account gone, token revoked) is audited."""
        try:
            return job_actor(self.platform.engine, job)
        except SandboxError as exc:
            self.record_end(job, exc.rule or exc.code, exc.message)
            raise

    def _run(self, job: Job, hint: Hint | None = None, new: NewJob | None = None) -> Job | None:
        """Run a job this runner claimed and store its outcome; the job as it ended
        (None: it ended elsewhere meanwhile, failed by a shutdown or another runner's
        recovery)."""
        slot = JobSlot()
        done: Job | None = None
        with self._slots_lock:
            self._slots[job.id] = slot
        ttl = self.result_ttl_s()
        ended: list[Job | None] = []  # the job's end, if written with its release

        # A run that reaches its release (or its hold) committed its charge, and with it
        # a new job's row: only the ends before a charge pass ``new`` to write the row.
        def with_release(conn: Connection, outcome: QueryResult) -> None:
            ended.append(self.store.finish(job.id, conn=conn, **_released(job, outcome, ttl)))

        try:
            actor = hint.actor if hint is not None else self._run_as(job)
            with job_slot(slot):
                outcome = self.service.run_job(
                    actor,
                    job.sql,
                    purpose=job.purpose,
                    request_id=job.id,
                    client=job.client,
                    authorized=None if hint is None else hint.authorized,
                    epsilon=job.epsilon,
                    with_charge=None if new is None else new.insert,
                    with_release=with_release,
                    shown_as_run=not job.review_bound,
                    prepaid=job.prepaid,
                )
        except SandboxError as exc:
            done = self._end_refused(job, exc, new)
        except Exception as exc:
            # A bug, not a refusal: failed and audited with the exception's type name only
            # (its text may quote a value); the traceback goes to the server log.
            log.exception("job %s failed", job.id)
            done = self._interrupt(job, INTERNAL, error=type(exc).__name__, new=new)
        else:
            if isinstance(outcome, Held):
                # Until approval the operator learns nothing data-dependent (not even the
                # number of rows): the job shows only what the query's plan says.
                shown = {k: v for k, v in outcome.meta.items() if k in HELD_VISIBLE}
                done = self.store.finish(
                    job.id,
                    JobState.AWAITING_REVIEW,
                    meta={**(job.meta or {}), **shown},
                    review_datasets=outcome.meta["review_datasets"],
                    result=StoredResult(
                        "held",
                        arrow_bytes(outcome.table),
                        outcome.key,
                        outcome.groups_suppressed,
                        outcome.epsilon,
                        outcome.cpu_ms,
                    ),
                    # from its submission, not from when it was held (held_view)
                    ttl_s=_since_submitted(job, ttl),
                )
            elif ended:  # written with the release, in its transaction
                done = ended[0]
            else:  # answered from the release cache: nothing was written with it
                done = self.store.finish(job.id, new=new, **_released(job, outcome, ttl))
        finally:
            with self._slots_lock:
                self._slots.pop(job.id, None)
            with self._done:
                self._finished += 1
                self._done.notify_all()
                for wake in self._watchers:
                    wake()
        return done

    def _end_refused(self, job: Job, exc: SandboxError, new: NewJob | None) -> Job | None:
        """End a job whose run raised ``exc``: cancelled, failed or refused (a job bound
        for review: held, :meth:`_hold_failure`)."""
        rule = exc.rule or exc.code
        if rule == "job.cancelled":
            state, message = JobState.CANCELLED, exc.message
        elif job.review_bound:
            return self._hold_failure(job, exc)
        elif rule == "job.interrupted":
            state, message = JobState.FAILED, exc.message
        else:
            refused = 400 <= exc.status < 500 and exc.status != 408
            state = JobState.REFUSED if refused else JobState.FAILED
            message = exc.message
        return self.store.finish(job.id, state, rule=rule, message=message, new=new)

    def _hold_failure(self, job: Job, exc: SandboxError) -> Job | None:
        """End a review-bound job that failed, or was refused when it ran, as a held
        result standing for its failure (``held_failure``): when it ended moves with the
        held runs before it, so its operator learns it only through review (or expiry)."""
        return self.store.finish(
            job.id,
            JobState.AWAITING_REVIEW,
            meta=job.meta,
            review_datasets=job.review_datasets,
            result=StoredResult("held", arrow_bytes(failure_table(exc)), None, None, 0.0, 0),
            ttl_s=_since_submitted(job, self.result_ttl_s()),
        )

    # -- monitor ---------------------------------------------------------------------------

    def _monitor(self) -> None:
        assert self.runner_id is not None
        last_beat = last_recover = last_expire = time.monotonic()
        while not self._stopping.wait(self.monitor_s):
            now = time.monotonic()
            try:
                with self._slots_lock:
                    slots = dict(self._slots)
                progress = {
                    job_id: 0.05 + 0.9 * min(100.0, p) / 100.0
                    for job_id, slot in slots.items()
                    if (p := slot.progress()) is not None
                }
                self.store.set_progress(progress)
                for job_id in self.store.cancel_requested(list(slots)):
                    slots[job_id].cancel(CANCELLED)
                if now - last_beat >= 2.0:
                    self.store.runners.heartbeat(self.runner_id)
                    last_beat = now
                if now - last_recover >= 5.0:
                    self.recover()
                    last_recover = now
                if now - last_expire >= 30.0:
                    self._expire()
                    last_expire = now
            except Exception:
                log.exception("job monitor step failed")


def _since_submitted(job: Job, ttl_s: float) -> float:
    """What is left of ``ttl_s`` counted from the job's submission (at least 0): a held
    result expires at a time its run's length does not move."""
    created = datetime.fromisoformat(job.created_at.replace("Z", "+00:00"))
    return max(0.0, ttl_s - (datetime.now(UTC) - created).total_seconds())


def _released(job: Job, outcome: QueryResult, ttl_s: float | None) -> dict[str, Any]:
    """:meth:`JobStore.finish` arguments of a job whose result was released."""
    return {
        "state": JobState.SUCCEEDED,
        "meta": {**(job.meta or {}), **outcome.meta},
        "receipt": outcome.receipt,
        "result": StoredResult("released", arrow_bytes(outcome.table), None, 0, 0.0, 0),
        "ttl_s": ttl_s,
    }
