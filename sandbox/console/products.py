"""Data products (数据产品) in the console, beyond the operator's listing and subscription
(``operator.py``): the bureau publishes a product on its dataset, decides proposals and
subscriptions, withdraws a product; a subscribed operator runs one with parameters and
reads the result on the job's page.  Each form calls the products API function, whose
procedure decides (role, domain, state) and records the step.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from sandbox.api import products as products_routes
from sandbox.api.context import ServicesDep, request_meta
from sandbox.core.errors import InvalidInput, NotFound

from .forms import as_model, lines
from .render import ConsoleRoute, page
from .session import Bureau, Form, Operator

__all__ = ["form_params", "router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def form_params(declared: dict[str, dict[str, Any]], form: dict[str, str]) -> dict[str, Any]:
    """The run form's ``param-<name>`` fields as the template's types: an ``int`` or
    ``float`` typed as digits becomes that number, an ``enum`` value the listed value it
    spells; anything else stays text, for the template's own check to refuse by rule."""
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        raw = form.get(f"param-{name}", "").strip()
        kind = spec.get("type")
        value: Any = raw
        try:
            if kind == "int":
                value = int(raw)
            elif kind == "float":
                value = float(raw)
        except ValueError:
            value = raw
        if kind == "enum":
            value = next((v for v in spec.get("values", ()) if str(v) == raw), raw)
        values[name] = value
    return values


@router.get("/console/bureau/products")
def products(request: Request, actor: Bureau, services: ServicesDep) -> Response:
    """Products on your domains' datasets with their subscriptions (GET /v1/products,
    GET /v1/products/{id}), the publication form, and each decision's form."""
    listed = products_routes.listing(request, actor, services)
    own = [p["id"] for p in listed if p["dataset"].split(".", 1)[0] in actor.domains]
    shown = [products_routes.show(pid, request, actor, services) for pid in own]
    return page(request, "bureau/products.html", actor, products=shown)


@router.post("/console/bureau/products")
def publish(request: Request, form: Form, actor: Bureau, services: ServicesDep) -> Response:
    """Publish a product on one of your datasets (POST /v1/products)."""
    try:
        params = json.loads(form.get("params") or "{}")
    except ValueError:
        raise InvalidInput(
            "the parameters are not JSON (an object of name → declaration)",
            rule="console.form",
        ) from None
    fields: dict[str, Any] = {
        "dataset": form.get("dataset", "").strip(),
        "title": form.get("title", "").strip(),
        "description": form.get("description", "").strip(),
        "template": form.get("template", ""),
        "params": params,
        "columns": lines(form.get("columns")),
        "groupable": lines(form.get("groupable")),
        "price_per_run_fen": form.get("price_per_run_fen", "").strip() or 0,
        "terms": form.get("terms", ""),
    }
    products_routes.publish(as_model(products_routes.OfferIn, fields), request, actor, services)
    return RedirectResponse("/console/bureau/products", status_code=303)


@router.post("/console/bureau/products/{pid}/{step}")
def product_step(
    pid: str, step: str, request: Request, form: Form, actor: Bureau, services: ServicesDep
) -> Response:
    """Approve or reject a proposed product, or withdraw a published one
    (POST /v1/products/{id}/approve, …/reject, …/withdraw)."""
    body = as_model(products_routes.ReasonIn, {"reason": form.get("reason", "")})
    if step == "approve":
        products_routes.approve(pid, request, actor, services)
    elif step == "reject":
        products_routes.reject(pid, body, request, actor, services)
    elif step == "withdraw":
        products_routes.withdraw(pid, body, request, actor, services)
    else:
        raise NotFound("no such step", rule="console.form")
    return RedirectResponse("/console/bureau/products", status_code=303)


@router.post("/console/bureau/subscriptions/{sid}/{verdict}")
def subscription(
    sid: str, verdict: str, request: Request, form: Form, actor: Bureau, services: ServicesDep
) -> Response:
    """Approve a subscription (a grant for the product's queries is issued) or reject it
    with a reason (POST /v1/product-subscriptions/{id}/approve, …/reject)."""
    body = as_model(products_routes.ReasonIn, {"reason": form.get("reason", "")})
    if verdict == "approve":
        products_routes.approve_subscription(sid, request, actor, services)
    elif verdict == "reject":
        products_routes.reject_subscription(sid, body, request, actor, services)
    else:
        raise NotFound("no such step", rule="console.form")
    return RedirectResponse("/console/bureau/products", status_code=303)


@router.post("/console/operator/products/{pid}/run")
def run(pid: str, request: Request, form: Form, actor: Operator, services: ServicesDep) -> Response:
    """Run a subscribed product with parameters (POST /v1/products/{id}/run): a job, shown
    on its page as any other."""
    declared = products_routes.show(pid, request, actor, services).get("params") or {}
    body = as_model(products_routes.RunIn, {"params": form_params(declared, form)})
    ran = products_routes.run(pid, body, request, actor, request_meta(request), services)
    return RedirectResponse(f"/console/operator/jobs/{ran['job']['id']}", status_code=303)
