"""Quality reports (数据质量评测) as the catalog and ``GET /v1/datasets/{id}/quality`` show them.

Each registered version carries the report the enclave computed while loading it
(:mod:`sandbox.enclave.quality`; aggregates only, counts below k withheld), whose
digest and score its signed certificate binds.  A read adds timeliness as of now (a
version's age against its declared update frequency) and lists the history: every
version's score and digest.  A version registered before quality evaluation existed has
no report: the view shows the newest version that has one.  Timeliness counts from the
report's ``data_as_of`` (a reclassification keeps the rows' own age).
Reading is the catalog's ``catalog.read`` decision, recorded.

Items on the negative list (prohibited) are never released, not even in aggregate: a
read leaves out every figure of a prohibited column (and of a partner's prohibited
join key), the rates recomputed over what remains (``quality_math.withhold``), and a
prohibited dataset shows no report at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from policies import Actor, Target
from sandbox.core.classification import DatasetSpec
from sandbox.core.data_controls import WHOLE, load_controls
from sandbox.core.db import dataset_versions as versions
from sandbox.enclave.quality_math import DIMENSIONS, report_sha256, with_timeliness, withhold
from sandbox.governance.acts import Clock, system_clock
from sandbox.platform import Platform

__all__ = ["hidden_items", "latest_quality", "quality_history", "quality_summary", "read_quality"]

Hidden = frozenset[str] | None
"""Lower-case names whose figures are withheld (``None``: the whole dataset's)."""


def hidden_items(conn: sa.Connection, spec: DatasetSpec) -> Hidden:
    """The prohibited columns of ``spec`` and of its join partners (``domain.table.column``)."""
    partners = {t.rsplit(".", 1)[0] for c in spec.columns for t in c.joinable}
    controls = load_controls(conn, [spec.id, *partners])
    own = controls[spec.id]
    if own.is_prohibited():
        return None
    hidden = {c for c in own.prohibited if c != WHOLE}
    for col in spec.columns:
        for target in col.joinable:
            dataset, _, key = target.rpartition(".")
            if controls[dataset].is_prohibited(key):
                hidden.add(target.lower())
    return frozenset(hidden)


def quality_history(
    conn: sa.Connection, dataset: str, hidden: frozenset[str] = frozenset(), entity_key: str = ""
) -> list[dict[str, Any]]:
    """Every version, oldest first: its score and report digest (``null``: no report); with
    ``hidden`` items, the score over what may be shown."""
    rows = conn.execute(
        sa.select(versions.c.version, versions.c.registered_at, versions.c.quality)
        .where(versions.c.dataset_id == dataset)
        .order_by(versions.c.version)
    )
    return [
        {
            "version": row.version,
            "registered_at": row.registered_at,
            "score": None
            if row.quality is None
            else withhold(row.quality, hidden, entity_key=entity_key).get("score"),
            "sha256": None if row.quality is None else report_sha256(row.quality),
        }
        for row in rows
    ]


def latest_quality(conn: sa.Connection, dataset: str) -> tuple[int, str, dict[str, Any]] | None:
    """The newest version with a report: (version, registered_at, report)."""
    row = conn.execute(
        sa.select(versions.c.version, versions.c.registered_at, versions.c.quality)
        .where(versions.c.dataset_id == dataset, versions.c.quality.is_not(None))
        .order_by(versions.c.version.desc())
        .limit(1)
    ).first()
    if row is None or row.quality is None:
        return None
    return int(row.version), str(row.registered_at), dict(row.quality)


def _report_now(
    found: tuple[int, str, dict[str, Any]], now: datetime, hidden: frozenset[str], key: str
) -> dict[str, Any]:
    version, registered_at, report = found
    loaded = str(report.get("data_as_of") or registered_at)  # reports before the key: its time
    shown = with_timeliness(
        withhold(report, hidden, entity_key=key), datetime.fromisoformat(loaded), now
    )
    if hidden:  # the certified score also counts the withheld items: not shown
        shown["certified_score"] = None
    return {"version": version, "sha256": report_sha256(report), **shown}


def quality_summary(
    found: tuple[int, str, dict[str, Any]] | None,
    now: datetime,
    *,
    hidden: Hidden = frozenset(),
    entity_key: str = "",
) -> dict[str, Any] | None:
    """What the catalog shows: the score, each dimension's rate, the version and digest."""
    if found is None or hidden is None:
        return None
    full = _report_now(found, now, hidden, entity_key)
    return {
        "score": full["score"],
        "certified_score": full["certified_score"],
        "version": full["version"],
        "sha256": full["sha256"],
        "dimensions": {d: full[d]["rate"] for d in DIMENSIONS},
    }


def read_quality(
    platform: Platform, actor: Actor, dataset: str, *, clock: Clock = system_clock
) -> dict[str, Any]:
    """The dataset's quality report (newest version) and history; a recorded read."""
    authority = platform.authority
    decision = authority.decide(actor, "catalog.read", Target.dataset(dataset), audit=False)
    if not decision.allowed:
        authority.record_decision(actor, decision, request_id=actor.request_id, client=actor.client)
        raise decision.error()
    record = platform.catalog.get(dataset)
    with platform.engine.connect() as conn:
        found = latest_quality(conn, dataset)
        hidden = hidden_items(conn, record.spec)
        key = record.spec.entity_key
        history = [] if hidden is None else quality_history(conn, dataset, hidden, key)
    out = {
        "dataset": record.id,
        "current_version": record.version,
        "report": None
        if found is None or hidden is None
        else _report_now(found, clock(), hidden, record.spec.entity_key),
        "history": history,
    }
    authority.record_decision(
        actor,
        decision,
        details={"quality": True, "rows": len(history)},
        request_id=actor.request_id,
        client=actor.client,
    )
    return out
