"""What each reader sees of a registration application, and what the certificate keeps of
the procedure (pure functions over the rows ``registrations`` reads).

Anyone reads an application in publicity (公示); its parties (the applying bureau,
admins, auditors) see all of it.  The public sees the classification without declared
bounds (they may be proposed from the data), nothing of the file, and only its own
objections' grounds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from policies import Actor, Role

from .acts import sees_everything, step_out
from .registration_states import RegState, RegStep

__all__ = ["is_party", "listed_to", "procedure_record", "public_classification", "view"]


def is_party(row: Any, actor: Actor) -> bool:
    """The applying bureau (any account of its domain), admins and auditors."""
    return sees_everything(actor) or (actor.role is Role.BUREAU and row.domain in actor.domains)


def listed_to(row: Any, actor: Actor) -> bool:
    """Every application in publicity is listed to everyone; the rest to its parties."""
    return row.state == RegState.PUBLICITY.value or is_party(row, actor)


def public_classification(
    classification: dict[str, Any], prohibited: Collection[str] = ()
) -> dict[str, Any]:
    """A classification as the public listing shows it: no declared bounds; a column on the
    negative list (``prohibited``: lower-case names, ``*`` the dataset) by that only."""
    whole = "*" in prohibited
    columns = {
        name: {"negative_list": "prohibited"}
        if whole or name.lower() in prohibited
        else {k: v for k, v in col.items() if k not in ("bounds", "measure")}
        for name, col in classification.get("columns", {}).items()
    }
    shown = {k: v for k, v in classification.items() if k != "contribution"}
    return {**shown, "columns": columns}


def procedure_record(row: Any, issued_by: str) -> dict[str, Any]:
    """What the certificate carries of the procedure."""
    return {
        "application": row.id,
        "form": row.form,
        "applicant": row.applicant,
        "applied_at": row.applied_at,
        "accepted_by": row.accepted_by,
        "accepted_at": row.accepted_at,
        "reviewed_by": row.reviewed_by,
        "reviewed_at": row.reviewed_at,
        "review_comment": row.review_comment,
        "publicity": None
        if row.publicity_from is None
        else {"from": row.publicity_from, "until": row.publicity_until},
        "issued_by": issued_by,
        "update_frequency": row.update_frequency,
    }


def view(
    row: Any,
    filed: Sequence[Any],
    steps: Sequence[Any],
    actor: Actor,
    *,
    prohibited: Collection[str] = (),
) -> dict[str, Any]:
    """The application as ``actor`` reads it, with its objections and steps; ``prohibited``:
    the dataset's items on the negative list, shown to the public by that only."""
    party = is_party(row, actor)
    return {
        "id": row.id,
        "dataset": row.dataset,
        "domain": row.domain,
        "form": row.form,
        "state": row.state,
        "applicant": row.applicant,
        "applied_at": row.applied_at,
        "title": row.title,
        "description": row.description,
        "update_frequency": row.update_frequency,
        "listing": row.listing,
        "engine": getattr(row, "engine", None) or "duckdb",
        "classification": row.classification
        if party
        else public_classification(row.classification, prohibited),
        "classification_sha256": row.classification_sha256,
        "source": {k: row.source[k] for k in ("name", "format", "bytes", "sha256")}
        if party
        else None,
        "accepted_by": row.accepted_by,
        "accepted_at": row.accepted_at,
        "reviewed_by": row.reviewed_by,
        "reviewed_at": row.reviewed_at,
        "review_comment": row.review_comment,
        "publicity_from": row.publicity_from,
        "publicity_until": row.publicity_until,
        "issued_by": row.issued_by,
        "issued_at": row.issued_at,
        "version": row.version,
        "objections": [
            {
                "id": o.id,
                "filed_by": o.filed_by,
                "filed_at": o.filed_at,
                "text": o.text,
                "status": o.status,
                "resolved_by": o.resolved_by,
                "resolved_at": o.resolved_at,
                "resolution": o.resolution,
            }
            for o in filed
            if party or o.filed_by == actor.name
        ],
        "open_objections": sum(1 for o in filed if o.status == "open"),
        "steps": [
            {**step_out(e), "comment": e.comment, "objection": e.objection}
            for e in steps
            if party or e.step != RegStep.OBJECT.value or e.actor == actor.name
        ],
    }
