"""The auditor's pages (安全审计): the trail with filters, an entry with its inclusion proof
checked on the server, live verification, export, tree heads, alerts.  Read-only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from audit import AuditError, InclusionProof, TreeHead, verify_tree_head
from audit.canonical import dumps_canonical
from audit.merkle import SHA256
from policies import Target
from sandbox.api import auditor as auditor_routes
from sandbox.api.alerts import list_alerts
from sandbox.api.context import ServicesDep, request_meta
from sandbox.core.errors import SandboxError

from .forms import optional
from .render import ConsoleRoute, page
from .session import Auditor, Form

__all__ = ["ProofCheck", "check_inclusion", "router"]


router = APIRouter(prefix="/console/auditor", route_class=ConsoleRoute, include_in_schema=False)
FILTERS = ("actor", "role", "action", "target", "dataset", "decision", "since", "until")
PAGE = 50


@router.get("")
def trail(
    request: Request,
    actor: Auditor,
    services: ServicesDep,
    offset: Annotated[int, Query(ge=0, le=1 << 53)] = 0,
) -> Response:
    """The trail, newest first, with filters (GET /v1/audit/entries)."""
    given = {name: optional(request.query_params.get(name)) for name in FILTERS}
    found = auditor_routes.entries(
        actor,
        request_meta(request),
        services,
        since=given["since"],
        until=given["until"],
        who=given["actor"],
        role=given["role"],
        action=given["action"],
        target=given["target"],
        dataset=given["dataset"],
        decision=given["decision"],
        offset=offset,
        limit=PAGE,
        newest_first=True,
    )
    query = urlencode({k: v for k, v in given.items() if v})
    return page(
        request,
        "auditor/trail.html",
        actor,
        entries=found.entries,
        filters=given,
        offset=offset,
        page_size=PAGE,
        query=query,
    )


@dataclass(frozen=True)
class ProofCheck:
    """What the page shows of an inclusion proof and the server's check of it."""

    ok: bool
    steps: tuple[tuple[str, bool], ...]
    problem: str | None


def check_inclusion(
    entry: dict[str, Any], proof: dict[str, Any], head: dict[str, Any] | None, keys: Any
) -> ProofCheck:
    """Check, step by step: the entry hashes to the proof's leaf, the path leads to the
    signed head's root, and a known key signed that head (pure: keys are passed in)."""
    steps: list[tuple[str, bool]] = []
    try:
        parsed = InclusionProof.from_dict(proof)
        leaf = SHA256.hash_leaf(dumps_canonical(entry))
        steps.append(("proof.leaf", leaf == parsed.leaf_hash))
        if head is None:
            return ProofCheck(False, (*steps, ("proof.no_head", False)), None)
        signed = TreeHead.from_dict(head)
        steps.append(("proof.size", signed.tree_size == parsed.tree_size))
        parsed.verify(signed.root_hash)
        steps.append(("proof.root", True))
        verify_tree_head(signed, keys)
        steps.append(("proof.signature", True))
    except AuditError as exc:
        steps.append(("proof.failed", False))
        return ProofCheck(False, tuple(steps), str(exc))
    return ProofCheck(all(ok for _, ok in steps), tuple(steps), None)


@router.get("/entries/{seq}")
def entry(seq: int, request: Request, actor: Auditor, services: ServicesDep) -> Response:
    """One entry and its inclusion proof, checked here (GET /v1/audit/entries/{seq} and
    /v1/audit/proofs/inclusion)."""
    meta = request_meta(request)
    found = auditor_routes.entry(seq, actor, meta, services)
    proved: dict[str, Any] | None = None
    check: ProofCheck | None = None
    unproved: SandboxError | None = None
    try:
        proved = auditor_routes.inclusion(actor, meta, services, seq)
    except SandboxError as exc:  # no signed tree head covers it yet
        unproved = exc
    if proved is not None:
        keys = services.platform.keyring.public_keys()
        check = check_inclusion(proved["entry"], proved["proof"], proved["tree_head"], keys)
    return page(
        request,
        "auditor/entry.html",
        actor,
        entry=found,
        proved=proved,
        check=check,
        unproved=unproved,
    )


@router.get("/verify")
def verify_form(request: Request, actor: Auditor) -> Response:
    """The live verification button, and the export download."""
    return page(request, "auditor/verify.html", actor, report=None)


@router.post("/verify")
def verify(request: Request, form: Form, actor: Auditor, services: ServicesDep) -> Response:
    """Verify the live store (POST /v1/audit/verify): chain, hashes, nodes, every head."""
    report = auditor_routes.verify(actor, request_meta(request), services)
    return page(request, "auditor/verify.html", actor, report=report)


@router.get("/export")
def export(request: Request, actor: Auditor, services: ServicesDep) -> Response:
    """An export as .tar.gz, signed fresh (GET /v1/audit/export)."""
    return auditor_routes.export(actor, request_meta(request), services)


@router.get("/heads")
def heads(request: Request, actor: Auditor, services: ServicesDep) -> Response:
    """The signed tree heads, newest first (the trail's heads, an ``audit.read`` decision)."""
    meta = request_meta(request)
    authority = services.platform.authority
    decision = authority.decide(actor, "audit.read", Target.platform(), audit=False)
    if not decision.allowed:
        authority.record_decision(actor, decision, request_id=meta.request_id, client=meta.client)
        raise decision.error()
    found = [h.to_dict() for h in services.platform.audit.tree_heads()][::-1][:100]
    authority.record_decision(
        actor,
        decision,
        details={"rows": len(found)},
        request_id=meta.request_id,
        client=meta.client,
    )
    return page(request, "auditor/heads.html", actor, heads=found)


@router.get("/alerts")
def alerts(request: Request, actor: Auditor, services: ServicesDep) -> Response:
    """Every alert (GET /v1/alerts)."""
    return page(request, "alerts.html", actor, alerts=list_alerts(actor, services))
