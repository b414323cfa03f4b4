"""Auditor routes (安全审计): read, verify, prove and export the audit trail; change nothing."""

from __future__ import annotations

import dataclasses
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from audit import AuditError, EntryFilter, KeyRingError
from audit.keys import public_key_to_b64
from policies import Actor, Decision, Target
from sandbox.audit_errors import translate_audit_error
from sandbox.core.errors import NotFound
from sandbox.monitoring.witnesses import write_export_checkpoint

from .context import ActorDep, Meta, MetaDep, Services, ServicesDep
from .models import AuditEntries

__all__ = ["router"]

router = APIRouter(tags=["auditor"])

Json = dict[str, Any]


def _allow(services: Services, actor: Actor, action: str, meta: Meta) -> Decision:
    authority = services.platform.authority
    decision = authority.decide(actor, action, Target.platform(), audit=False)
    if not decision.allowed:
        authority.record_decision(actor, decision, request_id=meta.request_id, client=meta.client)
        raise decision.error()
    return decision


def _done(services: Services, actor: Actor, decision: Decision, meta: Meta, **details: Any) -> None:
    services.platform.authority.record_decision(
        actor, decision, details=details, request_id=meta.request_id, client=meta.client
    )


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except (AuditError, KeyRingError) as exc:
        raise translate_audit_error(exc) from exc


