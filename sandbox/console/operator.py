"""The operator's pages (授权运营主体): catalog, applications, query editor, jobs, budget.

Each page calls the function behind the API route it mirrors (same authorization,
same audit entries); nothing here reads data the API would not give this account.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from sandbox.api import catalog as catalog_routes
from sandbox.api import operator as operator_routes
from sandbox.api import products as products_routes
from sandbox.api import shared
from sandbox.api.context import ServicesDep, request_meta
from sandbox.api.models import ExplainIn, Format, JobIn
from sandbox.governance.catalog_view import read_catalog
from sandbox.jobs.results import result_rows
from sandbox.jobs.store import JobState

from .chart import bar_chart
from .forms import as_model, lines, optional
from .render import ConsoleRoute, page
from .session import Form, Operator

__all__ = ["router"]


router = APIRouter(prefix="/console/operator", route_class=ConsoleRoute, include_in_schema=False)
LIVE = (JobState.QUEUED.value, JobState.RUNNING.value)
CANCELLABLE = (*LIVE, JobState.AWAITING_REVIEW.value)


@router.get("")
def catalog(request: Request, actor: Operator, services: ServicesDep) -> Response:
    """The catalog (GET /v1/catalog) and my grants (GET /v1/grants)."""
    entries = read_catalog(services.platform, actor)
    grants = shared.grants(actor, request_meta(request), services)
    return page(request, "operator/catalog.html", actor, entries=entries, grants=grants)


@router.get("/catalog/{dataset}")
def dataset(dataset: str, request: Request, actor: Operator, services: ServicesDep) -> Response:
    """One dataset (GET /v1/catalog/{dataset}) with the application form."""
    entry = read_catalog(services.platform, actor, dataset)[0]
    return page(request, "operator/dataset.html", actor, entry=entry)


@router.post("/catalog/{dataset}/apply")
def apply(
    dataset: str, request: Request, form: Form, actor: Operator, services: ServicesDep
) -> Response:
    """Apply for a grant (POST /v1/grant-applications)."""
    body = as_model(
        catalog_routes.GrantApplyIn,
        {
            "dataset": dataset,
            "purpose_code": form.get("purpose_code", ""),
            "purpose_text": form.get("purpose_text", ""),
            "columns": lines(form.get("columns")),
            "groupable": lines(form.get("groupable")),
            "duration_days": form.get("duration_days") or 0,
            "use": form.get("use", ""),
            "release_mode": optional(form.get("release_mode")),
            "note": form.get("note", ""),
        },
    )
    catalog_routes.apply(body, request, actor, services)
    return RedirectResponse("/console/operator/applications", status_code=303)


@router.get("/applications")
def applications(request: Request, actor: Operator, services: ServicesDep) -> Response:
    """My grant applications and their steps (GET /v1/grant-applications)."""
    found = catalog_routes.applications(request, actor, services)
    return page(request, "operator/applications.html", actor, applications=found)


@router.get("/query")
def editor(request: Request, actor: Operator) -> Response:
    """The query editor."""
    return page(request, "operator/query.html", actor, sql="", purpose="", epsilon="")


@router.post("/explain")
def explain(request: Request, form: Form, actor: Operator, services: ServicesDep) -> Response:
    """Explain before spending (POST /v1/explain): rule, datasets, ε, accuracy."""
    body = as_model(ExplainIn, _query_fields(form))
    verdict = operator_routes.explain(body, actor, request_meta(request), services)
    if request.headers.get("hx-request") == "true":
        return page(request, "operator/explain.html", actor, verdict=verdict)
    return page(
        request,
        "operator/query.html",
        actor,
        verdict=verdict,
        sql=body.sql,
        purpose=body.purpose or "",
        epsilon=form.get("epsilon", ""),
    )


def _query_fields(form: dict[str, str]) -> dict[str, Any]:
    return {
        "sql": form.get("sql", ""),
        "purpose": optional(form.get("purpose")),
        "epsilon": optional(form.get("epsilon")),
    }


@router.post("/jobs")
def submit(request: Request, form: Form, actor: Operator, services: ServicesDep) -> Response:
    """Run the query as a job (POST /v1/jobs); refused at once with its rule if it could not."""
    body = as_model(JobIn, _query_fields(form))
    meta = request_meta(request)
    job = services.desk.submit(
        actor,
        body.sql,
        purpose=body.purpose,
        fmt=body.format,
        epsilon=body.epsilon,
        rid=meta.request_id,
        client=meta.client,
        wait_s=None,
    )
    return RedirectResponse(f"/console/operator/jobs/{job.id}", status_code=303)


@router.get("/jobs")
def jobs(request: Request, actor: Operator, services: ServicesDep) -> Response:
    """My jobs, newest first (GET /v1/jobs)."""
    meta = request_meta(request)
    found = services.desk.list_jobs(
        actor, states=None, limit=100, offset=0, rid=meta.request_id, client=meta.client
    )
    return page(request, "operator/jobs.html", actor, jobs=[j.to_dict() for j in found])


@router.get("/jobs/{job_id}")
def job(job_id: str, request: Request, actor: Operator, services: ServicesDep) -> Response:
    """A job: state, live progress, cancel; once released its table, chart and downloads."""
    meta = request_meta(request)
    found = services.desk.get(actor, job_id, meta.request_id, meta.client).to_dict()
    result = chart = None
    if found["state"] == JobState.SUCCEEDED.value:
        _, table = services.desk.result(actor, job_id, "json", meta.request_id, meta.client)
        result = result_rows(table)
        chart = bar_chart(result["columns"], result["rows"])
    return page(
        request,
        "operator/job.html",
        actor,
        job=found,
        result=result,
        chart=chart,
        live=LIVE,
        cancellable=CANCELLABLE,
    )


@router.get("/jobs/{job_id}/status")
def job_status(job_id: str, request: Request, actor: Operator, services: ServicesDep) -> Response:
    """The job's state and progress (htmx polls it); once it settles the page reloads."""
    meta = request_meta(request)
    found = services.desk.get(actor, job_id, meta.request_id, meta.client).to_dict()
    response = page(request, "operator/job_status.html", actor, job=found, live=LIVE)
    if found["state"] not in LIVE:
        response.headers["HX-Refresh"] = "true"
    return response


