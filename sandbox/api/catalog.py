"""The catalog operators browse, and grant applications (数据授权申请) over HTTP.

``GET /v1/catalog`` and ``/v1/catalog/{dataset}``: every registered dataset with its
columns' level and role (never values), update frequency, quality, price terms and how
to apply.  ``POST /v1/grant-applications`` (operator); ``…/approve`` and ``…/reject``
(the owning bureau); ``…/withdraw`` (the operator); both sides, admins and auditors
read the exchange.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field

from policies import ReleaseMode, Use
from sandbox.governance.applications import Applications, Asked, Decided
from sandbox.governance.catalog_view import read_catalog

from .context import ActorDep, Services, ServicesDep
from .models import In, Json
from .registration import clock_of

__all__ = ["router"]

router = APIRouter(tags=["catalog"])

Column = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]


class GrantApplyIn(In):
    dataset: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}$")
    purpose_code: str = Field(max_length=63, examples=["inclusive-finance"])
    purpose_text: str = Field(min_length=1, max_length=2000)
    columns: list[Column] = Field(min_length=1, max_length=200)
    groupable: list[Column] = Field(default_factory=list, max_length=200)
    duration_days: int = Field(ge=1, le=3660)
    use: Literal["public_interest", "commercial"]
    release_mode: Literal["dp", "reviewed"] | None = Field(
        default=None, description="Left out: the bureau chooses on approval (default dp)."
    )
    note: str = Field(default="", max_length=2000)


class GrantApproveIn(In):
    reason: str = Field(default="", max_length=2000, description="Required when amending.")
    columns: list[Column] | None = None
    groupable: list[Column] | None = None
    duration_days: int | None = Field(default=None, ge=1, le=3660)
    use: Literal["public_interest", "commercial"] | None = None
    release_mode: Literal["dp", "reviewed"] | None = None
    k: int | None = Field(default=None, ge=2)
    epsilon_total: float | None = Field(default=None, gt=0)
    epsilon_per_query: float | None = Field(default=None, gt=0)
    queries_per_day: int | None = Field(default=None, ge=1)
    rows_per_day: int | None = Field(default=None, ge=1)
    price_per_query_fen: int = Field(default=0, ge=0)
    price_per_million_rows_fen: int = Field(default=0, ge=0)


class GrantReasonIn(In):
    reason: str = Field(default="", max_length=2000)


def _applications(request: Request, services: Services) -> Applications:
    return Applications(services.platform, services.administration(), clock=clock_of(request))


@router.get("/v1/catalog", response_model=list[Json])
def catalog(actor: ActorDep, services: ServicesDep) -> Any:
    """Every registered dataset as operators browse it before applying (never values)."""
    return read_catalog(services.platform, actor)


@router.get("/v1/catalog/{dataset}", response_model=Json)
def catalog_entry(dataset: str, actor: ActorDep, services: ServicesDep) -> Any:
    """One dataset of the catalog."""
    return read_catalog(services.platform, actor, dataset)[0]


@router.post("/v1/grant-applications", response_model=Json, status_code=201)
def apply(body: GrantApplyIn, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """Apply for a grant: purpose, columns, duration, use and (optionally) release mode."""
    asked = Asked(
        dataset=body.dataset,
        purpose_code=body.purpose_code,
        purpose_text=body.purpose_text,
        columns=tuple(body.columns),
        groupable=tuple(body.groupable),
        duration_days=body.duration_days,
        use=Use(body.use),
        release_mode=None if body.release_mode is None else ReleaseMode(body.release_mode),
        note=body.note,
    )
    return _applications(request, services).apply(actor, asked)


@router.get("/v1/grant-applications", response_model=list[Json])
def applications(
    request: Request,
    actor: ActorDep,
    services: ServicesDep,
    state: Annotated[
        Literal["submitted", "approved", "amended", "rejected", "withdrawn"] | None, Query()
    ] = None,
) -> Any:
    """Applications you are party to (operator: yours; bureau: your domains'; admin and
    auditor: all)."""
    return _applications(request, services).read(actor, state=state)


@router.get("/v1/grant-applications/{app_id}", response_model=Json)
def application(app_id: str, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """One application and every step of its exchange."""
    return _applications(request, services).read(actor, app_id)[0]


@router.post("/v1/grant-applications/{app_id}/approve", response_model=Json)
def approve(
    app_id: str, body: GrantApproveIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Approve (the grant is issued), amending what was asked where the body says (bureau)."""
    decided = Decided(
        columns=None if body.columns is None else tuple(body.columns),
        groupable=None if body.groupable is None else tuple(body.groupable),
        duration_days=body.duration_days,
        use=None if body.use is None else Use(body.use),
        release_mode=None if body.release_mode is None else ReleaseMode(body.release_mode),
        k=body.k,
        epsilon_total=body.epsilon_total,
        epsilon_per_query=body.epsilon_per_query,
        queries_per_day=body.queries_per_day,
        rows_per_day=body.rows_per_day,
        price_per_query=body.price_per_query_fen,
        price_per_million_rows=body.price_per_million_rows_fen,
    )
    return _applications(request, services).approve(actor, app_id, decided, reason=body.reason)


@router.post("/v1/grant-applications/{app_id}/reject", response_model=Json)
def reject(
    app_id: str, body: GrantReasonIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Reject, with a reason the operator reads (bureau)."""
    return _applications(request, services).reject(actor, app_id, reason=body.reason)


@router.post("/v1/grant-applications/{app_id}/withdraw", response_model=Json)
def withdraw(
    app_id: str, body: GrantReasonIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Withdraw your application while it waits (operator)."""
    return _applications(request, services).withdraw(actor, app_id, reason=body.reason)
