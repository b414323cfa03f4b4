"""Offline verification of an export directory: no server, no database.

Checks every chain link, recomputes the Merkle root at each signed tree head,
checks every signature and the consistency between consecutive heads, and that
the newest head covers every exported entry.  Every entry is parsed and must be
its own RFC 8785 canonical form: a repeated member name (``"decision":"deny"`` and
``"decision":"allow"`` in one signed entry) or any other spelling is ``malformed``.
The manifest must agree with what the export holds (``manifest``).

The export's own ``keys/`` are used unless the auditor brings keys obtained
independently (they should: keys shipped inside an export vouch for nothing by
themselves; the report's ``key_source`` says which were used).  A key file that
cannot be read is a warning, not a stop: whether the remaining keys verify every
signature decides.  Heads obtained earlier (``trusted_heads``) are checked against
the export as well, which is what catches a log truncated together with its newest
heads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checker import Checker, Report
from audit.errors import ExportError, ProofError, SignatureError
from audit.export import read_manifest, read_tree_heads
from audit.keys import KeyRingError, read_public_keys
from audit.merkle import root_from_leaves
from audit.receipts import Receipt, verify_receipt
from audit.signing import TreeHead
from audit.witness_policy import WitnessPolicy
from audit.witnessed import checkpoint_problems

__all__ = ["verify_export"]


def verify_export(
    directory: Path,
    *,
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
    keys_dir: Path | None = None,
    trusted_heads: Sequence[TreeHead] = (),
    receipts: Sequence[Receipt] = (),
    strict: bool = True,
    witness_policy: WitnessPolicy | None = None,
    workers: int = 1,
) -> Report:
    """Verify the export in ``directory``; raises :class:`ExportError` if it is unreadable.

    Trusted keys come as ``public_keys`` or as the ``*.pub`` files of ``keys_dir``
    (:class:`KeyRingError` if that is not a directory); without either, the export's
    own.  ``strict`` is accepted for compatibility and changes nothing: the full
    entry check that it used to switch on is always made.  Each of ``receipts`` must
    verify with the same keys and its promise must be kept by the export (problem
    kind ``receipt``, see :func:`receipt_problems`).  The export's ``checkpoint`` file, if
    any, must agree with the entries; under ``witness_policy`` it must exist and carry
    the policy's quorum of witness cosignatures (:mod:`audit.witnessed`).

    ``workers`` above 1 proves the entries on that many forked processes first
    (:mod:`audit.parallel`), where this process may fork (:func:`audit.parallel.can_fork`):
    the same checks and the same report, faster on a sound export; from the first entry
    they cannot prove, the entries are read here one after another, as with 1.
    """
    del strict  # always strict since the default check refuses duplicate keys
    directory = Path(directory)
    manifest = read_manifest(directory)
    heads, bad_lines = read_tree_heads(directory / "tree_heads.jsonl")
    warnings: list[str] = []
    if public_keys is not None and keys_dir is not None:
        raise ValueError("pass public_keys or keys_dir, not both")
    if public_keys is not None:
        source = "trusted"
    elif keys_dir is not None:
        if not Path(keys_dir).is_dir():
            raise KeyRingError(f"{keys_dir} is not a directory of public keys")
        public_keys, warnings = read_public_keys(Path(keys_dir))
        source = "trusted"
    else:
        public_keys, warnings = read_public_keys(directory / "keys")
        if not (directory / "keys").is_dir():
            warnings.append("the export has no keys/ directory")
        source = "export"
    checker = Checker([*heads, *trusted_heads], public_keys, strict=True)
    for message in bad_lines:
        checker.problem("malformed", message)
    wanted = frozenset(r.seq for r in receipts)
    found: dict[int, bytes] = {}
    path = directory / "entries.jsonl"
    try:
        offset = 0
        if workers > 1:
            # Imported here: multiprocessing costs every ``import audit`` about 16 ms.
            from audit.parallel import can_fork, verify_parallel

            if can_fork():
                offset, found = verify_parallel(path, checker, workers=workers, wanted=wanted)
        with open(path, "rb") as handle:
            handle.seek(offset)
            for lines in _read_lines(handle):
                base = checker.size
                found.update(
                    (seq, lines[seq - base]) for seq in wanted if 0 <= seq - base < len(lines)
                )
                checker.feed_many(lines)
    except OSError as exc:
        raise ExportError(f"cannot read entries: {exc}") from None
    report = checker.finish(require_covered=True)
    for receipt in receipts:
        for message in receipt_problems(receipt, public_keys, found.get(receipt.seq), checker):
            checker.problem("receipt", f"receipt for entry {receipt.seq}: {message}", receipt.seq)
    for message in _manifest_problems(manifest, heads, len(heads) + len(bad_lines), report):
        checker.problem("manifest", f"manifest.json {message}")
    found_cp, cp_warnings = checkpoint_problems(
        directory, public_keys, checker.tree.root, checker.size, witness_policy
    )
    for kind, message in found_cp:
        checker.problem(kind, message)
    warnings.extend(cp_warnings)
    report.key_source = source
    report.warnings.extend(warnings)
    return report


def _read_lines(handle: BinaryIO, size: int = 1 << 23) -> Iterator[list[bytes]]:
    """The lines of ``handle`` without their newlines, a list about ``size`` bytes at a time.

    As iterating over the file does: a last line without a newline is a line, an
    empty line is an (empty, so malformed) entry, and nothing follows a final newline.
    """
    rest = b""
    while chunk := handle.read(size):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield lines
    if rest:
        yield [rest]


def _manifest_problems(
    manifest: Mapping[str, Any], heads: Sequence[TreeHead], head_lines: int, report: Report
) -> list[str]:
    """Where the (unsigned) manifest disagrees with the entries and the signed heads."""
    found = []
    entries = manifest.get("entries")
    if type(entries) is not int or entries != report.entries:
        found.append(f"says {entries!r} entries but entries.jsonl holds {report.entries}")
    count = manifest.get("tree_heads")
    if type(count) is not int or count != head_lines:
        found.append(f"says {count!r} tree heads but tree_heads.jsonl holds {head_lines}")
    try:
        head = TreeHead.from_dict(manifest.get("tree_head") or {})
    except (ProofError, ValueError, TypeError) as exc:
        found.append(f"has no readable tree_head ({exc})")
    else:
        if head not in heads:
            found.append(
                f"names a tree head of size {head.tree_size} that is not among the export's "
                "tree heads"
            )
        elif head.tree_size != report.entries:
            found.append(
                f"names a tree head of size {head.tree_size} but the export holds "
                f"{report.entries} entries"
            )
    exported_at = manifest.get("exported_at")
    try:
        datetime.strptime(str(exported_at), "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        found.append(f"has exported_at {exported_at!r}, not an RFC 3339 UTC time")
    return found


def receipt_problems(
    receipt: Receipt,
    public_keys: Mapping[str, Ed25519PublicKey],
    exported: bytes | None,
    checker: Checker,
) -> list[str]:
    """What is wrong with a receipt, checked against the verified entries of an export.

    The receipt must verify by itself (:func:`audit.receipts.verify_receipt`), the export
    must hold its very entry bytes at its seq, the entries of its promise's group must
    have the promised batch root, and a trusted signed tree head must cover them.
    """
    try:
        verify_receipt(receipt, public_keys)
    except (ProofError, SignatureError) as exc:
        return [f"does not verify: {exc}"]
    if exported is None:
        return [f"its entry is not in the export (which holds {checker.size} entries)"]
    if exported != receipt.entry:
        return ["the export holds other bytes at its seq: the entry was altered"]
    promise = receipt.promise
    end = receipt.seq + 1 if promise is None else promise.first + promise.count
    if promise is not None:
        if end > checker.size:
            return [f"its group ends at entry {end - 1}, beyond the export"]
        leaves = [checker.tree.leaf_hash(i) for i in range(promise.first, end)]
        if root_from_leaves(leaves) != promise.batch_root:
            return [
                f"the entries {promise.first}..{end - 1} of its group do not have the "
                "promised root: one was altered, inserted or removed"
            ]
    if checker.report.covered < end:
        return ["no trusted signed tree head covers it: the promise of inclusion is not kept"]
    return []
