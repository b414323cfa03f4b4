"""The public catalog (数据目录) operators browse before they apply for a grant.

Per dataset: description, columns with their level and role (never a value, nor a
declared bound: bounds may be proposed from the data), update frequency and price
terms from its registration procedure, its quality score and each dimension's rate
(``sandbox.governance.quality_view``; the full report at ``GET /v1/datasets/{id}/quality``),
and how to apply.  Every read is a ``catalog.read``
decision, recorded; a bureau reads its own domains' part.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from policies import Actor, Role, Target
from sandbox.core.data_controls import NO_CONTROLS, DatasetControls, load_controls
from sandbox.core.governance_tables import registration_applications as regs
from sandbox.enclave.catalog import DatasetRecord
from sandbox.governance.acts import system_clock
from sandbox.governance.listed_view import listed
from sandbox.governance.quality_view import hidden_items, latest_quality, quality_summary
from sandbox.platform import Platform

__all__ = ["HOW_TO_APPLY", "catalog_entry", "read_catalog"]

HOW_TO_APPLY = {
    "http": "POST /v1/grant-applications",
    "cli": "sandbox grant apply DATASET --purpose CODE --purpose-text TEXT --column C "
    "--days N --use public_interest|commercial",
    "states": "the owning bureau approves (the grant is issued), amends or rejects, "
    "with reasons; see GET /v1/grant-applications",
}


def catalog_entry(
    record: DatasetRecord,
    registration: Any | None,
    quality: dict[str, Any] | None = None,
    controls: DatasetControls = NO_CONTROLS,
) -> dict[str, Any]:
    """One dataset as the catalog shows it (pure); ``quality``: its quality summary;
    ``controls``: the negative list and important data, shown by ``listed``."""
    return listed(_entry(record, registration, quality), controls)


def _entry(
    record: DatasetRecord, registration: Any | None, quality: dict[str, Any] | None
) -> dict[str, Any]:
    columns = []
    for col in record.spec.columns:
        shown: dict[str, Any] = {
            "name": col.name,
            "level": col.level.name,
            "role": col.role.value,
            "type": col.type,
            "description": col.description,
        }
        if col.generalize is not None:
            shown["generalize"] = col.generalize.to_dict()
        if col.joinable:
            shown["joinable"] = list(col.joinable)
        if col.level.name == "L4":
            shown["note"] = "never released in any form"
        columns.append(shown)
    return {
        "id": record.id,
        "domain": record.domain,
        "title": record.title,
        "description": record.description,
        "entity_key": record.entity_key,
        "version": record.version,
        "registered_at": record.loaded_at,
        "frozen": record.frozen,
        # Where the rows live: "duckdb" or "spark" (a function Spark lacks is refused there).
        "engine": record.engine,
        "columns": columns,
        # The procedure's words, else the classification's declaration (None: not declared).
        "update_frequency": record.spec.update_frequency
        if registration is None
        else registration.update_frequency,
        "quality": quality,
        "price_terms": None if registration is None else registration.listing or None,
        "registration": None
        if registration is None
        else {"application": registration.id, "issued_at": registration.issued_at},
        "how_to_apply": HOW_TO_APPLY,
    }


def read_catalog(
    platform: Platform, actor: Actor, dataset: str | None = None
) -> list[dict[str, Any]]:
    """The catalog (or one dataset of it) for ``actor``; the read is a recorded decision.

    Operators, auditors and admins read the whole catalog; a bureau its own domains'
    (its ``catalog.read`` holds there only), one decision per domain.
    """
    authority = platform.authority
    if dataset is not None:
        targets = [Target.dataset(dataset)]
    elif actor.role is Role.BUREAU:
        targets = [Target.domain(d) for d in actor.domains]
    else:
        targets = [Target.platform()]
    decisions = [authority.decide(actor, "catalog.read", t, audit=False) for t in targets]
    for decision in decisions:
        if not decision.allowed:
            authority.record_decision(
                actor, decision, request_id=actor.request_id, client=actor.client
            )
            raise decision.error()
    if dataset is not None:
        records = [platform.catalog.get(dataset)]
    elif actor.role is Role.BUREAU:
        records = [r for d in actor.domains for r in platform.catalog.list(domain=d)]
    else:
        records = platform.catalog.list()
    with platform.engine.connect() as conn:
        issued = {
            row.dataset: row
            for row in conn.execute(
                sa.select(regs).where(regs.c.state == "issued").order_by(regs.c.issued_at)
            )
        }
        now = system_clock()
        quality = {
            r.id: quality_summary(
                latest_quality(conn, r.id),
                now,
                hidden=hidden_items(conn, r.spec),
                entity_key=r.spec.entity_key,
            )
            for r in records
        }
        controls = load_controls(conn, [r.id for r in records])
    out = [catalog_entry(r, issued.get(r.id), quality[r.id], controls[r.id]) for r in records]
    for decision in decisions:
        authority.record_decision(
            actor,
            decision,
            details={"rows": len(out)},
            request_id=actor.request_id,
            client=actor.client,
        )
    return out
