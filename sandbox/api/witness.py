"""Witness routes: the log's checkpoint, consistency proofs for witnesses, cosignatures
collected from witnesses, split-view reports, and the admin's registry of witness keys.

A witness is a bureau or an auditor account (action ``audit.cosign``) whose cosignature
key an admin registered (``witness.register``).  Every call is audited, refusals with
their rule.  Formats: docs/audit.md, "Checkpoints and witnesses".
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from audit import AuditError
from audit.checkpoint import parse_checkpoint_text
from audit.errors import ProofError
from audit.note import format_note
from policies import Actor, Decision, Role, Target
from sandbox.audit_errors import translate_audit_error
from sandbox.core.errors import InvalidInput, NotFound, SandboxError
from sandbox.monitoring import witnesses

from .context import ActorDep, Meta, MetaDep, Services, ServicesDep

__all__ = ["router"]

router = APIRouter(tags=["witness"])

NOTE_TYPE = "text/plain; charset=utf-8"


class CosignedIn(BaseModel):
    checkpoint: str = Field(
        max_length=20_000,
        description="The checkpoint note with the "
        "witness's cosignature line (C2SP tlog-cosignature).",
    )


class SplitViewIn(BaseModel):
    old_checkpoint: str = Field(max_length=20_000)
    new_checkpoint: str = Field(max_length=20_000)
    consistency_proof: list[str] = Field(default_factory=list, max_length=64)


class WitnessKeyIn(BaseModel):
    vkey: str = Field(
        max_length=500,
        description="The witness's cosignature vkey (`sandbox witness init` prints it).",
    )


def _target(actor: Actor) -> Target:
    if actor.role is Role.BUREAU and actor.domains:
        return Target.domain(actor.domains[0])
    return Target.platform()


def _allow(services: Services, actor: Actor, action: str, target: Target, meta: Meta) -> Decision:
    authority = services.platform.authority
    decision = authority.decide(actor, action, target, audit=False)
    if not decision.allowed:
        authority.record_decision(actor, decision, request_id=meta.request_id, client=meta.client)
        raise decision.error()
    return decision


def _done(services: Services, actor: Actor, decision: Decision, meta: Meta, **details: Any) -> None:
    services.platform.authority.record_decision(
        actor, decision, details=details, request_id=meta.request_id, client=meta.client
    )


def _refuse(services: Services, actor: Actor, target: Target, exc: SandboxError) -> None:
    services.platform.record_act(
        actor,
        "audit.cosign",
        str(target),
        "deny",
        exc.rule or exc.code,
        details={"reason": exc.message},
    )


@router.get(
    "/v1/audit/checkpoint",
    # The note is text; the errors keep the JSON error body (response_class would make
    # every documented error text/plain too).
    response_model=None,
    responses={
        200: {
            "description": "The checkpoint as a C2SP signed note.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def checkpoint(
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    cosigned: Annotated[
        bool, Query(description="The newest checkpoint witnesses cosigned, not the newest.")
    ] = False,
) -> PlainTextResponse:
    """The log's newest checkpoint (C2SP tlog-checkpoint), with every cosignature collected."""
    target = _target(actor)
    allowed = _allow(services, actor, "audit.cosign", target, meta)
    try:
        if cosigned:
            note = witnesses.checkpoint_store(services.platform.settings).latest_cosigned()
            if note is None:
                raise NotFound("no witness has cosigned a checkpoint yet", rule="witness.none")
        else:
            note = witnesses.current_checkpoint(services.platform)
    except AuditError as exc:
        raise translate_audit_error(exc) from exc
    size = parse_checkpoint_text(note.text).tree_size
    _done(services, actor, allowed, meta, step="checkpoint", tree_size=size, cosigned=cosigned)
    return PlainTextResponse(format_note(note), media_type=NOTE_TYPE)


