"""The bureau's pages (数据持有部门): applications, grants, reviews, datasets, registrations,
alerts, usage.  Each calls the function behind the API route it mirrors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from policies import ReleaseMode
from sandbox.api import bureau as bureau_routes
from sandbox.api import catalog as catalog_routes
from sandbox.api import registration as registration_routes
from sandbox.api import shared
from sandbox.api.alerts import ReasonIn, ResolveIn, acknowledge, list_alerts, resolve
from sandbox.api.context import ServicesDep, request_meta
from sandbox.api.models import GrantIn, GrantNarrowIn, Reason, ReleaseModeIn, ReviewIn
from sandbox.api.registration import clock_of
from sandbox.core.errors import NotFound
from sandbox.governance.applications import Applications, Decided

from .forms import as_model, lines, optional
from .render import ConsoleRoute, page
from .session import Bureau, Form

__all__ = ["router"]


router = APIRouter(prefix="/console/bureau", route_class=ConsoleRoute, include_in_schema=False)


@router.get("")
def applications(request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """Grant applications on your domains' datasets (GET /v1/grant-applications)."""
    found = catalog_routes.applications(request, actor, services)
    found.sort(key=lambda a: (a["state"] != "submitted", a["submitted_at"]), reverse=False)
    return page(request, "bureau/applications.html", actor, applications=found, decide=True)


@router.post("/applications/{app_id}/approve")
def approve(
    app_id: str, request: Request, form: Form, actor: Bureau, services: ServicesDep
) -> Response:
    """Approve: the grant is issued (POST /v1/grant-applications/{id}/approve)."""
    mode = optional(form.get("release_mode"))
    decided = Decided(release_mode=None if mode is None else ReleaseMode(mode))
    reason = form.get("reason", "")
    procedure = Applications(services.platform, services.administration(), clock=clock_of(request))
    procedure.approve(actor, app_id, decided, reason=reason)
    return RedirectResponse("/console/bureau/grants", status_code=303)


@router.post("/applications/{app_id}/reject")
def reject(
    app_id: str, request: Request, form: Form, actor: Bureau, services: ServicesDep
) -> Response:
    """Reject with a reason the operator reads (POST /v1/grant-applications/{id}/reject)."""
    body = as_model(catalog_routes.GrantReasonIn, {"reason": form.get("reason", "")})
    catalog_routes.reject(app_id, body, request, actor, services)
    return RedirectResponse("/console/bureau", status_code=303)


