"""``GET /v1/datasets/{dataset}/quality``: a dataset's quality report (数据质量评测).

Aggregates only (counts below k withheld), with timeliness as of now and every
version's score and digest; anyone who may read the catalog entry may read it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from sandbox.governance.quality_view import read_quality

from .context import ActorDep, ServicesDep
from .models import Json
from .registration import clock_of

__all__ = ["router"]

router = APIRouter(tags=["catalog"])


@router.get("/v1/datasets/{dataset}/quality", response_model=Json)
def quality(dataset: str, request: Request, actor: ActorDep, services: ServicesDep) -> Any:
    """The quality report of the newest version, and the history across versions."""
    return read_quality(services.platform, actor, dataset, clock=clock_of(request))
