"""The negative list (负面清单) and the important-data catalog (重要数据目录) over HTTP.

Every account reads both lists; the admin, and a bureau for its own datasets, adds to
them; only the admin takes an item off, with a reason.  ``…/co-approve``: the admin's
approval of a grant application's strictly limited items (docs/governance.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field

from policies import Actor
from sandbox.core.data_controls import ItemKind
from sandbox.governance.co_approval import co_approve
from sandbox.governance.data_lists import DataLists

from .catalog import _applications
from .context import ActorDep, Services, ServicesDep
from .models import In, Json
from .registration import clock_of

__all__ = ["router"]

router = APIRouter(tags=["data lists"])

Item = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$",
        description="domain.table (the dataset) or domain.table.column",
    ),
]
ItemId = Annotated[str, Field(pattern=r"^dl_[0-9a-f]{16}$")]


class NegativeIn(In):
    item: Item
    kind: Literal["prohibited", "limited"]
    reason: str = Field(min_length=1, max_length=2000)


class ImportantIn(In):
    item: Item
    reason: str = Field(min_length=1, max_length=2000)


class RemoveIn(In):
    reason: str = Field(min_length=1, max_length=2000)


def _lists(request: Request, services: Services) -> DataLists:
    return DataLists(services.platform, clock=clock_of(request))


def _read(
    request: Request,
    services: Services,
    actor: Actor,
    name: str,
    dataset: str | None,
    removed: bool,
) -> Any:
    return _lists(request, services).read(actor, name, dataset=dataset, removed=removed)


@router.get("/v1/negative-list", response_model=list[Json])
def negative_list(
    request: Request,
    actor: ActorDep,
    services: ServicesDep,
    dataset: Annotated[str | None, Query(max_length=130)] = None,
    removed: bool = False,
) -> Any:
    """The negative list: prohibited and strictly limited items, with why (any account)."""
    return _read(request, services, actor, "negative", dataset, removed)


@router.post("/v1/negative-list", response_model=Json, status_code=201)
def negative_add(body: NegativeIn, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """Name a prohibited or strictly limited item (admin; a bureau for its own datasets)."""
    return _lists(request, services).add(actor, ItemKind(body.kind), body.item, reason=body.reason)


@router.post("/v1/negative-list/{item_id}/remove", response_model=Json)
def negative_remove(
    item_id: ItemId, body: RemoveIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Take an item off the negative list (admin only)."""
    return _lists(request, services).remove(actor, item_id, reason=body.reason)


@router.get("/v1/important-data", response_model=list[Json])
def important_list(
    request: Request,
    actor: ActorDep,
    services: ServicesDep,
    dataset: Annotated[str | None, Query(max_length=130)] = None,
    removed: bool = False,
) -> Any:
    """The important-data catalog (any account)."""
    return _read(request, services, actor, "important", dataset, removed)


@router.post("/v1/important-data", response_model=Json, status_code=201)
def important_mark(
    body: ImportantIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Mark a dataset or column as important data (admin; a bureau for its own datasets)."""
    return _lists(request, services).add(actor, ItemKind.IMPORTANT, body.item, reason=body.reason)


@router.post("/v1/important-data/{item_id}/remove", response_model=Json)
def important_unmark(
    item_id: ItemId, body: RemoveIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Take an item off the important-data catalog (admin only)."""
    return _lists(request, services).remove(actor, item_id, reason=body.reason)


@router.post("/v1/grant-applications/{app_id}/co-approve", response_model=Json)
def application_co_approve(
    app_id: str, body: RemoveIn, request: Request, actor: ActorDep, services: ServicesDep
) -> Any:
    """Approve the strictly limited items a grant application asks for (admin); the
    bureau's approval then issues the grant."""
    return co_approve(_applications(request, services), actor, app_id, reason=body.reason)
