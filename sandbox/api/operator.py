"""Operator routes (授权运营主体): explain a query, submit and follow jobs, fetch results."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from policies import Actor
from sandbox.jobs.desk import FORMATS
from sandbox.jobs.results import MEDIA_TYPES, encode, result_rows
from sandbox.jobs.store import ACTIVE_STATES, Job, JobState

from .context import ActorDep, Meta, MetaDep, Services, ServicesDep
from .models import ExplainIn, ExplainOut, Format, JobIn, JobList, JobOut, ResultRows
from .pool import wait_for_job

__all__ = ["router"]

router = APIRouter(tags=["operator"])

_RESULT_CONTENT = {
    media: {"schema": {"type": "string", "format": "binary"}}
    for media in (
        "text/csv; charset=utf-8",
        "application/vnd.apache.parquet",
        "application/vnd.apache.arrow.stream",
    )
}


def job_out(job: Job, result: dict[str, Any] | None = None) -> JobOut:
    return JobOut(**job.to_dict(), result=None if result is None else ResultRows(**result))


@router.post("/v1/explain", response_model=ExplainOut, name="explain")
async def explain_route(
    body: ExplainIn, actor: ActorDep, meta: MetaDep, services: ServicesDep
) -> Any:
    """Would the query be accepted, by which rule refused, what it touches and costs in ε.

    Nothing runs; the verdict is recorded in the audit trail either way.
    """
    # ``async`` with one hop to the pool: a plain ``def`` route costs two (the route, then
    # the check of its answer against ``response_model``, which FastAPI also sends there).
    return await run_in_threadpool(explain, body, actor, meta, services)


def explain(body: ExplainIn, actor: Actor, meta: Meta, services: Services) -> Any:
    """``POST /v1/explain`` in the calling thread (the console calls it too)."""
    services.settings()
    return services.service.explain(
        actor,
        body.sql,
        purpose=body.purpose,
        client=meta.client,
        request_id=meta.request_id,
        epsilon=body.epsilon,
    )


@router.post(
    "/v1/jobs",
    response_model=JobOut,
    status_code=202,
    responses={200: {"model": JobOut, "description": "Finished within the wait (wait=true)."}},
)
async def submit_job(
    body: JobIn,
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    response: Response,
    wait: Annotated[bool, Query(description="Wait for the outcome (small queries).")] = False,
    timeout: Annotated[
        float, Query(gt=0, le=300, description="Seconds to wait (capped by sync_wait_s).")
    ] = 10.0,
) -> Any:
    """Submit an analysis job.  Refused at once (with its rule) if it could not run.

    202 with the queued job; with ``wait=true``, 200 with the outcome (and the released rows
    inline when it succeeded) if it finishes within the wait, else 202 with its state.
    The wait holds no thread of the bounded pool (``sandbox/api/pool.py``).
    """

    def submit() -> tuple[Job, float, JobOut | None]:
        job = services.desk.submit(
            actor,
            body.sql,
            purpose=body.purpose,
            fmt=body.format,
            epsilon=body.epsilon,
            rid=meta.request_id,
            client=meta.client,
            inline=wait,  # a small query runs in this pool thread (sandbox/jobs/desk.py)
        )
        # A job that ended inline is answered from this same thread: one hop to the pool
        # per request, not three (submit, read the state, read the rows).
        ended = job.state not in ACTIVE_STATES and not job.review_bound
        done = outcome(job) if wait and ended else None
        return job, min(timeout, services.settings().sync_wait_s), done

    def outcome(job: Job) -> JobOut:
        if job.state is JobState.SUCCEEDED:
            # Delivered with its release, in this request: the release's audit entry covers it.
            return job_out(job, result_rows(services.desk.just_released(job)))
        return job_out(job)

    job, wait_s, done = await run_in_threadpool(submit)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if done is not None:
        response.status_code = 200
        return done
    if job.review_bound:  # never waited for: awaiting review until it ends (held_view)
        return job_out(job)
    if wait:
        job = await wait_for_job(services.runner, job.id, wait_s)
    if job.state in ACTIVE_STATES:
        return job_out(job)
    response.status_code = 200
    return await run_in_threadpool(outcome, job)


@router.get("/v1/jobs", response_model=JobList)
def list_jobs(
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    state: Annotated[list[JobState] | None, Query(description="Only these states.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Any:
    """My jobs, newest first."""
    found = services.desk.list_jobs(
        actor, states=state, limit=limit, offset=offset, rid=meta.request_id, client=meta.client
    )
    return JobList(jobs=[job_out(j) for j in found], limit=limit, offset=offset)


@router.get("/v1/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """A job's state and progress (0 to 1)."""
    return job_out(services.desk.get(actor, job_id, meta.request_id, meta.client))


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """Cancel a queued, running or held job (a running query is interrupted)."""
    return job_out(services.desk.cancel(actor, job_id, meta.request_id, meta.client))


@router.get(
    "/v1/jobs/{job_id}/result",
    response_model=None,
    responses={
        200: {
            "description": "The released rows in the requested format.",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["columns", "rows"],
                        "properties": {
                            "columns": {"type": "array", "items": {"type": "string"}},
                            "rows": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                },
                **_RESULT_CONTENT,
            },
        }
    },
)
def job_result(
    job_id: str,
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    format: Annotated[Format | None, Query(description="Default: the job's format.")] = None,
) -> StreamingResponse:
    """The released result, streamed as JSON, CSV, Parquet or Arrow IPC (recorded)."""
    job = services.desk.get(actor, job_id, meta.request_id, meta.client)
    fmt = format or (job.format if job.format in FORMATS else "json")
    job, table = services.desk.result(actor, job_id, fmt, meta.request_id, meta.client)
    suffix = {"json": "json", "csv": "csv", "parquet": "parquet", "arrow": "arrows"}[fmt]
    return StreamingResponse(
        encode(table, fmt),
        media_type=MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{job.id}.{suffix}"',
            "X-Result-SHA256": str((job.meta or {}).get("result_sha256", "")),
        },
    )


@router.get("/v1/jobs/{job_id}/receipt", response_model=dict[str, Any])
def job_receipt(job_id: str, actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """The signed release receipt (verify offline with `sandbox receipt verify`)."""
    return services.desk.receipt(actor, job_id, meta.request_id, meta.client)
