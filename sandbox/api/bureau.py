# Over 400 lines: one router for a bureau's acts: datasets, grants, release modes, reviews.
"""Bureau routes (数据持有部门): datasets and classification, grants, the review queue."""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from policies import Actor, GrantTerms, ReleaseMode, Target, Tariff, Use
from sandbox.core.classification import Level, parse_classification
from sandbox.core.errors import Forbidden, InvalidInput, NotFound, Withheld
from sandbox.core.sealed_files import Sink, staged_writer
from sandbox.enclave.staging import RECORD_SUFFIX, UploadQuota
from sandbox.governance.registrations import Registrations
from sandbox.governance.revision_terms import loosenings
from sandbox.jobs.results import result_rows
from sandbox.query.bounds_proposal import propose_bounds
from sandbox.query.held_failure import held_failure
from sandbox.reclassify import reclassify

from .context import ActorDep, Meta, MetaDep, Services, ServicesDep
from .models import (
    BoundsProposalIn,
    BoundsProposalOut,
    ClassifyIn,
    GrantIn,
    GrantNarrowIn,
    GrantOut,
    HeldFailureOut,
    JobOut,
    Reason,
    RegisterIn,
    RegistrationOut,
    ReleaseModeIn,
    ResultRows,
    ReviewIn,
    ReviewOut,
    UploadOut,
)
from .operator import job_out
from .shared import dataset_out, grant_out

__all__ = ["router"]

router = APIRouter(tags=["bureau"])