@router.get("/v1/audit/entries", response_model=AuditEntries)
def entries(
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    since: Annotated[str | None, Query(description="RFC 3339, inclusive.")] = None,
    until: Annotated[str | None, Query(description="RFC 3339, exclusive.")] = None,
    who: Annotated[str | None, Query(alias="actor", max_length=255)] = None,
    role: Annotated[str | None, Query(max_length=20)] = None,
    action: Annotated[str | None, Query(max_length=80)] = None,
    target: Annotated[str | None, Query(max_length=255)] = None,
    dataset: Annotated[str | None, Query(max_length=130)] = None,
    decision: Annotated[str | None, Query(pattern="^(allow|deny)$")] = None,
    offset: Annotated[int, Query(ge=0, le=1 << 53)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    newest_first: bool = False,
) -> Any:
    """Entries matching the filters, one page, in sequence order (or newest first)."""
    allowed = _allow(services, actor, "audit.read", meta)
    filters = _call(
        EntryFilter,
        since=since,
        until=until,
        actor=who,
        role=role,
        action=action,
        target=target,
        dataset=dataset,
        decision=decision,
    )
    found = _call(
        services.platform.audit.entries,
        filters,
        offset=offset,
        limit=limit,
        newest_first=newest_first,
    )
    _done(services, actor, allowed, meta, rows=len(found), offset=offset)
    return AuditEntries(entries=[e.to_dict() for e in found], offset=offset, limit=limit)


@router.get("/v1/audit/entries/{seq}", response_model=Json)
def entry(seq: int, actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """One entry, as recorded."""
    allowed = _allow(services, actor, "audit.read", meta)
    if seq < 0:
        raise NotFound(f"no audit entry {seq}", rule="audit.not_found")
    found = _call(services.platform.audit.entry, seq)
    _done(services, actor, allowed, meta, seq=seq)
    return found.to_dict()


@router.get("/v1/audit/counts", response_model=list[Json])
def counts(
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    by: Annotated[list[str] | None, Query(description="Fields to count by.")] = None,
    since: str | None = None,
    until: str | None = None,
    decision: Annotated[str | None, Query(pattern="^(allow|deny)$")] = None,
) -> Any:
    """Number of entries per actor and dataset (or the ``by`` fields)."""
    allowed = _allow(services, actor, "audit.read", meta)
    filters = _call(EntryFilter, since=since, until=until, decision=decision)
    rows = _call(services.platform.audit.counts, tuple(by or ("actor", "dataset")), filters)
    _done(services, actor, allowed, meta, rows=len(rows))
    return rows


@router.post("/v1/audit/verify", response_model=Json)
def verify(actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """Run the verifier over the live store: chain, hashes, Merkle nodes, every tree head."""
    allowed = _allow(services, actor, "audit.verify", meta)
    report = _call(services.platform.audit.verify)
    _done(services, actor, allowed, meta, ok=report.ok, entries=report.entries)
    return report.to_dict()


@router.get("/v1/audit/tree-head", response_model=Json)
def tree_head(actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """The newest signed tree head (size, root, chain head, time, signature)."""
    allowed = _allow(services, actor, "audit.read", meta)
    head = _call(services.platform.audit.latest_tree_head)
    if head is None:
        raise NotFound("no tree head has been signed yet", rule="audit.not_found")
    _done(services, actor, allowed, meta, tree_size=head.tree_size)
    return head.to_dict()


@router.post("/v1/audit/tree-head", response_model=Json)
def sign_tree_head(actor: ActorDep, meta: MetaDep, services: ServicesDep) -> Any:
    """Sign a tree head over every entry committed so far, now, and return it.

    Authorized as ``audit.export`` (an export signs a fresh head too, so this adds no
    power); recorded as ``audit.sign``."""
    allowed = _allow(services, actor, "audit.export", meta)
    head = _call(services.platform.audit.sign_tree_head)
    signed = dataclasses.replace(allowed, action="audit.sign")
    _done(services, actor, signed, meta, tree_size=head.tree_size, authorized_as="audit.export")
    return head.to_dict()


@router.get("/v1/audit/proofs/inclusion", response_model=Json)
def inclusion(
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    seq: Annotated[int, Query(ge=0, le=1 << 53)],
    size: Annotated[
        int | None, Query(ge=1, le=1 << 53, description="Default: newest head.")
    ] = None,
) -> Any:
    """Inclusion proof of entry ``seq`` (RFC 9162), with the entry and the head it leads to."""
    allowed = _allow(services, actor, "audit.read", meta)
    trail = services.platform.audit
    proof = _call(trail.inclusion_proof, seq, size)
    heads = [h for h in _call(trail.tree_heads) if h.tree_size == proof.tree_size]
    found = _call(trail.entry, seq)
    _done(services, actor, allowed, meta, seq=seq, tree_size=proof.tree_size)
    return {
        "proof": proof.to_dict(),
        "entry": found.to_dict(),
        "tree_head": heads[-1].to_dict() if heads else None,
    }


@router.get("/v1/audit/proofs/consistency", response_model=Json)
def consistency(
    actor: ActorDep,
    meta: MetaDep,
    services: ServicesDep,
    size1: Annotated[int, Query(ge=1, le=1 << 53)],
    size2: Annotated[int | None, Query(ge=1, le=1 << 53, description="Default: now.")] = None,
) -> Any:
    """Consistency proof between tree sizes (the log at ``size1`` is a prefix of ``size2``)."""
    allowed = _allow(services, actor, "audit.read", meta)
    proof = _call(services.platform.audit.consistency_proof, size1, size2)
    _done(services, actor, allowed, meta, size1=size1, size2=proof.size2)
    return {"proof": proof.to_dict()}


@router.get("/v1/audit/keys", response_model=dict[str, str])
def keys(actor: ActorDep, services: ServicesDep) -> Any:
    """The platform's public keys by key id (base64); obtain them independently to trust them."""
    ring = services.platform.keyring
    return {key_id: public_key_to_b64(key) for key_id, key in sorted(ring.public_keys().items())}


@router.get(
    "/v1/audit/export",
    response_model=None,
    responses={
        200: {"content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
def export(actor: ActorDep, meta: MetaDep, services: ServicesDep) -> StreamingResponse:
    """An export (signed fresh) as a .tar.gz: verify offline with `sandbox audit verify`."""
    allowed = _allow(services, actor, "audit.export", meta)
    staging = services.platform.settings.staging_dir
    staging.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="export-", dir=staging))
    # Sortable: the newest export's directory sorts last (a glob picks them in time order).
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"audit-export-{stamp}-{uuid.uuid4().hex[:4]}"
    try:
        summary = _call(services.platform.audit.export, work / name)
        _call(
            write_export_checkpoint,
            services.platform.settings,
            services.platform.keyring,
            work / name,
            summary.tree_head,
        )
        archive = work / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(work / name, arcname=name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _done(services, actor, allowed, meta, entries=summary.entries)

    def chunks() -> Iterator[bytes]:
        try:
            with open(archive, "rb") as handle:
                while chunk := handle.read(1 << 16):
                    yield chunk
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return StreamingResponse(
        chunks(),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar.gz"'},
    )
