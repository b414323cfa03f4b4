"""Offline verification of an export directory: no server, no database.

Checks every chain link, recomputes the Merkle root at each signed tree head,
checks every signature and the consistency between consecutive heads, and that
the newest head covers every exported entry.  The export's own ``keys/`` are
used unless the auditor passes keys obtained independently (they should: keys
shipped inside an export vouch for nothing by themselves), and heads obtained
earlier (``trusted_heads``) are checked against the export as well, which is
what catches a log truncated together with its newest heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checker import Checker, Report
from audit.errors import ExportError
from audit.export import read_manifest, read_tree_heads
from audit.keys import KeyRingError, load_public_keys
from audit.signing import TreeHead

__all__ = ["verify_export"]


def verify_export(
    directory: Path,
    *,
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
    trusted_heads: Sequence[TreeHead] = (),
    strict: bool = False,
) -> Report:
    """Verify the export in ``directory``; raises :class:`ExportError` if it is unreadable."""
    directory = Path(directory)
    read_manifest(directory)
    heads, bad_lines = read_tree_heads(directory / "tree_heads.jsonl")
    if public_keys is None:
        try:
            public_keys = load_public_keys(directory / "keys")
        except (KeyRingError, ValueError) as exc:
            raise ExportError(f"export keys are unreadable: {exc}") from None
    checker = Checker([*heads, *trusted_heads], public_keys, strict=strict)
    for message in bad_lines:
        checker.problem("malformed", message)
    try:
        with open(directory / "entries.jsonl", "rb") as handle:
            feed = checker.feed
            for line in handle:
                feed(line[:-1] if line.endswith(b"\n") else line)
    except OSError as exc:
        raise ExportError(f"cannot read entries: {exc}") from None
    return checker.finish(require_covered=True)