UPLOAD_ID = re.compile(r"^up_[0-9a-f]{24}$")
SUFFIX = re.compile(r"^\.[a-z]{2,8}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
UPLOAD_TTL_S = 86_400
MAX_IMPORT_PATH = 1024


def _require(services: Services, actor: Actor, action: str, target: Target, meta: Meta) -> None:
    authority = services.platform.authority
    decision = authority.decide(actor, action, target, audit=False)
    if not decision.allowed:
        authority.record_decision(actor, decision, request_id=meta.request_id, client=meta.client)
        raise decision.error()


def _write_staged(quota: UploadQuota, sink: Sink, chunk: bytes, size: int) -> None:
    quota.check(size)  # before the bytes land: a refused upload never passes a quota
    sink.write(chunk)


def _uploads(services: Services) -> Path:
    # Unregistered uploads are deleted on a schedule (Services), not by this request.
    return services.staging.ready()


@router.post(
    "/v1/uploads",
    response_model=UploadOut,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload(
    request: Request,
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    domain: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_]{0,62}$")],
    filename: Annotated[str, Query(min_length=1, max_length=255, description="For its suffix.")],
) -> Any:
    """Upload a source file (raw body) for a registration in ``domain``; returns its id.

    The body is limited by ``max_upload_bytes``, what waits in staging by
    ``max_staging_bytes_per_account`` (413 ``staging_quota``) and ``max_staging_bytes``
    (507 ``staging_full``); an upload not registered within ``upload_ttl_s`` is deleted.
    """
    await run_in_threadpool(
        _require, services, actor, "dataset.register", Target.domain(domain), meta
    )
    if CONTROL.search(filename):
        raise InvalidInput("the file name may not hold control characters", rule="api.upload")
    suffix = Path(filename).suffix.lower()
    if not SUFFIX.match(suffix):
        raise InvalidInput(
            "the file name needs a suffix such as .csv or .parquet", rule="api.upload"
        )
    directory = await run_in_threadpool(_uploads, services)
    upload_id = "up_" + uuid.uuid4().hex[:24]
    target = directory / f"{upload_id}{suffix}"
    digest, size = hashlib.sha256(), 0
    quota = services.staging.quota(actor.name, target)
    keys = await run_in_threadpool(lambda: services.platform.data_keys)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            sink = staged_writer(out, keys)  # sealed as it arrives (encrypted home)
            async for chunk in request.stream():
                digest.update(chunk)
                size += len(chunk)
                await anyio.to_thread.run_sync(_write_staged, quota, sink, chunk, size)
            await anyio.to_thread.run_sync(sink.close)
    except BaseException:
        target.unlink(missing_ok=True)
        quota.close()
        raise
    if size == 0:
        target.unlink(missing_ok=True)
        quota.close()
        raise InvalidInput("the upload is empty", rule="api.upload")
    info = {
        "owner": actor.name,
        "domain": domain,
        "file": target.name,
        "name": Path(filename).name,  # what provenance records, never the server's path
        "bytes": size,
    }
    (directory / f"{upload_id}{RECORD_SUFFIX}").write_text(json.dumps(info))
    quota.close()  # from now on counted as the account's, from the directory
    await run_in_threadpool(
        services.platform.record,
        actor=actor.name,
        role=actor.role.value,
        action="dataset.upload",
        target=f"domain:{domain}",
        decision="allow",
        rule="allow.role",
        request_id=meta.request_id,
        client=meta.client,
        details={
            "upload": upload_id,
            "bytes": size,
            "sha256": digest.hexdigest(),
            **actor.audit_details(),
        },
    )
    return UploadOut(upload_id=upload_id, bytes=size, sha256=digest.hexdigest())


def _source_path(
    services: Services, actor: Actor, body: RegisterIn, domain: str
) -> tuple[Path, str]:
    """The file to register and the name provenance records for it (never a server path)."""
    source = body.source
    if (source.upload_id is None) == (source.path is None):
        raise InvalidInput("name one source: upload_id or path", rule="api.source")
    if source.upload_id is not None:
        if not UPLOAD_ID.match(source.upload_id):
            raise NotFound("no such upload", rule="api.upload")
        directory = services.platform.settings.staging_dir / "uploads"
        try:
            info = json.loads((directory / f"{source.upload_id}{RECORD_SUFFIX}").read_text())
        except (OSError, ValueError):
            raise NotFound("no such upload", rule="api.upload") from None
        if info["owner"] != actor.name or info["domain"] != domain:
            # Answered like an unknown id, so an upload id tells nobody that it exists;
            # the trail keeps the real reason (the registration procedure audits Withheld).
            raise Withheld(
                "no such upload",
                rule="api.upload",
                actual_rule="upload.not_yours",
                actual_reason="the upload belongs to another account or domain",
            )
        return directory / str(info["file"]), str(info.get("name") or info["file"])
    assert source.path is not None
    outside = InvalidInput(
        "path must name a file inside the home's imports/ directory", rule="api.import_path"
    )
    if CONTROL.search(source.path) or len(source.path.encode()) > MAX_IMPORT_PATH:
        raise outside
    imports = services.platform.settings.import_dir.resolve()
    try:
        path = (imports / source.path).resolve()
        if not path.is_relative_to(imports) or not path.is_file():
            raise outside
    except (OSError, ValueError):  # a name too long for the file system, and the like
        raise outside from None
    return path, path.relative_to(imports).as_posix()


@router.post("/v1/datasets", response_model=RegistrationOut, status_code=201)
def register(body: RegisterIn, actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """Closed: datasets are registered through the registration procedure
    (``POST /v1/registrations``); direct registration is the host console's audited
    bootstrap (``sandbox dataset register``).  Refused, and audited, for every account
    (``registration.procedure``)."""
    spec = parse_classification(body.classification, source_name="api")
    catalog = services.platform.catalog
    target = Target.dataset(spec.id) if catalog.exists(spec.id) else Target.domain(spec.domain)
    closed = Forbidden(
        "datasets are registered through the registration procedure: apply with POST "
        "/v1/registrations (sandbox registration apply); the admin accepts, reviews and "
        "issues the certificate",
        rule="registration.procedure",
    )
    services.platform.record(
        actor=actor.name,
        role=actor.role.value,
        action="dataset.register",
        target=str(target),
        decision="deny",
        rule=closed.rule or closed.code,
        request_id=meta.request_id,
        client=meta.client,
        details={"reason": closed.message, **actor.audit_details()},
    )
    raise closed


@router.put("/v1/datasets/{dataset_id}/classification", response_model=RegistrationOut)
def classify(
    dataset_id: str, body: ClassifyIn, actor: ActorDep, meta: MetaDep, services: ServicesDep
) -> Any:
    """Tighten a dataset's classification (分类分级) at once, without reloading it: a new
    version.  A loosening change is refused (``registration.procedure``): it is a revision
    applied through the registration procedure, with a publicity period."""
    spec = parse_classification(body.classification, source_name="api")
    if spec.id != dataset_id:
        raise InvalidInput(
            f"the classification is for {spec.id}, not {dataset_id}", rule="api.dataset_id"
        )
    _require(services, actor, "dataset.classify", Target.dataset(dataset_id), meta)
    platform = services.platform
    default = Registrations(platform).default_contribution()
    loosened = loosenings(platform.catalog.get(dataset_id).spec, spec, default)
    if loosened:
        closed = Forbidden(
            f"this change loosens the classification in force ({'; '.join(loosened[:5])}): "
            "apply for a revision with POST /v1/registrations without a source (sandbox "
            "registration apply without --source); the admin accepts and reviews it and "
            "issues it after its publicity period",
            rule="registration.procedure",
        )
        platform.record(
            actor=actor.name,
            role=actor.role.value,
            action="dataset.classify",
            target=f"dataset:{dataset_id}",
            dataset=dataset_id,
            decision="deny",
            rule="registration.procedure",
            request_id=meta.request_id,
            client=meta.client,
            details={"reason": closed.message, "loosened": loosened, **actor.audit_details()},
        )
        raise closed
    reg = reclassify(services.platform, spec, actor, request_id=meta.request_id, client=meta.client)
    return RegistrationOut(
        dataset=dataset_out(reg.record, provenance=True),
        replaced=True,
        certificate=reg.certificate,
    )


@router.post("/v1/datasets/{dataset_id}/bounds-proposal", response_model=BoundsProposalOut)
def bounds_proposal(
    dataset_id: str, body: BoundsProposalIn, actor: ActorDep, meta: MetaDep, services: ServicesDep
) -> Any:
    """Propose C, G and clamping bounds from DP quantiles: spends ε, recorded first."""
    proposal = propose_bounds(
        services.platform,
        dataset_id,
        actor,
        epsilon=body.epsilon,
        percentile=body.percentile,
        value_percentile=body.value_percentile,
        request_id=meta.request_id,
        client=meta.client,
    )
    return proposal.to_dict()


# -- grants ----------------------------------------------------------------------------------


@router.post("/v1/grants", response_model=GrantOut, status_code=201)
def issue_grant(body: GrantIn, actor: ActorDep, services: ServicesDep) -> Any:
    """Issue a grant (数据授权) on one of your datasets to one operator."""
    terms = GrantTerms(
        purpose_code=body.purpose_code,
        purpose_text=body.purpose_text,
        valid_from=_utc(body.valid_from) if body.valid_from else datetime.now(UTC),
        valid_until=_utc(body.valid_until),
        max_level=Level.parse(body.max_level),
        columns=None if body.columns is None else frozenset(body.columns),
        groupable=frozenset(body.groupable),
        k=body.k if body.k is not None else services.settings().k_floor,
        epsilon_total=body.epsilon_total,
        epsilon_per_query=body.epsilon_per_query,
        queries_per_day=body.queries_per_day,
        rows_per_day=body.rows_per_day,
        release_mode=_release_mode(body),
        dominance_n=body.dominance_n,
        dominance_p=body.dominance_p,
        round_digits=body.round_digits,
        max_rows_per_entity=body.max_rows_per_entity,
        max_groups_per_entity=body.max_groups_per_entity,
        tariff=Tariff(
            use=Use(body.use),
            price_per_query=body.price_per_query_fen,
            price_per_million_rows=body.price_per_million_rows_fen,
        ),
    )
    grant = services.administration().issue_grant(
        actor, body.dataset, body.operator, terms, reason=body.reason
    )
    return grant_out(grant)


def _release_mode(body: GrantIn) -> ReleaseMode:
    """``release_mode`` (default ``dp``); the deprecated ``review_required`` means reviewed."""
    if body.release_mode is None:
        return ReleaseMode.REVIEWED if body.review_required else ReleaseMode.DP
    mode = ReleaseMode(body.release_mode)
    if body.review_required and mode is not ReleaseMode.REVIEWED:
        raise InvalidInput(
            "review_required true contradicts release_mode 'dp': give release_mode only",
            rule="grant.terms",
        )
    return mode


@router.post("/v1/grants/{grant_id}/release-mode", response_model=GrantOut)
def set_release_mode(
    grant_id: str, body: ReleaseModeIn, actor: ActorDep, services: ServicesDep
) -> Any:
    """Choose a grant's release mode (``dp`` noised, or ``reviewed`` exact after review).

    A new grant version and an audit entry (``grant.release_mode``).  ``dp`` takes
    ``epsilon_total`` (default: the grant's budget, else the platform's); a dp grant's
    budget can only be lowered here.  ``reviewed`` takes no budget.
    """
    grant = services.administration().set_release_mode(
        actor,
        grant_id,
        ReleaseMode(body.mode),
        epsilon_total=body.epsilon_total,
        epsilon_per_query=body.epsilon_per_query,
        reason=body.reason,
    )
    return grant_out(grant)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.post("/v1/grants/{grant_id}/narrow", response_model=GrantOut)
def narrow_grant(grant_id: str, body: GrantNarrowIn, actor: ActorDep, services: ServicesDep) -> Any:
    """Narrow a grant; anything that would widen it is refused (``grant.narrow_widens``)."""
    changes: dict[str, Any] = {}
    for name, value in body.model_dump(exclude={"reason"}, exclude_none=True).items():
        if name == "valid_until":
            value = _utc(value)
        elif name == "max_level":
            value = Level.parse(value)
        elif name in ("columns", "groupable"):
            value = frozenset(value)
        changes[name] = value
    if not changes:
        raise InvalidInput("nothing to narrow", rule="api.narrow")
    grant = services.administration().narrow_grant(actor, grant_id, reason=body.reason, **changes)
    return grant_out(grant)


def _status_route(change: str, doc: str) -> None:
    def route(grant_id: str, body: Reason, actor: ActorDep, services: ServicesDep) -> Any:
        method = getattr(services.administration(), f"{change}_grant")
        return grant_out(method(actor, grant_id, reason=body.reason))

    route.__doc__ = doc
    route.__name__ = f"{change}_grant"
    router.post(f"/v1/grants/{{grant_id}}/{change}", response_model=GrantOut)(route)


_status_route("suspend", "Suspend a grant (it can be resumed).")
_status_route("resume", "Resume a suspended grant.")
_status_route("revoke", "Revoke a grant for good.")


# -- reviews ---------------------------------------------------------------------------------


@router.get("/v1/reviews", response_model=list[JobOut])
def review_queue(actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """Jobs awaiting your review (a grant on your dataset requires it)."""
    return [job_out(j) for j in services.desk.review_queue(actor, meta.request_id, meta.client)]


@router.get("/v1/reviews/{job_id}", response_model=ReviewOut)
def review_show(job_id: str, actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """The desensitized result approval would release (your viewing is recorded)."""
    job, table = services.desk.review_show(actor, job_id, meta.request_id, meta.client)
    failure = held_failure(table)  # marked in metadata no query result carries
    failed = None
    if failure is not None:
        rule, message = failure.audited
        failed = HeldFailureOut(rule=rule, message=message)
    return ReviewOut(job=job_out(job), result=ResultRows(**result_rows(table)), failed=failed)


@router.post("/v1/reviews/{job_id}", response_model=JobOut)
def review(
    job_id: str, body: ReviewIn, actor: ActorDep, meta: MetaDep, services: ServicesDep
) -> Any:
    """Approve or reject, with a reason.  Approval by every reviewing bureau releases it."""
    job = services.desk.review(
        actor,
        job_id,
        approve=body.verdict == "approve",
        reason=body.reason,
        rid=meta.request_id,
        client=meta.client,
    )
    return job_out(job)
