"""Registration procedure routes (申请、受理、审查、公示、凭证发放): each role its own step.

A bureau applies (``POST /v1/registrations``) with the classification, the file (an
upload or an import path, as ``POST /v1/datasets``), the update frequency and its price
terms; the admin accepts or refuses, reviews, resolves objections and issues; anyone
with an account reads the applications in publicity and objects to them.  The direct
``POST /v1/datasets`` is still served (existing clients, tests); docs/governance.md
names the procedure as the bureau's path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from policies import Actor
from sandbox.enclave.staging import RECORD_SUFFIX
from sandbox.governance.acts import Clock, system_clock
from sandbox.governance.registration_states import RegStep
from sandbox.governance.registrations import Registrations, SourceFile

from .bureau import _source_path
from .context import ActorDep, Services, ServicesDep
from .models import In, Json, SourceIn

__all__ = ["clock_of", "router"]

router = APIRouter(tags=["registration"])


class Listing(In):
    """What the bureau offers in the catalog (shown to operators before they apply)."""

    public_interest: bool = Field(
        default=True, description="Free use for public-interest purposes (有条件无偿使用)."
    )
    commercial: bool = Field(default=False, description="Commercial use at the prices below.")
    price_per_query_fen: int = Field(default=0, ge=0)
    price_per_million_rows_fen: int = Field(default=0, ge=0)
    terms: str = Field(default="", max_length=2000, description="Conditions, in words.")


class RegistrationApplyIn(In):
    classification: str = Field(min_length=1, max_length=200_000, description="TOML text.")
    source: SourceIn | None = Field(
        default=None,
        description="The data file; omitted: a revision reclassifying a registered "
        "dataset's rows as loaded.",
    )
    update_frequency: str = Field(min_length=1, max_length=40, examples=["monthly"])
    listing: Listing | None = Field(
        default=None,
        description="Omitted: the defaults for a new file; a revision without a file keeps "
        "the terms last issued.",
    )
    engine: Literal["duckdb", "spark"] = Field(
        default="duckdb",
        description="Where the issued version's rows live: duckdb (the enclave file) or "
        "spark (the Parquet warehouse, queried by the Spark engine). A revision without a "
        "file keeps the rows where they are.",
    )


class StepIn(In):
    comment: str = Field(default="", max_length=4000)


class ReviewStepIn(In):
    verdict: Literal["approve", "reject"]
    comment: str = Field(min_length=1, max_length=4000)


class AcceptStepIn(In):
    verdict: Literal["accept", "refuse"] = "accept"
    comment: str = Field(default="", max_length=4000)


class ObjectIn(In):
    text: str = Field(min_length=1, max_length=4000, description="The grounds, in words.")


class ResolveIn(In):
    objection: str = Field(pattern=r"^ob_[0-9a-f]{16}$")
    verdict: Literal["uphold", "dismiss"]
    comment: str = Field(min_length=1, max_length=4000)


class IssuedOut(BaseModel):
    application: Json
    certificate: Json


def clock_of(request: Request) -> Clock:
    """The procedures' clock: ``app.state.clock`` when a test set one, else the system's."""
    return getattr(request.app.state, "clock", system_clock)  # type: ignore[no-any-return]


def _procedure(request: Request, services: Services) -> Registrations:
    return Registrations(services.platform, clock=clock_of(request))


@router.post("/v1/registrations", response_model=Json, status_code=201)
def apply(
    body: RegistrationApplyIn,
    request: Request,
    actor: ActorDep,
    services: ServicesDep,
) -> Any:
    """Apply to register (or re-register, or reclassify: no source) a dataset of your domain
    (bureau)."""

    def find(domain: str) -> SourceFile:
        assert body.source is not None
        path, name = _source_path(services, actor, body, domain)  # type: ignore[arg-type]
        upload = body.source.upload_id is not None
        return SourceFile(
            path=Path(path),
            name=name,
            format=body.source.format,
            move=upload,
            also_remove=(Path(path).with_suffix(RECORD_SUFFIX),) if upload else (),
        )

    return _procedure(request, services).apply(
        actor,
        classification=body.classification,
        source=None if body.source is None else find,
        update_frequency=body.update_frequency,
        listing=body.listing.model_dump()
        if body.listing is not None
        else (None if body.source is None else Listing().model_dump()),
        engine=body.engine,
    )


@router.get("/v1/registrations", response_model=list[Json])
def applications(
    request: Request,
    actor: ActorDep,
    services: ServicesDep,
    state: Annotated[
        Literal["applied", "accepted", "publicity", "reviewed", "issued", "rejected", "withdrawn"]
        | None,
        Query(),
    ] = None,
) -> Any:
    """Applications you may see: every one in publicity (公示), your domains' (bureau), all
    (admin, auditor)."""
    return _procedure(request, services).read(actor, state=state)


@router.get("/v1/registrations/{app_id}", response_model=Json)
def application(app_id: str, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """One application, with its steps and the objections you may read."""
    return _procedure(request, services).read(actor, app_id)[0]


def _step(
    request: Request, services: Services, actor: Actor, app_id: str, step: RegStep, **kw: Any
) -> Any:
    return _procedure(request, services).step(actor, app_id, step, **kw)


@router.post("/v1/registrations/{app_id}/accept", response_model=Json)
def accept(
    app_id: str, body: AcceptStepIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Accept (受理) the application, or refuse it with a reason (admin)."""
    step = RegStep.ACCEPT if body.verdict == "accept" else RegStep.REFUSE
    return _step(request, services, actor, app_id, step, comment=body.comment)


@router.post("/v1/registrations/{app_id}/review", response_model=Json)
def review(
    app_id: str, body: ReviewStepIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Review (审查) with a comment: approval starts the publicity period (admin)."""
    step = RegStep.APPROVE if body.verdict == "approve" else RegStep.REJECT
    return _step(request, services, actor, app_id, step, comment=body.comment)


@router.post("/v1/registrations/{app_id}/objections", response_model=Json, status_code=201)
def object_to(
    app_id: str, body: ObjectIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Object to an application in publicity (any account)."""
    return _procedure(request, services).object(actor, app_id, body.text)


@router.post("/v1/registrations/{app_id}/resolve", response_model=Json)
def resolve(
    app_id: str, body: ResolveIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Resolve an objection: uphold it (the application is rejected) or dismiss it (admin)."""
    step = RegStep.UPHOLD if body.verdict == "uphold" else RegStep.DISMISS
    return _step(
        request, services, actor, app_id, step, comment=body.comment, objection=body.objection
    )


@router.post("/v1/registrations/{app_id}/withdraw", response_model=Json)
def withdraw(
    app_id: str, body: StepIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Withdraw your own open application (bureau)."""
    return _step(request, services, actor, app_id, RegStep.WITHDRAW, comment=body.comment)


@router.post("/v1/registrations/{app_id}/issue", response_model=IssuedOut)
def issue(app_id: str, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """Load the reviewed file and issue the certificate (凭证发放), once publicity is over and
    every objection resolved (admin)."""
    shown, reg = _procedure(request, services).issue(actor, app_id)
    return IssuedOut(application=shown, certificate=reg.certificate)
