"""The admin's pages (管理方): accounts, licences, tokens, freeze and unfreeze, settings.

The admin never sees data, grants or results here either: those pages do not exist
for this role, and the API functions they would call refuse it by policy.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from sandbox.api import admin as admin_routes
from sandbox.api import registration as registration_routes
from sandbox.api.context import ServicesDep, request_meta
from sandbox.api.models import AccountIn, FreezeIn, LicenceIn, Reason, SettingsIn
from sandbox.api.shared import settings_out
from sandbox.api.tokens import EnrolmentIn, issue_enrolment
from sandbox.core.errors import NotFound

from .forms import as_model, lines, optional
from .render import ConsoleRoute, page
from .session import Admin, Form

__all__ = ["router"]


router = APIRouter(prefix="/console/admin", route_class=ConsoleRoute, include_in_schema=False)


@router.get("")
def accounts(request: Request, actor: Admin, services: ServicesDep) -> Response:
    """Every account with role, domains, status, freeze and licence (GET /v1/admin/accounts)."""
    found = admin_routes.accounts(actor, services)
    return page(request, "admin/accounts.html", actor, accounts=found)


@router.post("/accounts")
def create(request: Request, form: Form, actor: Admin, services: ServicesDep) -> Response:
    """Create an account (POST /v1/admin/accounts): an operator with its licence, a bureau
    with its domains."""
    fields: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "role": form.get("role", ""),
        "organisation": form.get("organisation", "").strip(),
        "domains": lines(form.get("domains")),
    }
    if optional(form.get("licence_number")) is not None:
        fields["licence"] = {
            "number": form["licence_number"].strip(),
            "valid_until": optional(form.get("licence_until")),
        }
    admin_routes.create_account(as_model(AccountIn, fields), actor, services)
    return RedirectResponse("/console/admin", status_code=303)


@router.post("/accounts/{name}/enrolments")
def enrol(name: str, request: Request, form: Form, actor: Admin, services: ServicesDep) -> Response:
    """A one-time enrolment code for the account's holder, shown once on this page
    (POST /v1/admin/accounts/{name}/enrolments); the admin never sees the token."""
    body = as_model(EnrolmentIn, {"label": form.get("label", "")})
    issued = issue_enrolment(name, body, actor, services)
    return page(request, "admin/enrolment.html", actor, issued=issued)


@router.post("/accounts/{name}/disable")
def disable(
    name: str, request: Request, form: Form, actor: Admin, services: ServicesDep
) -> Response:
    """Disable an account (POST /v1/admin/accounts/{name}/disable)."""
    body = as_model(Reason, {"reason": form.get("reason", "")})
    admin_routes.disable_account(name, body, actor, services)
    return RedirectResponse("/console/admin", status_code=303)


@router.post("/accounts/{name}/licence")
def licence(
    name: str, request: Request, form: Form, actor: Admin, services: ServicesDep
) -> Response:
    """Change an operator's licence status or end (PUT /v1/admin/accounts/{name}/licence)."""
    fields: dict[str, Any] = {}
    for key in ("status", "valid_until"):
        if optional(form.get(key)) is not None:
            fields[key] = form[key].strip()
    admin_routes.licence(name, as_model(LicenceIn, fields), actor, services)
    return RedirectResponse("/console/admin", status_code=303)


@router.get("/accounts/{name}/tokens")
def tokens(name: str, request: Request, actor: Admin, services: ServicesDep) -> Response:
    """An account's tokens: ids, labels, expiry, never the tokens (GET …/tokens)."""
    found = admin_routes.tokens(name, actor, request_meta(request), services)
    return page(request, "admin/tokens.html", actor, account=name, tokens=found)


@router.post("/tokens/{token_id}/revoke")
def revoke(
    token_id: str, request: Request, form: Form, actor: Admin, services: ServicesDep
) -> Response:
    """Revoke a token (POST /v1/admin/tokens/{id}/revoke)."""
    record = admin_routes.revoke_token(token_id, actor, services)
    return RedirectResponse(f"/console/admin/accounts/{record.account}/tokens", status_code=303)


@router.get("/registrations")
def registrations(request: Request, actor: Admin, services: ServicesDep) -> Response:
    """Registration applications and their steps (GET /v1/registrations), with the admin's
    next step for each: accept, review, issue."""
    found = registration_routes.applications(request, actor, services)
    return page(request, "bureau/registrations.html", actor, registrations=found, decide=True)


@router.post("/registrations/{app_id}/{step}")
def registration_step(
    app_id: str, step: str, request: Request, form: Form, actor: Admin, services: ServicesDep
) -> Response:
    """One step of the procedure (POST /v1/registrations/{id}/accept, …/review, …/issue)."""
    verdict, comment = form.get("verdict", ""), form.get("comment", "")
    if step == "accept":
        body = as_model(registration_routes.AcceptStepIn, {"verdict": verdict, "comment": comment})
        registration_routes.accept(app_id, body, request, actor, services)
    elif step == "review":
        reviewed = as_model(
            registration_routes.ReviewStepIn, {"verdict": verdict, "comment": comment}
        )
        registration_routes.review(app_id, reviewed, request, actor, services)
    elif step == "issue":
        registration_routes.issue(app_id, request, actor, services)
    else:
        raise NotFound("no such step", rule="console.form")
    return RedirectResponse("/console/admin/registrations", status_code=303)


@router.get("/freeze")
def freeze_form(request: Request, actor: Admin, services: ServicesDep) -> Response:
    """The emergency freeze form, with what is frozen now."""
    found = admin_routes.accounts(actor, services)
    datasets = services.platform.catalog.list()
    return page(request, "admin/freeze.html", actor, accounts=found, datasets=datasets)


@router.post("/freeze")
def freeze(request: Request, form: Form, actor: Admin, services: ServicesDep) -> Response:
    """Freeze or unfreeze a dataset or an operator (POST /v1/admin/freeze, /unfreeze)."""
    target = form.get("target", "")
    kind, _, name = target.partition(":")
    body = as_model(
        FreezeIn,
        {
            "dataset": name if kind == "dataset" else None,
            "operator": name if kind == "operator" else None,
            "reason": form.get("reason", ""),
        },
    )
    if form.get("verb") == "unfreeze":
        admin_routes.unfreeze(body, actor, services)
    else:
        admin_routes.freeze(body, actor, services)
    return RedirectResponse("/console/admin/freeze", status_code=303)


@router.get("/settings")
def settings(request: Request, actor: Admin, services: ServicesDep) -> Response:
    """The settings in force and the run-time overrides (GET /v1/settings)."""
    shown = settings_out(services).model_dump()
    editable = sorted(SettingsIn.model_fields)
    return page(request, "admin/settings.html", actor, settings=shown, editable=editable)


@router.post("/settings")
def update_settings(request: Request, form: Form, actor: Admin, services: ServicesDep) -> Response:
    """Change a setting at run time (PUT /v1/admin/settings)."""
    name = form.get("name", "")
    if name not in SettingsIn.model_fields:
        name = "unknown"
    body = as_model(SettingsIn, {name: form.get("value", "").strip()})
    admin_routes.update_settings(body, actor, request_meta(request), services)
    return RedirectResponse("/console/admin/settings", status_code=303)
