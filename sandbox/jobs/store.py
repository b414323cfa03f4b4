# Over 400 lines: each job transition is one conditional UPDATE; the state machine reads as one.
"""Analysis jobs in the control-plane database: states, transitions, results.

A job is one operator query run in the background by a bounded worker pool
(:mod:`sandbox.jobs.runner`).  Everything about it lives in the control-plane
database, never in process memory, so any server process can answer for any job
and a restart loses nothing:

```
queued ──▶ running ──▶ succeeded ──▶ expired          (result deleted after result_ttl_s)
  │           │   ╰──▶ awaiting_review ──▶ succeeded  (approved: released then)
  │           │                 ╰──────▶ refused      (rejected, or stale / no longer allowed)
  │           ├──▶ refused   (a rule refused it when it ran)
  │           ├──▶ failed    (timeout, enclave error, audit unavailable, server stopped)
  ╰───────────┴──▶ cancelled (by its operator; also from awaiting_review)
```

Every transition is a conditional ``UPDATE ... WHERE state = <expected>``, so two
processes can never both claim, finish or review one job.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sandbox.core.control_writer import ControlWriter
from sandbox.core.db import insert_ignore, metadata
from sandbox.core.errors import Conflict, NotFound
from sandbox.core.keyring import Keyring
from sandbox.core.sealed import open_blob, seal_blob
from sandbox.core.timeutil import to_rfc3339
from sandbox.jobs.registry import RunnerRegistry
from sandbox.jobs.states import ACTIVE_STATES, FINAL_STATES, HIDDEN_STATES, JobState
from sandbox.jobs.tables import job_results, job_runners, jobs

T = TypeVar("T")

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "Job",
    "JobState",
    "JobStore",
    "StoredResult",
    "job_results",
    "job_runners",
    "jobs",
]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Job:
    id: str
    operator: str
    state: JobState
    sql: str
    purpose: str | None
    format: str
    client: str | None
    token_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str | None
    progress: float
    runner: str | None
    cancel_requested: bool
    rule: str | None
    message: str | None
    datasets: list[str]
    review_datasets: list[str]
    reviews: list[dict[str, Any]]
    meta: dict[str, Any] | None
    receipt: dict[str, Any] | None
    version: int
    epsilon: float | None = None  # the operator's ε for this query (None: the grant's)
    review_bound: bool = False  # its result waits for review (held_view.seen_by_operator)
    prepaid: float | None = None  # the ε charged when it was submitted (review-bound ones)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls.from_values(row._mapping)

    @classmethod
    def from_values(cls, mapping: Mapping[str, Any]) -> Job:
        """The job from its ``jobs`` row's values (every column)."""
        values = dict(mapping)
        values["state"] = JobState(values["state"])
        values["cancel_requested"] = bool(values["cancel_requested"])
        values["review_bound"] = bool(values.get("review_bound"))
        return cls(**values)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """The operator's view: no SQL echo needed beyond what it sent, no result rows."""
        return {
            "id": self.id,
            "operator": self.operator,
            "state": self.state.value,
            "sql": self.sql,
            "purpose": self.purpose,
            "format": self.format,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "expires_at": self.expires_at,
            "progress": round(self.progress, 4),
            "cancel_requested": self.cancel_requested,
            "rule": self.rule,
            "message": self.message,
            "datasets": self.datasets,
            "review_datasets": self.review_datasets,
            "reviews": self.reviews,
            "meta": self.meta,
        }


@dataclass(frozen=True)
class StoredResult:
    kind: str
    data: bytes
    cache_key: str | None
    groups_suppressed: int | None  # None: not reported (no budget)
    epsilon: float
    cpu_ms: int


