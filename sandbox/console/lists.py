"""The negative list (负面清单) and the important-data catalog (重要数据目录) in the console.

Every role reads both (GET /v1/negative-list, /v1/important-data); the admin, and a
bureau for its own datasets, adds an item; only the admin takes one off.  The API
functions decide, so the forms offered are a convenience, not the authorization.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from sandbox.api import data_lists as lists_routes
from sandbox.api.context import ServicesDep
from sandbox.core.errors import NotFound

from .forms import as_model
from .render import ConsoleRoute, page
from .session import ConsoleActor, Form

__all__ = ["router"]

router = APIRouter(prefix="/console/lists", route_class=ConsoleRoute, include_in_schema=False)


@router.get("")
def lists(request: Request, actor: ConsoleActor, services: ServicesDep) -> Response:
    """Both lists, with why each item is on it."""
    negative = lists_routes.negative_list(request, actor, services)
    important = lists_routes.important_list(request, actor, services)
    return page(request, "lists.html", actor, negative=negative, important=important)


@router.post("/negative")
def add_negative(
    request: Request, form: Form, actor: ConsoleActor, services: ServicesDep
) -> Response:
    """Name a prohibited or strictly limited item (POST /v1/negative-list)."""
    body = as_model(
        lists_routes.NegativeIn,
        {
            "item": form.get("item", "").strip(),
            "kind": form.get("kind", ""),
            "reason": form.get("reason", ""),
        },
    )
    lists_routes.negative_add(body, request, actor, services)
    return RedirectResponse("/console/lists", status_code=303)


@router.post("/important")
def add_important(
    request: Request, form: Form, actor: ConsoleActor, services: ServicesDep
) -> Response:
    """Mark a dataset or column as important data (POST /v1/important-data)."""
    body = as_model(
        lists_routes.ImportantIn,
        {"item": form.get("item", "").strip(), "reason": form.get("reason", "")},
    )
    lists_routes.important_mark(body, request, actor, services)
    return RedirectResponse("/console/lists", status_code=303)


@router.post("/{which}/{item_id}/remove")
def remove(
    which: str,
    item_id: str,
    request: Request,
    form: Form,
    actor: ConsoleActor,
    services: ServicesDep,
) -> Response:
    """Take an item off a list, with a reason (POST /v1/negative-list/{id}/remove,
    /v1/important-data/{id}/remove; admin only)."""
    body = as_model(lists_routes.RemoveIn, {"reason": form.get("reason", "")})
    if which == "negative":
        lists_routes.negative_remove(item_id, body, request, actor, services)
    elif which == "important":
        lists_routes.important_unmark(item_id, body, request, actor, services)
    else:
        raise NotFound("no such list", rule="console.form")
    return RedirectResponse("/console/lists", status_code=303)
