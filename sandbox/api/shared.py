"""Routes every role uses, each answering within the caller's scope: who am I, datasets,
grants, usage, statements, the limits in force."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from policies import Actor, Role, Target
from policies.grants import list_grants
from policies.metering import budget_state, day_of, usage_today
from sandbox.core.data_controls import DatasetControls, load_controls
from sandbox.governance.listed_view import listed

from .context import ActorDep, MetaDep, Services, ServicesDep
from .models import DatasetOut, GrantOut, GrantUsage, Me, SettingsOut, UsageOut

__all__ = ["dataset_out", "grant_out", "router", "settings_out"]

router = APIRouter(tags=["everyone"])


@router.get("/v1/me", response_model=Me)
def me(actor: ActorDep) -> Any:
    """The account this token stands for (identity and role come from the token only)."""
    return Me(
        name=actor.name,
        role=actor.role.value,
        organisation=actor.organisation,
        domains=list(actor.domains),
        token_id=actor.token_id,
    )


def dataset_out(
    record: Any,
    *,
    provenance: bool,
    grants: list[Any] | None = None,
    controls: DatasetControls | None = None,
) -> DatasetOut:
    """``controls``: the negative list and important data, for an operator's view (a
    prohibited column shown by its name and that it is prohibited only)."""
    columns = {c.name: c.to_dict() for c in record.spec.columns}
    if grants is not None:
        for col in record.spec.columns:
            columns[col.name]["granted"] = any(g.allows_column(col.name, col.level) for g in grants)
    if controls is not None:
        columns = listed({"columns": columns}, controls)["columns"] or {}
    body = record.to_dict()
    return DatasetOut(
        id=record.id,
        domain=record.domain,
        title=record.title,
        description=record.description,
        entity_key=record.entity_key,
        row_count=record.row_count,
        version=record.version,
        frozen=record.frozen,
        columns=columns,
        source=body["source"] if provenance else None,
        grants=None if grants is None else [g.id for g in grants],
    )


def _scope(actor: Actor) -> list[Target]:
    if actor.role is Role.BUREAU:
        return [Target.domain(d) for d in actor.domains]
    return [Target.platform()]


@router.get("/v1/datasets", response_model=list[DatasetOut])
def datasets(actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """Datasets in your scope, with their column classification (never rows or values).

    Operators see the datasets they hold a live grant on (and which columns it covers);
    bureaus their domains'; auditors and admins all, with provenance.
    """
    authority = services.platform.authority
    targets = _scope(actor)
    decisions = [authority.decide(actor, "catalog.read", t, audit=False) for t in targets]
    for decision in decisions:
        if not decision.allowed:
            authority.record_decision(
                actor, decision, request_id=meta.request_id, client=meta.client
            )
            raise decision.error()
    catalog = services.platform.catalog
    now = datetime.now(UTC)
    if actor.role is Role.OPERATOR:
        with services.platform.engine.connect() as conn:
            held = [
                g
                for g in list_grants(conn, operator=actor.name)
                if g.status.value == "active" and g.live_at(now)
            ]
        out = []
        with services.platform.engine.connect() as conn:
            controls = load_controls(conn, {g.dataset for g in held})
        for dataset_id in sorted({g.dataset for g in held}):
            mine = [g for g in held if g.dataset == dataset_id]
            record = catalog.get(dataset_id)
            shown = controls[dataset_id]
            out.append(dataset_out(record, provenance=False, grants=mine, controls=shown))
    elif actor.role is Role.BUREAU:
        out = [
            dataset_out(r, provenance=True) for d in actor.domains for r in catalog.list(domain=d)
        ]
    else:
        out = [dataset_out(r, provenance=True) for r in catalog.list()]
    authority.record_decision(
        actor,
        decisions[0],
        details={"rows": len(out)},
        request_id=meta.request_id,
        client=meta.client,
    )
    return out


def grant_out(grant: Any, usage: GrantUsage | None = None) -> GrantOut:
    return GrantOut(**grant.to_dict(), usage=usage)


def _usage(services: Services, grants: list[Any]) -> dict[str, GrantUsage]:
    day = day_of(datetime.now(UTC))
    out = {}
    with services.platform.engine.connect() as conn:
        today = usage_today(conn, [g.id for g in grants], day)
        for grant in grants:
            used = today.get(grant.id)
            queries = used.queries if used else 0
            rows = used.rows_scanned if used else 0
            budget = budget_state(conn, grant.id) if grant.epsilon_total is not None else None
            out[grant.id] = GrantUsage(
                day=day,
                queries_today=queries,
                rows_scanned_today=rows,
                queries_remaining=None
                if grant.queries_per_day is None
                else max(0, grant.queries_per_day - queries),
                rows_remaining=None
                if grant.rows_per_day is None
                else max(0, grant.rows_per_day - rows),
                epsilon_spent=None if budget is None else budget.spent,
                epsilon_remaining=None if budget is None else budget.remaining,
            )
    return out


@router.get("/v1/grants", response_model=list[GrantOut])
def grants(
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    operator: Annotated[str | None, Query(max_length=63)] = None,
    domain: Annotated[str | None, Query(max_length=63)] = None,
) -> Any:
    """Grants in your scope, with today's use and the remaining quotas and budget.

    Operators: their own.  Bureaus: their domains' (or ``domain``).  Admins: all (or
    ``operator`` / ``domain``).
    """
    found = services.administration().list_grants(actor, operator=operator, domain=domain)
    usage = _usage(services, found)
    return [grant_out(g, usage.get(g.id)) for g in found]


@router.get("/v1/grants/{grant_id}", response_model=dict[str, Any])
def grant(grant_id: str, actor: ActorDep, services: ServicesDep) -> Any:
    """One grant's terms and version history (``{"grant", "history"}``)."""
    found, history = services.administration().show_grant(actor, grant_id)
    usage = _usage(services, [found])
    return {"grant": grant_out(found, usage.get(found.id)).model_dump(), "history": history}