_started = jobs.alias("started")
# Each queued operator's oldest job and latest start in one lane (``held``: the jobs bound
# for review, which run apart, held_view): the start is one lookup per operator in
# ix_jobs_operator_started (a max over an index prefix), not a scan of its history.  A
# lane's turns never read the other's starts: a held run's start is data-dependent.
_WAITING = (
    sa.select(
        jobs.c.operator,
        sa.func.min(jobs.c.created_at).label("oldest"),
        sa.select(sa.func.max(_started.c.started_at))
        .where(
            _started.c.operator == jobs.c.operator,
            _started.c.review_bound == sa.bindparam("held"),
        )
        .scalar_subquery()
        .label("last"),
    )
    .where(jobs.c.state == sa.bindparam("queued"), jobs.c.review_bound == sa.bindparam("held"))
    .group_by(jobs.c.operator)
)


# Every synchronous query runs these, so they are built once: built per call (with its cache
# key), the job's INSERT cost ~500 µs of CPU against ~60 prebuilt, a select ~150 against ~40,
# a transition ~530 against ~150 (SQLite, measured for issue 15).
_JOB = sa.select(jobs).where(jobs.c.id == sa.bindparam("b_id"))
_INSERT_JOB = sa.insert(jobs)  # the columns are the keys of the values it is executed with
#: A count of one operator's jobs, narrowed by the two below.
_OWN = (
    sa.select(sa.func.count())
    .select_from(jobs)
    .where(jobs.c.operator == sa.bindparam("b_operator"))
)
_ACTIVE = _OWN.where(jobs.c.state.in_([s.value for s in ACTIVE_STATES])).where(
    jobs.c.review_bound.is_(False)
)
#: An operator's review-bound jobs not ended, submitted since ``b_since``: counted apart,
#: in every state it sees as one (a count of only the running ones would tell when a held
#: run finished), and only while one may still be running (``desk._within_concurrency``).
_BOUND = (
    _OWN.where(jobs.c.state.in_([s.value for s in HIDDEN_STATES]))
    .where(jobs.c.review_bound.is_(True))
    .where(jobs.c.created_at >= sa.bindparam("b_since"))
)
#: A job's state as its operator sees it (held_view.seen_by_operator), for a filter.
_SEEN_STATE = sa.case(
    (
        sa.and_(jobs.c.review_bound.is_(True), jobs.c.state.in_([s.value for s in HIDDEN_STATES])),
        JobState.AWAITING_REVIEW.value,
    ),
    else_=jobs.c.state,
)
_RESULT = sa.select(job_results).where(job_results.c.job_id == sa.bindparam("b_job_id"))
_DELETE_RESULT = sa.delete(job_results).where(job_results.c.job_id == sa.bindparam("b_job_id"))
_INSERT_RESULT = sa.insert(job_results)


@functools.cache
def _transition_statement(columns: tuple[str, ...], expected: tuple[str, ...]) -> sa.Update:
    """``UPDATE jobs SET <columns> WHERE id = :b_id AND state IN <expected> RETURNING *``,
    built once per shape (bounded: the shapes are the call sites' column sets)."""
    return (
        sa.update(jobs)
        .where(jobs.c.id == sa.bindparam("b_id"))
        .where(jobs.c.state.in_(expected))
        .values({name: sa.bindparam(f"b_{name}") for name in columns})
        .returning(*jobs.c)
    )


@dataclass(frozen=True)
class NewJob:
    """A job made but not yet written, and how to write its row."""

    job: Job
    values: dict[str, Any]

    def insert(self, conn: Connection, *, if_missing: bool = False) -> None:
        """Its row; ``if_missing``: unless it is there already."""
        if if_missing:
            insert_ignore(conn, jobs, **self.values)
        else:
            conn.execute(_INSERT_JOB, self.values)


