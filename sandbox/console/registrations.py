"""The registration procedure's forms for every role (登记申请、异议、撤回).

A bureau applies (the classification as TOML text and a file under the home's
``imports/`` or an upload's id) and withdraws its own open application; anyone with an
account reads the applications in publicity and objects to one; the admin resolves an
objection.  Each form calls the registration API function, whose procedure decides
(role, domain, state), records the step and names the rule of a refusal.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from policies import Actor, Role
from sandbox.api import registration as registration_routes
from sandbox.api.context import ServicesDep

from .forms import as_model, optional
from .render import ConsoleRoute, page
from .session import ConsoleActor, Form

__all__ = ["router"]

router = APIRouter(
    prefix="/console/registrations", route_class=ConsoleRoute, include_in_schema=False
)

_PAGES = {
    Role.BUREAU: "/console/bureau/registrations",
    Role.ADMIN: "/console/admin/registrations",
}


def _back(actor: Actor) -> Response:
    return RedirectResponse(_PAGES.get(actor.role, "/console/registrations"), status_code=303)


@router.get("")
def publicity(request: Request, actor: ConsoleActor, services: ServicesDep) -> Response:
    """The applications this account may read (GET /v1/registrations): for an operator or
    an auditor, every one in publicity, each with the objection form while it runs."""
    found = registration_routes.applications(request, actor, services)
    return page(request, "bureau/registrations.html", actor, registrations=found)


@router.post("")
def apply(request: Request, form: Form, actor: ConsoleActor, services: ServicesDep) -> Response:
    """Apply to register a dataset of your domain (POST /v1/registrations; bureau)."""
    source: dict[str, Any] = {
        "path": optional(form.get("path")),
        "upload_id": optional(form.get("upload_id")),
        "format": optional(form.get("format")),
    }
    listing: dict[str, Any] = {
        "public_interest": form.get("public_interest") == "on",
        "commercial": form.get("commercial") == "on",
        "terms": form.get("terms", ""),
    }
    for name in ("price_per_query_fen", "price_per_million_rows_fen"):
        if optional(form.get(name)) is not None:
            listing[name] = form[name].strip()
    fields: dict[str, Any] = {
        "classification": form.get("classification", ""),
        "update_frequency": form.get("update_frequency", "").strip(),
        "listing": listing,
        "engine": form.get("engine") or "duckdb",
    }
    if source["path"] or source["upload_id"]:  # neither: no source (a revision)
        fields["source"] = source
    body = as_model(registration_routes.RegistrationApplyIn, fields)
    registration_routes.apply(body, request, actor, services)
    return _back(actor)


@router.post("/{app_id}/object")
def object_to(
    app_id: str, request: Request, form: Form, actor: ConsoleActor, services: ServicesDep
) -> Response:
    """Object to an application in publicity (POST /v1/registrations/{id}/objections)."""
    body = as_model(registration_routes.ObjectIn, {"text": form.get("text", "")})
    registration_routes.object_to(app_id, body, request, actor, services)
    return _back(actor)


@router.post("/{app_id}/withdraw")
def withdraw(
    app_id: str, request: Request, form: Form, actor: ConsoleActor, services: ServicesDep
) -> Response:
    """Withdraw your own open application (POST /v1/registrations/{id}/withdraw; bureau)."""
    body = as_model(registration_routes.StepIn, {"comment": form.get("comment", "")})
    registration_routes.withdraw(app_id, body, request, actor, services)
    return _back(actor)


@router.post("/{app_id}/resolve")
def resolve(
    app_id: str, request: Request, form: Form, actor: ConsoleActor, services: ServicesDep
) -> Response:
    """Uphold or dismiss an objection (POST /v1/registrations/{id}/resolve; admin)."""
    body = as_model(
        registration_routes.ResolveIn,
        {
            "objection": form.get("objection", ""),
            "verdict": form.get("verdict", ""),
            "comment": form.get("comment", ""),
        },
    )
    registration_routes.resolve(app_id, body, request, actor, services)
    return _back(actor)
