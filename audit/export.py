"""Export directories: what an auditor takes away and verifies with no server or database.

Layout (format ``sandbox-audit-export`` version 1)::

    manifest.json       format, version, entry count, export time, the fresh tree head
    entries.jsonl       entry i's canonical bytes on line i (0-based), each ended by "\\n"
    tree_heads.jsonl    every signed tree head up to the export's size, oldest first
    keys/<key_id>.pub   every public key of the platform (base64 of the raw 32 bytes)

The export signs a fresh tree head first and writes exactly the entries it
covers, so appends racing with the export cannot leave unsigned entries in it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.entry import format_time
from audit.errors import ExportError, ProofError
from audit.signing import TreeHead

if TYPE_CHECKING:
    from audit.trail import AuditTrail

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ExportSummary",
    "read_manifest",
    "read_tree_heads",
    "write_export",
]

EXPORT_FORMAT = "sandbox-audit-export"
EXPORT_VERSION = 1


@dataclass(frozen=True)
class ExportSummary:
    directory: Path
    entries: int
    tree_heads: int
    tree_head: TreeHead


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_export(trail: AuditTrail, out_dir: Path) -> ExportSummary:
    """Write an export of everything committed so far into the empty or new ``out_dir``."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} exists and is not an empty directory")
    head = trail.sign_tree_head()
    size = head.tree_size
    try:
        (out_dir / "keys").mkdir(parents=True, exist_ok=True)
        written = 0
        with open(out_dir / "entries.jsonl", "wb") as handle:
            for row in trail.store.iter_entries(stop=size):
                handle.write(bytes(row.entry) + b"\n")
                written += 1
            handle.flush()
            os.fsync(handle.fileno())
        if written != size:
            raise ExportError(f"store holds {written} entries below size {size}; run verify")
        heads = trail.store.tree_heads(max_size=size)
        lines = [json.dumps(h.to_dict(), sort_keys=True) + "\n" for h in heads]
        _fsync_write(out_dir / "tree_heads.jsonl", "".join(lines).encode())
        for pub in sorted(trail.keyring.directory.glob("*.pub")):
            shutil.copyfile(pub, out_dir / "keys" / pub.name)
        manifest = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "entries": size,
            "tree_heads": len(heads),
            "exported_at": format_time(datetime.now(UTC)),
            "tree_head": head.to_dict(),
        }
        _fsync_write(out_dir / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    except OSError as exc:
        raise ExportError(f"cannot write export to {out_dir}: {exc}") from exc
    return ExportSummary(out_dir, size, len(heads), head)


def read_manifest(directory: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{directory} has no readable manifest.json: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{directory} is not a {EXPORT_FORMAT} directory")
    if manifest.get("version") != EXPORT_VERSION:
        raise ExportError(f"export version {manifest.get('version')!r} is not supported")
    return manifest


def read_tree_heads(path: Path) -> tuple[list[TreeHead], list[str]]:
    """Parsed tree heads, and a message for each line that is not a tree head."""
    heads, bad = [], []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            heads.append(TreeHead.from_dict(json.loads(line)))
        except (ValueError, ProofError) as exc:
            bad.append(f"{path.name} line {number}: {exc}")
    return heads, bad