@router.get("/v1/usage", response_model=list[UsageOut])
def usage(
    actor: ActorDep,
    services: ServicesDep,
    operator: Annotated[str | None, Query(max_length=63)] = None,
    domain: Annotated[str | None, Query(max_length=63)] = None,
    since: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
    until: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
    monthly: bool = False,
) -> Any:
    """The usage ledger (可控可计量) in your scope, per operator, grant and day or month."""
    rows = services.administration().usage(
        actor, operator=operator, domain=domain, since=since, until=until, by_month=monthly
    )
    return [
        UsageOut(
            day=r.day,
            operator=r.operator,
            grant=r.grant,
            dataset=r.dataset,
            purpose=r.purpose,
            use=r.use,
            queries=r.queries,
            joined_queries=r.joined_queries,
            rows_scanned=r.rows_scanned,
            cpu_ms=r.cpu_ms,
            epsilon_spent=r.epsilon_spent,
            query_fee_fen=r.query_fee,
            row_fee_fen=r.row_fee,
            charge_fen=r.charge,
        )
        for r in rows
    ]


@router.get(
    "/v1/statements/{month}",
    response_model=None,
    responses={
        200: {
            "description": "The statement as CSV.",
            "content": {"text/csv; charset=utf-8": {"schema": {"type": "string"}}},
        }
    },
)
def statement(
    month: Annotated[str, Path(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")],
    actor: ActorDep,
    services: ServicesDep,
    operator: Annotated[str | None, Query(max_length=63)] = None,
    bureau: Annotated[str | None, Query(max_length=63)] = None,
) -> Response:
    """A month's statement (CSV): what an operator owes, or what a bureau is owed."""
    text = services.administration().statement(actor, month, operator=operator, bureau=bureau)
    return Response(text, media_type="text/csv; charset=utf-8")


def settings_out(services: Services) -> SettingsOut:
    current = services.settings()
    shown = {
        name: getattr(current, name) for name in SettingsOut.model_fields if name != "overrides"
    }
    return SettingsOut.model_validate({**shown, "overrides": services.runtime.overrides()})


@router.get("/v1/settings", response_model=SettingsOut)
def settings(actor: ActorDep, services: ServicesDep) -> Any:
    """The k floor and the limits in force (with the admin's run-time overrides)."""
    return settings_out(services)
