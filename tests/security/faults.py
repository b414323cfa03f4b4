"""Helpers of the fault tests: reading the audit trail as an auditor would, and settling jobs.

The fault tests judge the server only by what an outside party can check: an
export of the audit trail (verified offline with ``sandbox audit verify``), the
job records and receipts the API returns, and the released rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.client import SandboxClient
from sandbox.core.errors import SandboxError

ACTIVE = ["queued", "running"]


@dataclass
class Trail:
    """The entries of one audit export, indexed the ways the fault tests look them up."""

    directory: Path
    entries: list[dict[str, Any]]
    by_request: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    by_reason: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for entry in self.entries:
            if entry.get("request_id"):
                self.by_request.setdefault(entry["request_id"], []).append(entry)
            reason = (entry.get("details") or {}).get("reason")
            if isinstance(reason, str) and reason:
                self.by_reason.setdefault(reason, []).append(entry)


def export_trail(auditor: SandboxClient, directory: Path) -> Trail:
    """Export the live trail, unpack it, verify it offline with the CLI, and read its entries."""
    directory.mkdir(parents=True)
    archive = auditor.audit_export(directory / "export.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(directory / "x", filter="data")
    roots = {p.parent for p in (directory / "x").rglob("entries.jsonl")}
    assert len(roots) == 1, f"an export holds one entries.jsonl, found {len(roots)}"
    root = roots.pop()
    verify_offline(root)
    lines = (root / "entries.jsonl").read_bytes().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == list(range(len(entries))), "export is not gapless"
    return Trail(root, entries)


def verify_offline(export_dir: Path) -> None:
    """`sandbox audit verify` on an export directory, as an auditor runs it (must exit 0)."""
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "audit", "verify", str(export_dir), "--strict"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"offline verify failed: {proc.stdout[-800:]} {proc.stderr[-800:]}"


def settle(
    clients: Iterable[SandboxClient],
    timeout_s: float = 60,
    bureau: Callable[[str], SandboxClient] | None = None,
) -> None:
    """Wait until no job of these operators is queued or running (restart recovery ran).

    ``bureau``: the client of a domain's bureau, which alone tells a job held for review
    still queued or running from one held: its operator sees it awaiting review from
    submission (``sandbox/jobs/held_view.py``)."""
    clients = list(clients)
    deadline = time.monotonic() + timeout_s
    while True:
        active = [j for c in clients for j in c.jobs(state=ACTIVE, limit=100)]
        if bureau is not None:
            waiting = [j for c in clients for j in c.jobs(state=["awaiting_review"], limit=1000)]
            active += [j for j in waiting if not _held_or_ended(j, bureau)]
        if not active:
            return
        if time.monotonic() > deadline:
            states = sorted({(j["id"], j["state"]) for j in active})
            raise AssertionError(f"jobs still active after restart: {states[:5]}")
        time.sleep(0.2)


def _held_or_ended(job: dict[str, Any], bureau: Callable[[str], SandboxClient]) -> bool:
    """Whether the job shown awaiting review is held (or ended) for each reviewing bureau."""
    for dataset in job["review_datasets"]:
        try:
            bureau(dataset.split(".", 1)[0]).review(job["id"])
        except SandboxError as exc:
            if exc.rule == "review.computing":
                return False
    return True


def all_jobs(client: SandboxClient) -> list[dict[str, Any]]:
    """Every job of the client's operator (paged)."""
    found: list[dict[str, Any]] = []
    while True:
        page = client.jobs(limit=100, offset=len(found))
        found.extend(page)
        if len(page) < 100:
            return found
