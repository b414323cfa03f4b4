"""The console's remaining governance forms: a bureau's classification change and alert
response policies; the admin's co-approval of strictly limited items, approval of a
redeemed enrolment (with the fingerprint the holder reads out) and signing-key rotation.
Each calls the API function behind the route it mirrors (same policy decision, same
audit entry, same refusal rules).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from sandbox.api import admin as admin_routes
from sandbox.api import bureau as bureau_routes
from sandbox.api import catalog as catalog_routes
from sandbox.api import data_lists as lists_routes
from sandbox.api.alerts import PolicyIn, list_policies, set_policy
from sandbox.api.context import ServicesDep, request_meta
from sandbox.api.models import ClassifyIn
from sandbox.api.tokens import ApproveIn, approve_enrolment

from .forms import as_model
from .render import ConsoleRoute, page
from .session import Admin, Bureau, Form

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.post("/console/bureau/datasets/{dataset_id}/classification")
def classify(
    dataset_id: str, request: Request, form: Form, actor: Bureau, services: ServicesDep
) -> Response:
    """Change a dataset's classification (PUT /v1/datasets/{id}/classification): a new
    version and certificate, the data not reloaded."""
    body = as_model(ClassifyIn, {"classification": form.get("classification", "")})
    bureau_routes.classify(dataset_id, body, actor, request_meta(request), services)
    return RedirectResponse("/console/bureau/datasets", status_code=303)


@router.get("/console/bureau/alert-policies")
def policies(request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """The response policies on your datasets and grants (GET /v1/alerts/policies)."""
    found = list_policies(actor, services)
    return page(request, "bureau/policies.html", actor, policies=found)


@router.post("/console/bureau/alert-policies")
def policy(request: Request, form: Form, actor: Bureau, services: ServicesDep) -> Response:
    """Set the response to severe alerts on a dataset or grant (PUT /v1/alerts/policies)."""
    fields = {
        name: form.get(name, "").strip()
        for name in ("scope", "target", "action", "min_severity", "reason")
    }
    set_policy(as_model(PolicyIn, fields), actor, services)
    return RedirectResponse("/console/bureau/alert-policies", status_code=303)


@router.get("/console/admin/applications")
def applications(request: Request, actor: Admin, services: ServicesDep) -> Response:
    """Grant applications (GET /v1/grant-applications), with the co-approval form for the
    strictly limited items a submitted one asks for."""
    found = catalog_routes.applications(request, actor, services)
    found.sort(key=lambda a: (a["state"] != "submitted", a["submitted_at"]))
    return page(request, "admin/applications.html", actor, applications=found)


@router.post("/console/admin/applications/{app_id}/co-approve")
def co_approve(
    app_id: str, request: Request, form: Form, actor: Admin, services: ServicesDep
) -> Response:
    """Approve the strictly limited items (POST /v1/grant-applications/{id}/co-approve);
    the bureau's approval then issues the grant."""
    body = as_model(lists_routes.RemoveIn, {"reason": form.get("reason", "")})
    lists_routes.application_co_approve(app_id, body, request, actor, services)
    return RedirectResponse("/console/admin/applications", status_code=303)


@router.post("/console/admin/enrolments/approve")
def enrolment(request: Request, form: Form, actor: Admin, services: ServicesDep) -> Response:
    """Approve a redeemed enrolment as the second administrator, with the fingerprint its
    holder reads to you (POST /v1/admin/enrolments/{id}/approve)."""
    body = as_model(ApproveIn, {"fingerprint": form.get("fingerprint", "").strip()})
    approved = approve_enrolment(form.get("enrolment", "").strip()[:64], body, actor, services)
    return page(request, "admin/approved.html", actor, approved=approved)


@router.post("/console/admin/keys/rotate")
def rotate(request: Request, form: Form, actor: Admin, services: ServicesDep) -> Response:
    """Make a new audit signing key active (POST /v1/admin/keys/rotate); old public keys
    stay, so old signatures still verify."""
    rotated = admin_routes.rotate_key(actor, request_meta(request), services)
    return page(request, "admin/rotated.html", actor, rotated=rotated)
