"""Alert routes (监测预警): list, acknowledge and resolve alerts; set response policies.

Bureaus see the alerts on datasets of their domains, auditors and the admin every
alert, operators none (``alerts.not_visible``, 403).  Every call is audited (the
desk, ``sandbox.monitoring.desk``), a refusal with its rule.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from sandbox.monitoring import AlertFilter
from sandbox.monitoring.desk import AlertDesk

from .context import ActorDep, Services, ServicesDep

__all__ = ["AlertOut", "PolicyIn", "PolicyOut", "ReasonIn", "ResolveIn", "router"]

router = APIRouter(tags=["alerts"])

Severity = Literal["info", "warning", "high"]


class AlertOut(BaseModel):
    id: str
    detector: str
    severity: Severity
    operator: str
    dataset: str | None
    state: Literal["open", "acknowledged", "resolved"]
    summary: str
    evidence: list[int] = Field(description="Audit entries' seq numbers.")
    responses: list[dict[str, Any]]
    opened_at: str
    updated_at: str
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    acknowledged_reason: str | None = None
    resolved_by: str | None = None
    resolved_at: str | None = None
    resolved_reason: str | None = None
    reversed: list[dict[str, Any]] | None = None


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class ResolveIn(ReasonIn):
    reverse: bool = Field(
        default=False, description="Undo the responses the alert set off (bureau or admin)."
    )


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Literal["dataset", "grant"]
    target: str = Field(min_length=1, max_length=130)
    action: Literal["notify", "hold", "suspend", "freeze"]
    min_severity: Literal["warning", "high"] = "high"
    reason: str = Field(default="", max_length=2000)


class PolicyOut(BaseModel):
    scope: str
    target: str
    domain: str
    action: str
    min_severity: str
    set_by: str
    set_at: str
    reason: str


def _desk(services: Services) -> AlertDesk:
    return AlertDesk(services.platform)


@router.get("/v1/alerts", response_model=list[AlertOut])
def list_alerts(
    actor: ActorDep,
    services: ServicesDep,
    state: Annotated[Literal["open", "acknowledged", "resolved"] | None, Query()] = None,
    severity: Annotated[Severity | None, Query(description="This severity and above.")] = None,
    dataset: Annotated[str | None, Query(max_length=130)] = None,
    operator: Annotated[str | None, Query(max_length=63)] = None,
) -> Any:
    """The alerts you may see, newest first (at most 500)."""
    filters = AlertFilter(state=state, severity=severity, dataset=dataset, operator=operator)
    return _desk(services).list_alerts(actor, filters)


@router.get("/v1/alerts/policies", response_model=list[PolicyOut])
def list_policies(actor: ActorDep, services: ServicesDep) -> Any:
    """The response policies set on datasets and grants you may see."""
    return _desk(services).policies(actor)


@router.put("/v1/alerts/policies", response_model=PolicyOut)
def set_policy(body: PolicyIn, actor: ActorDep, services: ServicesDep) -> Any:
    """Set the response to severe alerts on a dataset or grant of your domain (bureau)."""
    return _desk(services).set_policy(
        actor,
        scope=body.scope,
        target=body.target,
        action=body.action,
        min_severity=body.min_severity,
        reason=body.reason,
    )


@router.post("/v1/alerts/{alert_id}/ack", response_model=AlertOut)
def acknowledge(
    alert_id: Annotated[str, Field(max_length=24)],
    body: ReasonIn,
    actor: ActorDep,
    services: ServicesDep,
) -> Any:
    """open -> acknowledged, with your reason."""
    return _desk(services).acknowledge(actor, alert_id[:24], body.reason)


@router.post("/v1/alerts/{alert_id}/resolve", response_model=AlertOut)
def resolve(
    alert_id: Annotated[str, Field(max_length=24)],
    body: ResolveIn,
    actor: ActorDep,
    services: ServicesDep,
) -> Any:
    """-> resolved, with your reason; ``reverse`` also undoes its responses."""
    return _desk(services).resolve(actor, alert_id[:24], body.reason, reverse=body.reverse)