class JobStore:
    """Data access for jobs and results (SQLite or PostgreSQL); runners in ``.runners``."""

    def __init__(
        self,
        engine: Engine,
        keys: Keyring | None = None,
        *,
        writer: ControlWriter | None = None,
    ) -> None:
        self.engine = engine
        self.keys = keys
        """The home's data keys: results are stored sealed (None: a home without encryption)."""
        self.writer = writer
        """Group commit for the writes on a request's path (creating and finishing a job);
        None: each in its own transaction."""
        metadata.create_all(engine, tables=[jobs, job_results, job_runners])
        # create_all makes no index of a table an older release created: add it in place.
        for index in jobs.indexes:
            index.create(engine, checkfirst=True)
        self.runners = RunnerRegistry(engine)
        """The server processes that run jobs (:mod:`sandbox.jobs.registry`)."""

    # -- jobs ------------------------------------------------------------------------------

    def create(self, **fields: Any) -> Job:
        """A new job, ``queued``; with ``runner``, already claimed by it (``running``).

        A job created claimed is never queued, so no other runner can take it; if its
        runner dies before finishing it, it is an orphan like any job that runner had
        claimed (:meth:`orphaned`).  Returns the job as written (nothing is read back).
        ``fields``: those of :meth:`new`.
        """
        return self.create_new(self.new(**fields))

    def create_new(self, new: NewJob) -> Job:
        """Write a job :meth:`new` made, in a transaction of its own."""
        self._write(new.insert)
        return new.job

    def new(
        self,
        *,
        operator: str,
        sql: str,
        purpose: str | None,
        fmt: str,
        client: str | None,
        token_id: str | None = None,
        datasets: Sequence[str] = (),
        epsilon: float | None = None,
        runner: str | None = None,
        review_datasets: Sequence[str] = (),
        prepaid: float | None = None,
    ) -> NewJob:
        """A job not written yet: its caller writes its row in a transaction of its own
        choosing (:meth:`create` writes it at once)."""
        now = to_rfc3339(_now())
        values: dict[str, Any] = {
            "id": "job_" + uuid.uuid4().hex[:24],
            "operator": operator,
            "state": (JobState.QUEUED if runner is None else JobState.RUNNING).value,
            "sql": sql,
            "purpose": purpose,
            "format": fmt,
            "client": client,
            "token_id": token_id,
            "created_at": now,
            "started_at": None if runner is None else now,
            "finished_at": None,
            "expires_at": None,
            "progress": 0.0,
            "runner": runner,
            "cancel_requested": False,
            "rule": None,
            "message": None,
            "datasets": list(datasets),
            "review_datasets": list(review_datasets),
            "reviews": [],
            "meta": None,
            "receipt": None,
            "version": 0,
            "epsilon": epsilon,
            "review_bound": bool(review_datasets),
            "prepaid": prepaid,
        }
        return NewJob(Job.from_values(values), values)

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` in a transaction: the group writer's if there is one."""
        if self.writer is not None:
            return self.writer.run(fn)
        with self.engine.begin() as conn:
            return fn(conn)

    def get(self, job_id: str) -> Job:
        with self.engine.connect() as conn:
            row = conn.execute(_JOB, {"b_id": job_id}).first()
        if row is None:
            raise NotFound(f"no job {job_id}", rule="job.unknown")
        return Job.from_row(row)

    def list_jobs(
        self,
        *,
        operator: str | None = None,
        states: Sequence[JobState] | None = None,
        limit: int = 100,
        offset: int = 0,
        seen: bool = False,
        review_bound: bool | None = None,
    ) -> list[Job]:
        """Jobs newest first; ``seen``: ``states`` as their operator sees them (held_view);
        ``review_bound``: only those that are (or are not) bound for review."""
        query = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id)
        if review_bound is not None:
            query = query.where(jobs.c.review_bound.is_(review_bound))
        if operator is not None:
            query = query.where(jobs.c.operator == operator)
        if states and seen:
            query = query.where(_SEEN_STATE.in_([s.value for s in states]))
        elif states:
            query = query.where(jobs.c.state.in_([s.value for s in states]))
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).all()
        return [Job.from_row(row) for row in rows]

    def active_count(self, operator: str, *, bound_since: datetime | None = None) -> int:
        """``operator``'s queued and running jobs; with ``bound_since``: instead its jobs
        awaiting review in the operator's eyes (queued, running or held) submitted since
        then, which count against the same limit apart (held_view)."""
        if bound_since is None:
            statement, params = _ACTIVE, {"b_operator": operator}
        else:
            statement = _BOUND
            params = {"b_operator": operator, "b_since": to_rfc3339(bound_since)}
        with self.engine.connect() as conn:
            return int(conn.execute(statement, params).scalar_one())

    def _transition(
        self, conn: Connection, job_id: str, expected: Sequence[JobState], **values: Any
    ) -> Job | None:
        """The job as this UPDATE left it (RETURNING: no second read), or None if it
        was in none of the ``expected`` states."""
        if "state" in values and isinstance(values["state"], JobState):
            values["state"] = values["state"].value
        statement = _transition_statement(tuple(values), tuple(s.value for s in expected))
        params = {f"b_{name}": value for name, value in values.items()}
        row = conn.execute(statement, {"b_id": job_id, **params}).first()
        return None if row is None else Job.from_row(row)

    def claim(
        self,
        runner: str,
        *,
        limit: int = 8,
        per_operator: int | None = None,
        held: bool = False,
    ) -> Job | None:
        """Take the next job in turn for ``runner`` (atomically, across processes).

        Operators take turns: the next job is the oldest queued job of the operator with
        queued work whose last job started longest ago (never: first; ties by the age
        of their oldest queued job), so one operator's backlog delays each other
        operator by at most one job per worker.  ``per_operator``: an operator with that
        many jobs running on ``runner`` waits, so one operator's long jobs never hold
        every worker.  Each claim is a conditional UPDATE: two processes never take one
        job; the loser tries the next in turn.

        ``held``: the lane of jobs bound for review (held_view), run by workers of their
        own; without it, every other job.  Neither lane's turns nor ``per_operator`` count
        the other's jobs: when a held run ends must move nothing its operator sees.
        """
        busy = set() if per_operator is None else self._busy(runner, per_operator, held=held)
        for job_id in self._in_turn(limit, exclude=busy, held=held):
            claimed = self.claim_job(job_id, runner)
            if claimed is not None:
                return claimed
        return None

    def _busy(self, runner: str, per_operator: int, *, held: bool) -> set[str]:
        """Operators with ``per_operator`` or more jobs of one lane running on ``runner``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs.c.operator, sa.func.count().label("n"))
                .where(
                    jobs.c.state == JobState.RUNNING.value,
                    jobs.c.runner == runner,
                    jobs.c.review_bound.is_(held),
                )
                .group_by(jobs.c.operator)
            )
            return {row.operator for row in rows if row.n >= per_operator}

    def _in_turn(
        self, limit: int, *, exclude: Collection[str] = (), held: bool = False
    ) -> list[str]:
        """Up to ``limit`` queued job ids of one lane, each the oldest of its operator, in
        turn order (operators in ``exclude`` wait)."""
        queued = JobState.QUEUED.value
        with self.engine.connect() as conn:
            waiting: dict[str, str] = {}
            served: dict[str, str | None] = {}
            for row in conn.execute(_WAITING, {"queued": queued, "held": held}):
                if row.operator not in exclude:
                    waiting[row.operator], served[row.operator] = row.oldest, row.last
            if not waiting:
                return []
            turn = sorted(waiting, key=lambda op: (served.get(op) or "", waiting[op], op))
            ids = []
            for operator in turn[:limit]:
                oldest = conn.execute(
                    sa.select(jobs.c.id)
                    .where(
                        jobs.c.state == queued,
                        jobs.c.operator == operator,
                        jobs.c.review_bound.is_(held),
                    )
                    .order_by(jobs.c.created_at, jobs.c.id)
                    .limit(1)
                ).scalar()
                if oldest is not None:  # else claimed meanwhile by another process
                    ids.append(str(oldest))
        return ids

    def claim_job(self, job_id: str, runner: str) -> Job | None:
        """Take this queued job for ``runner`` (e.g. the command line running it now)."""
        with self.engine.begin() as conn:
            return self._transition(
                conn,
                job_id,
                [JobState.QUEUED],
                state=JobState.RUNNING,
                runner=runner,
                started_at=to_rfc3339(_now()),
            )

    def set_progress(self, progress: dict[str, float]) -> None:
        if not progress:
            return
        with self.engine.begin() as conn:
            for job_id, value in progress.items():
                self._transition(conn, job_id, [JobState.RUNNING], progress=value)

    def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(jobs.c.id)
                .where(jobs.c.id.in_(list(job_ids)))
                .where(jobs.c.cancel_requested.is_(True))
            ).scalars()
            return set(found)

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or held job at once; ask a running one's runner to stop it.

        A review-bound running job is cancelled at once too (its runner still stops it,
        and its end then changes nothing): when it ended would otherwise tell its operator
        whether it was still running or already held (held_view)."""
        job = self.get(job_id)
        now = to_rfc3339(_now())
        at_once = [JobState.QUEUED, JobState.AWAITING_REVIEW]
        if job.review_bound:
            at_once.append(JobState.RUNNING)
        with self.engine.begin() as conn:
            if job.state in at_once:
                done = self._transition(
                    conn,
                    job_id,
                    [job.state],
                    state=JobState.CANCELLED,
                    finished_at=now,
                    rule="job.cancelled",
                    message="cancelled by its operator",
                    cancel_requested=True,
                )
                if done is not None:
                    conn.execute(_DELETE_RESULT, {"b_job_id": job_id})
            elif job.state is JobState.RUNNING:
                done = self._transition(conn, job_id, [JobState.RUNNING], cancel_requested=True)
            else:
                done = None
        if done is None:
            current = self.get(job_id)
            if current.state is not job.state:
                return self.cancel(job_id)  # it moved on meanwhile: decide again
            raise Conflict(
                f"job {job_id} is {current.state.value}: nothing to cancel",
                rule="job.final",
            )
        return done

    def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        rule: str | None = None,
        message: str | None = None,
        meta: dict[str, Any] | None = None,
        receipt: dict[str, Any] | None = None,
        result: StoredResult | None = None,
        review_datasets: Sequence[str] = (),
        ttl_s: float | None = None,
        expected: Sequence[JobState] = (JobState.RUNNING,),
        conn: Connection | None = None,
        new: NewJob | None = None,
    ) -> Job | None:
        """Move a job to its outcome and store its result, in one transaction: its own,
        or ``conn``'s (a caller's, to write them with what it writes: a release).
        ``new``: the job as :meth:`new` made it, whose row is written first unless it
        already was (a job run at once ends in one transaction however it ends).

        Returns the job as written, or None if it was in none of the ``expected`` states
        (another process finished, cancelled or failed it first): then nothing changed.
        """
        now = _now()
        expires = None if result is None or ttl_s is None else now + timedelta(seconds=ttl_s)
        values: dict[str, Any] = {
            "state": state,
            "rule": rule,
            "message": message,
            "meta": meta,
            "receipt": receipt,
            "progress": 1.0 if state is JobState.SUCCEEDED else None,
            "expires_at": None if expires is None else to_rfc3339(expires),
        }
        if state is not JobState.AWAITING_REVIEW:
            values["finished_at"] = to_rfc3339(now)
        if review_datasets:
            values["review_datasets"] = list(review_datasets)
        values = {k: v for k, v in values.items() if v is not None or k in ("rule", "message")}
        stored = None
        if result is not None:
            stored = {
                "job_id": job_id,
                "kind": result.kind,
                "data": seal_blob(self.keys, result.data, f"job_results:{job_id}"),
                "cache_key": result.cache_key,
                "groups_suppressed": result.groups_suppressed,
                "epsilon": result.epsilon,
                "cpu_ms": result.cpu_ms,
            }

        def write(conn: Connection) -> Job | None:
            if new is not None:
                new.insert(conn, if_missing=True)
            done = self._transition(conn, job_id, expected, **values)
            if done is None:
                return None
            conn.execute(_DELETE_RESULT, {"b_job_id": job_id})
            if stored is not None:
                conn.execute(_INSERT_RESULT, stored)
            return done

        return write(conn) if conn is not None else self._write(write)

    def begin_release(self, job_id: str, runner: str | None) -> bool:
        """A fully approved job is being released: ``running`` (on ``runner``) meanwhile."""
        with self.engine.begin() as conn:
            moved = self._transition(
                conn, job_id, [JobState.AWAITING_REVIEW], state=JobState.RUNNING, runner=runner
            )
        return moved is not None

    def add_review(self, job_id: str, review: dict[str, Any]) -> Job:
        """Append one bureau's verdict (compare-and-set on the review list)."""
        for _ in range(10):
            job = self.get(job_id)
            if job.state is not JobState.AWAITING_REVIEW:
                raise Conflict(f"job {job_id} is {job.state.value}", rule="job.not_awaiting_review")
            if any(r["dataset"] == review["dataset"] for r in job.reviews):
                raise Conflict(
                    f"{review['dataset']} was already reviewed for job {job_id}",
                    rule="review.duplicate",
                )
            with self.engine.begin() as conn:
                done = conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job_id)
                    .where(jobs.c.state == JobState.AWAITING_REVIEW.value)
                    .where(jobs.c.version == job.version)
                    .values(reviews=[*job.reviews, review], version=job.version + 1)
                ).rowcount
            if done == 1:
                return self.get(job_id)
        raise Conflict(f"job {job_id} is being reviewed concurrently; retry", rule="review.busy")

    def result(self, job_id: str) -> StoredResult | None:
        with self.engine.connect() as conn:
            row = conn.execute(_RESULT, {"b_job_id": job_id}).first()
        if row is None:
            return None
        return StoredResult(
            kind=row.kind,
            data=open_blob(self.keys, bytes(row.data), f"job_results:{job_id}"),
            cache_key=row.cache_key,
            groups_suppressed=row.groups_suppressed,
            epsilon=row.epsilon,
            cpu_ms=row.cpu_ms,
        )

    def expire(self, *, now: datetime | None = None) -> list[str]:
        """Delete results past their retention; their jobs become ``expired``."""
        stamp = to_rfc3339(now or _now())
        ended = [JobState.SUCCEEDED, JobState.AWAITING_REVIEW]
        with self.engine.connect() as conn:
            due = list(
                conn.execute(
                    sa.select(jobs.c.id)
                    .where(jobs.c.expires_at.is_not(None))
                    .where(jobs.c.expires_at <= stamp)
                    .where(jobs.c.state.in_([s.value for s in ended]))
                ).scalars()
            )
        return [job_id for job_id in due if self._expire(job_id, ended, stamp)]

    def expire_held(self, ttl_s: float, *, now: datetime | None = None) -> list[Job]:
        """Expire the jobs bound for review still queued or running ``ttl_s`` after their
        submission (a running one's runner is asked to stop it); the jobs as they were.

        Their held result would expire then anyway, and expiring them when their run
        ended would tell their operator when that was (held_view)."""
        moment = now or _now()
        submitted = to_rfc3339(moment - timedelta(seconds=ttl_s))
        active = [JobState.QUEUED, JobState.RUNNING]
        with self.engine.connect() as conn:
            due = [
                Job.from_row(row)
                for row in conn.execute(
                    sa.select(jobs)
                    .where(jobs.c.review_bound.is_(True))
                    .where(jobs.c.state.in_([s.value for s in active]))
                    .where(jobs.c.created_at <= submitted)
                )
            ]
        stamp = to_rfc3339(moment)
        return [job for job in due if self._expire(job.id, [job.state], stamp)]

    def _expire(self, job_id: str, expected: Sequence[JobState], stamp: str) -> bool:
        """Make one job ``expired`` (from ``expected``) and delete its result."""
        # a running one's runner stops its run (JobRunner._monitor)
        stop = {"cancel_requested": True} if JobState.RUNNING in expected else {}
        with self.engine.begin() as conn:
            done = self._transition(
                conn,
                job_id,
                expected,
                state=JobState.EXPIRED,
                rule="job.expired",
                message="the result passed its retention time and was deleted",
                finished_at=stamp,
                **stop,
            )
            if done is not None:
                conn.execute(_DELETE_RESULT, {"b_job_id": job_id})
        return done is not None

    def orphaned(self, runners: Sequence[str]) -> list[Job]:
        """Jobs still marked running by the given runners."""
        if not runners:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(jobs)
                .where(jobs.c.state == JobState.RUNNING.value)
                .where(jobs.c.runner.in_(list(runners)))
            ).all()
        return [Job.from_row(row) for row in rows]
