"""Receipts: one signed promise per commit, each receipt's path in its group, old receipts.

A group of appends is made deterministic by holding SQLite's write lock from another
connection while the appends queue up: the writer then commits them as one group.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import (
    AuditTrail,
    KeyRing,
    Promise,
    Receipt,
    verify_receipt,
    verify_receipt_inclusion,
)
from audit.entry import EntryDraft
from audit.errors import ProofError, SignatureError
from audit.keys import load_public_keys
from audit.receipts import promise_message, receipt_message
from audit.signing import sign_tree_head
from tests.audit.conftest import record

VECTOR = Path(__file__).with_name("vectors") / "receipt-v1"


def draft(i: int) -> EntryDraft:
    return EntryDraft(
        actor=f"operator-{i % 3}",
        role="operator",
        action="dataset.query",
        target=f"query:job_{i}",
        decision="allow",
        rule="allow.grant",
        details={"rows": i, "epsilon_spent": 0.25},
    )


def one_group(trail: AuditTrail, path: Path, n: int) -> list[Receipt]:
    """Append ``n`` entries that the writer commits as one group (see the module doc)."""
    trail.sign_tree_head()  # starts the writer and creates the file
    writer = trail._group_writer
    assert writer is not None
    queued = threading.Event()
    submit = writer.submit

    def submit_and_tell(prepared: Any) -> Any:
        futures = submit(prepared)
        queued.set()
        return futures

    writer.submit = submit_and_tell  # type: ignore[method-assign]
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    out: list[Receipt] = []
    worker = threading.Thread(target=lambda: out.extend(trail.append_many(
        [draft(i) for i in range(n)])))  # fmt: skip
    worker.start()
    # Everything is queued while the writer waits for the lock; it drains the queue
    # once it holds the lock, so all n go into one commit.
    assert queued.wait(30)
    blocker.execute("ROLLBACK")
    blocker.close()
    worker.join()
    writer.submit = submit  # type: ignore[method-assign]
    return out


@pytest.fixture
def grouped(tmp_path: Path, keyring: KeyRing) -> Iterator[tuple[AuditTrail, list[Receipt]]]:
    path = tmp_path / "audit.db"
    with AuditTrail.open(f"sqlite:///{path}", keyring, sign_every_n=1000) as trail:
        yield trail, one_group(trail, path, 7)


def test_message_layouts() -> None:
    assert promise_message(3, 7, 5, b"\x11" * 32) == (
        b"sandbox-audit/promise/v1\n"
        + (3).to_bytes(8, "big")
        + (7).to_bytes(8, "big")
        + (5).to_bytes(8, "big")
        + b"\x11" * 32
    )
    assert receipt_message(3, b"\x33" * 32) == (
        b"sandbox-audit/receipt/v1\n" + (3).to_bytes(8, "big") + b"\x33" * 32
    )


def test_a_group_shares_one_promise_and_each_receipt_verifies(
    grouped: tuple[AuditTrail, list[Receipt]], keyring: KeyRing
) -> None:
    trail, receipts = grouped
    keys = keyring.public_keys()
    promises = {r.promise for r in receipts}
    assert len(promises) == 1
    promise = receipts[0].promise
    assert promise is not None and (promise.first, promise.count) == (0, 7)
    assert [r.seq for r in receipts] == list(range(7))
    assert len({r.batch_path for r in receipts}) == 7  # each its own path
    for receipt in receipts:
        again = Receipt.from_dict(json.loads(json.dumps(receipt.to_dict())))
        assert again == receipt and "key_id" not in receipt.to_dict()
        verify_receipt(again, keys)
    # The promise is kept: the next tree head has every entry of the group.
    head = trail.sign_tree_head()
    for receipt in receipts:
        verify_receipt_inclusion(receipt, head, trail.inclusion_proof(receipt.seq), keys)


def test_separate_commits_get_separate_promises(trail: AuditTrail, keyring: KeyRing) -> None:
    receipts = [record(trail, i) for i in range(3)]
    assert [(r.promise.first, r.promise.count) for r in receipts if r.promise] == [
        (0, 1),
        (1, 1),
        (2, 1),
    ]
    for receipt in receipts:
        assert receipt.batch_path == ()
        verify_receipt(receipt, keyring.public_keys())


def test_a_receipt_of_format_1_still_verifies() -> None:
    """A receipt written before promises (one signature per entry), kept as a file."""
    doc = json.loads((VECTOR / "receipt.json").read_text())
    keys = load_public_keys(VECTOR / "keys")
    receipt = Receipt.from_dict(doc)
    assert receipt.promise is None and receipt.key_id in keys
    verify_receipt(receipt, keys)
    assert Receipt.from_dict(receipt.to_dict()) == receipt
    forged = dataclasses.replace(receipt, entry=receipt.entry.replace(b"job_1", b"job_2"))
    with pytest.raises(ProofError, match="does not hash"):
        verify_receipt(forged, keys)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_receipt(dataclasses.replace(receipt, signature=bytes(64)), keys)


def test_a_tree_head_signature_cannot_pass_for_a_promise(
    grouped: tuple[AuditTrail, list[Receipt]], keyring: KeyRing
) -> None:
    _, receipts = grouped
    promise = receipts[0].promise
    assert promise is not None
    head = sign_tree_head(
        keyring.active(),
        tree_size=promise.first,
        timestamp_ms=promise.timestamp_ms,
        root_hash=promise.batch_root,
        chain_head=bytes(32),
    )
    forged = Promise(**{**_fields(promise), "signature": head.signature})
    with pytest.raises(SignatureError, match="does not verify"):
        verify_receipt(dataclasses.replace(receipts[0], promise=forged), keyring.public_keys())


def test_unknown_key_and_missing_promise(
    grouped: tuple[AuditTrail, list[Receipt]], tmp_path: Path
) -> None:
    _, receipts = grouped
    stranger = KeyRing(tmp_path / "stranger")
    stranger.ensure()
    with pytest.raises(SignatureError) as caught:
        verify_receipt(receipts[0], stranger.public_keys())
    assert caught.value.unknown_key
    bare = dataclasses.replace(receipts[0], promise=None)
    with pytest.raises(ProofError, match="neither a promise nor a signature"):
        verify_receipt(bare, stranger.public_keys())
    with pytest.raises(ProofError, match="neither a promise"):
        Receipt.from_dict({k: v for k, v in receipts[0].to_dict().items() if k != "promise"})


def _fields(promise: Promise) -> dict[str, Any]:
    return {
        "first": promise.first,
        "count": promise.count,
        "timestamp_ms": promise.timestamp_ms,
        "batch_root": promise.batch_root,
        "key_id": promise.key_id,
        "signature": promise.signature,
    }


def _flip(data: bytes, position: int, mask: int) -> bytes:
    position %= len(data)
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]


TAMPERABLE = [
    "entry",
    "entry_hash",
    "leaf_hash",
    "seq",
    "batch_path",
    "first",
    "count",
    "timestamp_ms",
    "batch_root",
    "signature",
]


def tamper(receipt: Receipt, name: str, position: int, mask: int) -> Receipt:
    """The receipt with one byte of ``name`` changed (or one number moved)."""
    promise = receipt.promise
    assert promise is not None
    fields = _fields(promise)
    if name in ("entry", "entry_hash", "leaf_hash"):
        return dataclasses.replace(receipt, **{name: _flip(getattr(receipt, name), position, mask)})
    if name == "seq":
        return dataclasses.replace(receipt, seq=receipt.seq ^ mask)
    if name == "batch_path":
        path = list(receipt.batch_path)
        index = position % len(path)
        path[index] = _flip(path[index], position // len(path), mask)
        return dataclasses.replace(receipt, batch_path=tuple(path))
    if name in ("first", "count", "timestamp_ms"):
        fields[name] ^= mask
    else:
        fields[name] = _flip(fields[name], position, mask)
    return dataclasses.replace(receipt, promise=Promise(**fields))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(0, 6),
    st.sampled_from(TAMPERABLE),
    st.integers(0, 10_000),
    st.integers(1, 255),
)
def test_any_tampered_byte_fails_with_a_named_reason(
    grouped: tuple[AuditTrail, list[Receipt]],
    keyring: KeyRing,
    which: int,
    name: str,
    position: int,
    mask: int,
) -> None:
    _, receipts = grouped
    forged = tamper(receipts[which], name, position, mask)
    with pytest.raises((ProofError, SignatureError)) as caught:
        verify_receipt(forged, keyring.public_keys())
    assert str(caught.value)  # says what does not hold


SANDBOX = str(Path(sys.executable).with_name("sandbox"))


def verify_cli(export: Path, *receipts: Path) -> subprocess.CompletedProcess[str]:
    """``sandbox audit verify EXPORT --receipt R ...``: the installed command, as users run it."""
    args = [SANDBOX, "audit", "verify", str(export)]
    for receipt in receipts:
        args += ["--receipt", str(receipt)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_sandbox_audit_verify_checks_receipts_against_an_export(
    grouped: tuple[AuditTrail, list[Receipt]], tmp_path: Path
) -> None:
    trail, receipts = grouped
    late = trail.append_many([draft(99)])[0]  # a commit of its own after the group
    files = []
    for receipt in [*receipts[:3], late]:
        path = tmp_path / f"receipt-{receipt.seq}.json"
        path.write_text(json.dumps(receipt.to_dict()))
        files.append(path)
    trail.export(tmp_path / "early")  # covers everything, the late entry included
    ok = verify_cli(tmp_path / "early", *files)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK: 8 entries")

    # A byte of a receipt's entry changed: the receipt itself fails, exit 1, named.
    doc = json.loads(files[1].read_text())
    doc["entry"] = doc["entry"].replace("operator-1", "operator-2")
    files[1].write_text(json.dumps(doc))
    bad = verify_cli(tmp_path / "early", files[1])
    assert bad.returncode == 1
    assert "receipt: receipt for entry 1: does not verify: receipt entry does not hash" in (
        bad.stdout
    )

    # An export in which the receipt's entry was altered: the promise is broken.
    lines = (tmp_path / "early" / "entries.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"operator-2", b"operator-0")
    (tmp_path / "early" / "entries.jsonl").write_bytes(b"".join(lines))
    broken = verify_cli(tmp_path / "early", files[2])
    assert broken.returncode == 1
    assert "receipt for entry 2: the export holds other bytes at its seq" in broken.stdout


def test_a_promise_is_not_kept_by_an_export_without_its_entry(
    grouped: tuple[AuditTrail, list[Receipt]], tmp_path: Path
) -> None:
    trail, _ = grouped
    trail.export(tmp_path / "before")
    late = trail.append_many([draft(99)])[0]
    path = tmp_path / "late.json"
    path.write_text(json.dumps(late.to_dict()))
    missing = verify_cli(tmp_path / "before", path)
    assert missing.returncode == 1
    assert "receipt for entry 7: its entry is not in the export (which holds 7 entries)" in (
        missing.stdout
    )
    unreadable = tmp_path / "unreadable.json"
    unreadable.write_text('{"entry": "{}", "seq": 1}')
    assert verify_cli(tmp_path / "before", unreadable).returncode == 2


def _doc_receipt_checker() -> Any:
    """The receipt checker written in docs/audit.md section 5 from the text alone."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text()
    section = text[text.index("## 5. Receipts") : text.index("### 5.1 Release receipts")]
    code = section[section.index("```python") + len("```python") :]
    code = code[: code.index("```")]
    namespace: dict[str, Any] = {"__name__": "doc_receipts"}
    exec(compile(code, "docs/audit.md", "exec"), namespace)
    return namespace["check_append_receipt"]


def test_the_documented_receipt_check_agrees_with_ours(
    grouped: tuple[AuditTrail, list[Receipt]], keyring: KeyRing
) -> None:
    check = _doc_receipt_checker()
    _, receipts = grouped
    for receipt in receipts:
        check(receipt.to_dict(), keyring.directory)
    check(json.loads((VECTOR / "receipt.json").read_text()), VECTOR / "keys")
    for name in ("entry", "batch_path", "batch_root", "signature"):
        forged = tamper(receipts[3], name, 5, 1)
        with pytest.raises(Exception):  # noqa: B017 - the doc's checker raises what fails
            check(forged.to_dict(), keyring.directory)