@router.get("/v1/audit/checkpoint/proof")
def checkpoint_proof(
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    old: Annotated[int, Query(ge=0, le=1 << 53, description="The witness's last size.")],
    size: Annotated[int, Query(ge=0, le=1 << 53, description="The new checkpoint's size.")],
) -> dict[str, Any]:
    """The RFC 6962 consistency proof from ``old`` to ``size`` (empty from 0 or to itself)."""
    target = _target(actor)
    allowed = _allow(services, actor, "audit.cosign", target, meta)
    if old > size:
        raise InvalidInput("old must not exceed size", rule="witness.old_size")
    path: tuple[bytes, ...] = ()
    if 0 < old < size:
        try:
            path = services.platform.audit.consistency_proof(old, size).path
        except AuditError as exc:
            raise translate_audit_error(exc) from exc
    _done(services, actor, allowed, meta, step="proof", size1=old, size2=size)
    return {
        "old_size": old,
        "tree_size": size,
        "consistency_proof": [base64.b64encode(h).decode() for h in path],
    }


@router.post("/v1/audit/checkpoint/cosignatures")
def add_cosignature(
    body: CosignedIn, actor: ActorDep, meta: MetaDep, services: ServicesDep
) -> dict[str, Any]:
    """Collect a witness's cosignature on one of the log's checkpoints."""
    target = _target(actor)
    allowed = _allow(services, actor, "audit.cosign", target, meta)
    settings = services.platform.settings
    try:
        key = witnesses.witness_key(settings, actor.name)
        if key is None:
            raise InvalidInput(
                f"{actor.name} has no registered witness key (an admin registers it)",
                rule="witness.not_registered",
            )
        note = witnesses.parse_cosigned(body.checkpoint)
        try:
            merged = witnesses.checkpoint_store(settings).add_cosignature(note, key)
        except ProofError as exc:
            raise InvalidInput(
                f"the cosignature does not verify: {exc}", rule="witness.cosignature_invalid"
            ) from None
        except AuditError as exc:
            raise NotFound(str(exc), rule="witness.unknown_checkpoint") from None
    except SandboxError as exc:
        _refuse(services, actor, target, exc)
        raise
    size = parse_checkpoint_text(merged.text).tree_size
    count = len(merged.signatures) - 1
    _done(services, actor, allowed, meta, step="cosign", tree_size=size, witness=key.name)
    return {"tree_size": size, "witness": key.name, "signatures": count}


@router.post("/v1/audit/checkpoint/split-view", status_code=201)
def split_view(
    body: SplitViewIn, actor: ActorDep, meta: MetaDep, services: ServicesDep
) -> dict[str, Any]:
    """A witness reports two log-signed checkpoints that cannot both hold: an alert opens."""
    target = _target(actor)
    _allow(services, actor, "audit.cosign", target, meta)
    if witnesses.witness_key(services.platform.settings, actor.name) is None:
        exc = InvalidInput(
            f"{actor.name} has no registered witness key (an admin registers it)",
            rule="witness.not_registered",
        )
        _refuse(services, actor, target, exc)
        raise exc
    try:
        alert = witnesses.report_split_view(services.platform, actor, body.model_dump())
    except InvalidInput as exc:
        _refuse(services, actor, target, exc)
        raise
    return {"alert": alert.get("id"), "severity": alert.get("severity")}


@router.put("/v1/admin/witnesses/{account}")
def register_witness(
    account: str, body: WitnessKeyIn, actor: ActorDep, meta: MetaDep, services: ServicesDep
) -> dict[str, str]:
    """Register ``account``'s witness cosignature key (a bureau or auditor account)."""
    target = Target.account(account)
    allowed = _allow(services, actor, "witness.register", target, meta)
    from policies.accounts import get_account

    with services.platform.engine.connect() as conn:
        found = get_account(conn, account)
    try:
        if found is None or found.role not in (Role.BUREAU, Role.AUDITOR):
            raise InvalidInput(
                "a witness key belongs to an existing bureau or auditor account",
                rule="witness.account",
            )
        key = witnesses.register_witness(services.platform.settings, account, body.vkey)
    except SandboxError as exc:
        services.platform.record_act(
            actor,
            "witness.register",
            str(target),
            "deny",
            exc.rule or exc.code,
            details={"reason": exc.message},
        )
        raise
    _done(services, actor, allowed, meta, vkey=key.vkey())
    return {"account": account, "vkey": key.vkey()}
