"""Data products (数据产品) over HTTP: publish, propose, approve, subscribe, run.

``POST /v1/products`` (the owning bureau publishes), ``POST /v1/products/proposals`` (an
operator proposes), ``…/{id}/approve|reject|withdraw`` (the bureau), ``GET /v1/products``
and ``/v1/products/{id}`` (usage counts included), ``…/{id}/subscriptions`` (an operator
subscribes), ``/v1/product-subscriptions/{id}/approve|reject`` (the bureau: a grant is
issued), ``…/{id}/run`` (the subscribed operator: a job, followed with ``/v1/jobs``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field

from policies import Actor, ReleaseMode, Use
from sandbox.governance.products import Offer, Products
from sandbox.jobs.results import result_rows
from sandbox.jobs.store import JobState
from sandbox.query.product_guard import template_guard

from .context import ActorDep, MetaDep, Services, ServicesDep
from .models import In, Json
from .operator import job_out
from .registration import clock_of

__all__ = ["router"]

router = APIRouter(tags=["products"])

Column = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]


class OfferIn(In):
    dataset: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}$")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=4000)
    template: str = Field(
        min_length=1,
        max_length=20_000,
        examples=[
            "SELECT district, count(*) AS n FROM health.claims WHERE gender = :g GROUP BY district"
        ],
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        examples=[{"g": {"type": "string", "domain": "health.claims.gender"}}],
    )
    columns: list[Column] = Field(min_length=1, max_length=200)
    groupable: list[Column] = Field(default_factory=list, max_length=200)
    price_per_run_fen: int = Field(default=0, ge=0, le=100_000_000)
    terms: str = Field(default="", max_length=4000)
    public_interest: str = Field(
        default="free for public-interest use stated in the subscription", max_length=2000
    )


class ReasonIn(In):
    reason: str = Field(default="", max_length=2000)


class SubscribeIn(In):
    use: Literal["public_interest", "commercial"]
    release_mode: Literal["dp", "reviewed"] = "dp"
    purpose_text: str = Field(min_length=1, max_length=2000)
    duration_days: int = Field(ge=1, le=3660)


class RunIn(In):
    params: dict[str, Any] = Field(default_factory=dict)


def _offer(body: OfferIn) -> Offer:
    return Offer(
        dataset=body.dataset,
        title=body.title,
        description=body.description,
        template=body.template,
        params=body.params,
        columns=tuple(body.columns),
        groupable=tuple(body.groupable),
        price_per_run=body.price_per_run_fen,
        terms=body.terms,
        public_interest=body.public_interest,
    )


def _products(
    request: Request, services: Services, meta: Any = None, wait_s: float | None = None
) -> Products:
    def submit(actor: Actor, sql: str, purpose: str) -> dict[str, Any]:
        job = services.desk.submit(
            actor,
            sql,
            purpose=purpose,
            fmt="json",
            rid=meta.request_id,
            client=meta.client,
            wait_s=wait_s,
        )
        if job.state is JobState.SUCCEEDED:  # delivered with its release, as POST /v1/jobs
            return job_out(job, result_rows(services.desk.just_released(job))).model_dump()
        return job_out(job).model_dump()

    services.settings()
    return Products(
        services.platform,
        services.administration(),
        guard=template_guard(services.platform),
        submit=submit if meta is not None else None,
        clock=clock_of(request),
    )


@router.post("/v1/products", response_model=Json, status_code=201)
def publish(body: OfferIn, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """Publish a parameterised analysis of your dataset (bureau); the guard checks it for
    every parameter's sample values."""
    return _products(request, services).publish(actor, _offer(body))


@router.post("/v1/products/proposals", response_model=Json, status_code=201)
def propose(body: OfferIn, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """Propose a product for the owning bureau to approve (operator)."""
    return _products(request, services).propose(actor, _offer(body))


@router.get("/v1/products", response_model=list[Json])
def listing(request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """Published products with their usage counts (and proposals you are party to)."""
    return _products(request, services).listing(actor)


@router.get("/v1/products/{pid}", response_model=Json)
def show(pid: str, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """One product, its usage, and the subscriptions you are party to."""
    return _products(request, services).show(actor, pid)


@router.post("/v1/products/{pid}/approve", response_model=Json)
def approve(pid: str, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """Approve a proposed product (the owning bureau); the guard checks it again."""
    return _products(request, services).decide(actor, pid, approve=True)


@router.post("/v1/products/{pid}/reject", response_model=Json)
def reject(
    pid: str, body: ReasonIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Reject a proposed product, with a reason (the owning bureau)."""
    return _products(request, services).decide(actor, pid, approve=False, reason=body.reason)


@router.post("/v1/products/{pid}/withdraw", response_model=Json)
def withdraw(
    pid: str, body: ReasonIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Withdraw a published product, with a reason (the owning bureau)."""
    return _products(request, services).withdraw(actor, pid, reason=body.reason)


@router.post("/v1/products/{pid}/subscriptions", response_model=Json, status_code=201)
def subscribe(
    pid: str, body: SubscribeIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Ask to use a published product: public-interest (free, on its conditions) or
    commercial (its price per run), and the release mode (operator)."""
    return _products(request, services).subscribe(
        actor,
        pid,
        use=Use(body.use),
        release_mode=ReleaseMode(body.release_mode),
        purpose_text=body.purpose_text,
        duration_days=body.duration_days,
    )


@router.post("/v1/product-subscriptions/{sid}/approve", response_model=Json)
def approve_subscription(sid: str, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """Approve a subscription: a grant for the product's queries is issued (bureau)."""
    return _products(request, services).decide_subscription(actor, sid, approve=True)


@router.post("/v1/product-subscriptions/{sid}/reject", response_model=Json)
def reject_subscription(
    sid: str, body: ReasonIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Reject a subscription, with a reason (bureau)."""
    return _products(request, services).decide_subscription(
        actor, sid, approve=False, reason=body.reason
    )


@router.post("/v1/products/{pid}/run", response_model=Json, status_code=202)
def run(
    pid: str,
    body: RunIn,
    request: Request,
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    wait: Annotated[bool, Query(description="Wait for the outcome (small queries).")] = False,
    timeout: Annotated[float, Query(gt=0, le=300)] = 10.0,
) -> Any:
    """Run the product with these parameters (subscribed operator): a job under the
    subscription's grant, through the same guard, disclosure and audit as any query."""
    products = _products(request, services, meta, timeout if wait else None)
    return products.run(actor, pid, body.params)