@router.get("/grants")
def grants(request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """Your domains' grants with today's use (GET /v1/grants); suspend, resume, narrow."""
    found = shared.grants(actor, request_meta(request), services)
    datasets = shared.datasets(actor, request_meta(request), services)
    return page(
        request,
        "bureau/grants.html",
        actor,
        grants=found,
        grant_actions=True,
        datasets=[d.id for d in datasets],
    )


@router.post("/grants")
def issue(request: Request, form: Form, actor: Bureau, services: ServicesDep) -> Response:
    """Issue a grant on one of your datasets to one operator (POST /v1/grants)."""
    fields: dict[str, Any] = {
        name: form.get(name, "").strip()
        for name in ("dataset", "operator", "purpose_code", "purpose_text", "valid_until")
    }
    fields.update(
        max_level=form.get("max_level") or "L2",
        columns=lines(form.get("columns")) or None,
        groupable=lines(form.get("groupable")),
        release_mode=optional(form.get("release_mode")),
        use=form.get("use") or "public_interest",
        reason=form.get("reason", ""),
    )
    for name in ("epsilon_total", "queries_per_day"):
        if optional(form.get(name)) is not None:
            fields[name] = form[name].strip()
    bureau_routes.issue_grant(as_model(GrantIn, fields), actor, services)
    return RedirectResponse("/console/bureau/grants", status_code=303)


@router.get("/grants/{grant_id}")
def grant(grant_id: str, request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """One grant's terms and versions (GET /v1/grants/{id}), with the narrowing form."""
    shown = shared.grant(grant_id, actor, services)
    return page(request, "bureau/grant.html", actor, grant=shown["grant"], history=shown["history"])


@router.post("/grants/{grant_id}/narrow")
def narrow(
    grant_id: str, request: Request, form: Form, actor: Bureau, services: ServicesDep
) -> Response:
    """Narrow a grant; anything that would widen it is refused (POST /v1/grants/{id}/narrow)."""
    fields: dict[str, Any] = {"reason": form.get("reason", "")}
    for name in ("columns", "groupable"):
        if optional(form.get(name)) is not None:
            fields[name] = lines(form.get(name))
    for name in ("valid_until", "queries_per_day", "epsilon_total", "k"):
        if optional(form.get(name)) is not None:
            fields[name] = form[name].strip()
    body = as_model(GrantNarrowIn, fields)
    bureau_routes.narrow_grant(grant_id, body, actor, services)
    return RedirectResponse(f"/console/bureau/grants/{grant_id}", status_code=303)


def _status(change: str) -> None:
    def route(
        grant_id: str, request: Request, form: Form, actor: Bureau, services: ServicesDep
    ) -> Response:
        body = as_model(Reason, {"reason": form.get("reason", "")})
        method = getattr(services.administration(), f"{change}_grant")
        method(actor, grant_id, reason=body.reason)
        return RedirectResponse("/console/bureau/grants", status_code=303)

    route.__name__ = f"{change}_grant"
    route.__doc__ = f"{change.capitalize()} a grant (POST /v1/grants/{{id}}/{change})."
    router.post(f"/grants/{{grant_id}}/{change}")(route)


_status("suspend")
_status("resume")
_status("revoke")


@router.post("/grants/{grant_id}/release-mode")
def release_mode(
    grant_id: str, request: Request, form: Form, actor: Bureau, services: ServicesDep
) -> Response:
    """Choose the release mode, dp (with its budget) or reviewed
    (POST /v1/grants/{id}/release-mode)."""
    fields: dict[str, Any] = {"mode": form.get("mode", ""), "reason": form.get("reason", "")}
    for name in ("epsilon_total", "epsilon_per_query"):
        if optional(form.get(name)) is not None:
            fields[name] = form[name].strip()
    bureau_routes.set_release_mode(grant_id, as_model(ReleaseModeIn, fields), actor, services)
    return RedirectResponse(f"/console/bureau/grants/{grant_id}", status_code=303)


@router.get("/reviews")
def reviews(request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """Jobs awaiting your review (GET /v1/reviews)."""
    found = bureau_routes.review_queue(actor, request_meta(request), services)
    return page(request, "bureau/reviews.html", actor, jobs=found)


@router.get("/reviews/{job_id}")
def review_show(job_id: str, request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """The held result approval would release (GET /v1/reviews/{id}; your viewing is recorded)."""
    shown = bureau_routes.review_show(job_id, actor, request_meta(request), services)
    return page(
        request,
        "bureau/review.html",
        actor,
        job=shown.job,
        result=shown.result,
        failed=shown.failed,
    )


@router.post("/reviews/{job_id}")
def review(
    job_id: str, request: Request, form: Form, actor: Bureau, services: ServicesDep
) -> Response:
    """Approve or reject, with a reason (POST /v1/reviews/{id})."""
    body = as_model(
        ReviewIn, {"verdict": form.get("verdict", ""), "reason": form.get("reason", "")}
    )
    bureau_routes.review(job_id, body, actor, request_meta(request), services)
    return RedirectResponse("/console/bureau/reviews", status_code=303)


@router.get("/datasets")
def datasets(request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """Your domains' datasets with their classification (GET /v1/datasets)."""
    found = shared.datasets(actor, request_meta(request), services)
    return page(request, "bureau/datasets.html", actor, datasets=found)


@router.get("/registrations")
def registrations(request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """Registration applications and every step of their procedure (GET /v1/registrations)."""
    found = registration_routes.applications(request, actor, services)
    return page(request, "bureau/registrations.html", actor, registrations=found)


@router.get("/alerts")
def alerts(request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """Alerts on your domains' datasets (GET /v1/alerts)."""
    found = list_alerts(actor, services)
    return page(request, "alerts.html", actor, alerts=found, respond=True)


@router.post("/alerts/{alert_id}/{step}")
def alert_step(
    alert_id: str, step: str, request: Request, form: Form, actor: Bureau, services: ServicesDep
) -> Response:
    """Acknowledge or resolve an alert, with a reason (POST /v1/alerts/{id}/ack, …/resolve)."""
    body = as_model(ResolveIn, {"reason": form.get("reason", "")})
    if step == "ack":
        acknowledge(alert_id[:24], ReasonIn(reason=body.reason), actor, services)
    elif step == "resolve":
        resolve(alert_id[:24], body, actor, services)
    else:
        raise NotFound("no such step", rule="console.form")
    return RedirectResponse("/console/bureau/alerts", status_code=303)


@router.get("/usage")
def usage(request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """Usage and revenue per operator, grant and month (GET /v1/usage?monthly=true)."""
    rows = shared.usage(actor, services, monthly=True)
    return page(request, "bureau/usage.html", actor, rows=rows)