@router.post("/jobs/{job_id}/cancel")
def cancel(
    job_id: str, request: Request, form: Form, actor: Operator, services: ServicesDep
) -> Response:
    """Cancel a queued, running or held job (POST /v1/jobs/{id}/cancel)."""
    operator_routes.cancel_job(job_id, actor, request_meta(request), services)
    return RedirectResponse(f"/console/operator/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}/download")
def download(
    job_id: str,
    request: Request,
    actor: Operator,
    services: ServicesDep,
    format: Annotated[Format, Query()] = "csv",
) -> Response:
    """The released result as CSV, Parquet or Arrow (GET /v1/jobs/{id}/result)."""
    return operator_routes.job_result(job_id, actor, request_meta(request), services, format)


@router.get("/products")
def products(request: Request, actor: Operator, services: ServicesDep) -> Response:
    """Published data products with their template, parameters and price (GET /v1/products)."""
    found = products_routes.listing(request, actor, services)
    return page(request, "operator/products.html", actor, products=found)


@router.post("/products/{pid}/subscribe")
def subscribe(
    pid: str, request: Request, form: Form, actor: Operator, services: ServicesDep
) -> Response:
    """Ask to use a product (POST /v1/products/{id}/subscriptions); its bureau decides."""
    body = as_model(
        products_routes.SubscribeIn,
        {
            "use": form.get("use", ""),
            "release_mode": form.get("release_mode") or "dp",
            "purpose_text": form.get("purpose_text", ""),
            "duration_days": form.get("duration_days") or 0,
        },
    )
    products_routes.subscribe(pid, body, request, actor, services)
    return RedirectResponse("/console/operator/products", status_code=303)


@router.get("/jobs/{job_id}/receipt")
def receipt(job_id: str, request: Request, actor: Operator, services: ServicesDep) -> Response:
    """The signed release receipt as a JSON file (GET /v1/jobs/{id}/receipt); verify it
    offline with `sandbox receipt verify`."""
    signed = operator_routes.job_receipt(job_id, actor, request_meta(request), services)
    return Response(
        json.dumps(signed, ensure_ascii=False, indent=2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.receipt.json"'},
    )


@router.get("/budget")
def budget(request: Request, actor: Operator, services: ServicesDep) -> Response:
    """Grants with today's use, the ε spent and left (GET /v1/grants); statements by month."""
    grants = shared.grants(actor, request_meta(request), services)
    return page(request, "operator/budget.html", actor, grants=grants)
