"""The quick paths of verification prove only what the strict ones prove.

``loads_quick`` / ``fields_quick`` may decline anything, but whatever they accept the
strict parse must accept with the same value; ``MemoryTree.extend`` builds the tree
``append`` builds; ``Checker.feed_many`` reports exactly what ``feed`` entry by entry
reports, on honest and on tampered logs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import example, given
from hypothesis import strategies as st

from audit import verify_export
from audit.canonical import Unproven, loads_canonical, loads_quick, plain_floats
from audit.chain import GENESIS_HASH, entry_hash
from audit.checker import Checker
from audit.entry import Entry, EntryDraft, seal
from audit.errors import InvalidEntry
from audit.keys import SigningKey
from audit.merkle import SHA256
from audit.quick import fields_quick
from audit.signing import TreeHead, sign_tree_head
from audit.tree import MemoryTree
from tests.audit.test_canonical import canonical_or_none, values, wide
from tests.audit.test_entry import drafts


def loads_or_none(data: bytes) -> Any:
    try:
        return ("ok", loads_canonical(data))
    except InvalidEntry:
        return None


def assert_quick_proves_only_what_strict_proves(data: bytes) -> None:
    try:
        quick = loads_quick(data)
    except Unproven:
        return
    strict = loads_or_none(data)
    assert strict is not None, data
    assert strict[1] == quick and json.dumps(strict[1]) == json.dumps(quick)


@given(wide)
@example({"a": 9007199254740993})
@example({"a": [2.0, -0.0, 1e-7, 1e16, 1e21, 0.1]})
@example({"\U0001f600": 1, "\uffff": 2})
def test_loads_quick_accepts_only_canonical_bytes(value: Any) -> None:
    for data in (
        canonical_or_none(value),
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        ),
    ):
        if data is not None:
            assert_quick_proves_only_what_strict_proves(data)
    try:
        written = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return
    assert_quick_proves_only_what_strict_proves(written)


@given(values)
def test_loads_quick_proves_plain_canonical_forms(value: Any) -> None:
    """The fast path is taken, not only safe: a canonical form without an unusual float or a
    character beyond U+FFFF is proven."""
    data = canonical_or_none(value)
    text = json.dumps(value)
    if data is None or "\\ud8" in text or "\\ud9" in text or "\\uda" in text or "\\udb" in text:
        return
    if plain_floats(value):
        assert loads_quick(data) == json.loads(data)


@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
@example(b'{"a":1,"a":2}')
@example(b'{"a":1} ')
@example(b'{"a":"\\u0041"}')
@example(b'{"a":-0}')
@example(b'{"a":1E5}')
@example(b"[1.50]")
def test_loads_quick_on_arbitrary_bytes(data: bytes) -> None:
    assert_quick_proves_only_what_strict_proves(data)


@given(st.floats(allow_nan=False, allow_infinity=False))
@example(1e-5)
@example(1e-4)
@example(123456789012345.6)
@example(2.0**53 - 0.5)
def test_plain_floats_are_written_alike_by_orjson_and_rfc8785(value: float) -> None:
    if plain_floats(value):
        assert orjson.dumps(value) == rfc8785.dumps(value) == repr(value).encode()


def sealed(draft: EntryDraft, seq: int, prev: bytes) -> bytes:
    return seal(draft.prepare(), seq=seq, time="2026-01-02T03:04:05.000006Z", prev=prev)


def strict_fields(data: bytes) -> dict[str, Any] | None:
    try:
        return Entry.from_bytes(data, strict=True).to_dict()
    except InvalidEntry:
        return None


@given(drafts, st.integers(0, 2**53 - 1), st.binary(min_size=32, max_size=32))
def test_fields_quick_agrees_with_the_strict_parse(
    draft: EntryDraft, seq: int, prev: bytes
) -> None:
    canonical = sealed(draft, seq, prev)
    quick = fields_quick(canonical, seq, prev)
    assert quick is None or quick == strict_fields(canonical)
    assert fields_quick(canonical, seq + 1, prev) is None
    assert fields_quick(canonical, seq, bytes(reversed(prev)) + b"\x01") is None


def typical(i: int) -> EntryDraft:
    return EntryDraft(
        actor=f"operator-{i % 3}",
        role="operator",
        action="query",
        target=f"job:j-{i}",
        dataset="health.claims" if i % 2 else None,
        decision="allow" if i % 4 else "deny",
        rule="grant.live",
        request_id=f"req-{i}",
        client=None if i % 3 else "10.0.0.7",
        details={"sql": "SELECT 1", "rows_released": i, "budget_spent": 0.25, "n": [1, {"x": 0.5}]},
    )


def test_fields_quick_proves_typical_entries() -> None:
    for i in range(8):
        canonical = sealed(typical(i), i, bytes(32))
        assert fields_quick(canonical, i, bytes(32)) == strict_fields(canonical) is not None


MEMBERS = {
    "seq": [-1, True, 1.5, "7", 2**60],
    "v": [2, True, "1"],
    "prev": ["zz", "0" * 63, "A" * 64, 5, None],
    "time": ["yesterday", "2026-02-30T03:04:05.000006Z", 5, None],
    "decision": ["perhaps", "", None, 1],
    "details": [[], None, "x", {"x": 2.0}, {"x": 1e-7}, {"x": [2**60]}],
    "actor": ["", None, 5, ["a"]],
    "client": ["", 5, False],
    "dataset": ["", 0, {}],
    "request_id": ["", 1.5],
}


@pytest.mark.parametrize(("name", "bad"), [(n, b) for n, bads in MEMBERS.items() for b in bads])
def test_fields_quick_declines_every_bad_member(name: str, bad: Any) -> None:
    data = json.loads(sealed(typical(1), 7, bytes(32)))
    data[name] = bad
    written = [json.dumps(data, sort_keys=True, separators=(",", ":")).encode()]
    try:
        written.append(rfc8785.dumps(data))
    except (rfc8785.CanonicalizationError, rfc8785.IntegerDomainError):
        pass
    for canonical in written:
        quick = fields_quick(canonical, 7, bytes(32))
        assert quick is None or quick == strict_fields(canonical)
        if name != "details":  # {"x": 2.0} is written {"x":2}: a good entry
            assert quick is None


@given(drafts, st.data())
def test_fields_quick_after_a_one_byte_edit(draft: EntryDraft, data: st.DataObject) -> None:
    canonical = sealed(draft, 3, bytes(32))
    at = data.draw(st.integers(0, len(canonical) - 1))
    byte = data.draw(st.integers(0, 255))
    how = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    edited = {
        "replace": canonical[:at] + bytes([byte]) + canonical[at + 1 :],
        "insert": canonical[:at] + bytes([byte]) + canonical[at:],
        "delete": canonical[:at] + canonical[at + 1 :],
    }[how]
    quick = fields_quick(edited, 3, bytes(32))
    assert quick is None or quick == strict_fields(edited)


@given(st.lists(st.integers(0, 40), max_size=12))
def test_extend_builds_the_tree_append_builds(batches: list[int]) -> None:
    appended, extended = MemoryTree(SHA256), MemoryTree(SHA256)
    count = 0
    for size in batches:
        batch = [SHA256.hash_leaf(i.to_bytes(4, "big")) for i in range(count, count + size)]
        count += size
        for leaf in batch:
            appended.append(leaf)
        extended.extend(batch)
        assert extended.levels == appended.levels and extended.size == appended.size
        assert extended.root() == appended.root()
    with pytest.raises(ValueError):
        extended.extend([b"x" * 31, b"y" * 33])


KEY = SigningKey("k", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
PUBLIC = {"k": KEY.public_key}


def honest_log(n: int) -> tuple[list[bytes], list[TreeHead]]:
    """``n`` chained entries with heads signed every 3 entries and at the end."""
    lines, chain, tree, heads = [], GENESIS_HASH, MemoryTree(SHA256), []
    for i in range(n):
        line = sealed(typical(i), i, chain)
        lines.append(line)
        chain = entry_hash(chain, line)
        tree.append(SHA256.hash_leaf(line))
        if (i + 1) % 3 == 0 or i + 1 == n:
            heads.append(
                sign_tree_head(
                    KEY, tree_size=i + 1, timestamp_ms=i, root_hash=tree.root(), chain_head=chain
                )
            )
    return lines, heads


def reports(lines: list[bytes], heads: list[TreeHead], split: list[int]) -> tuple[Any, Any]:
    one = Checker(heads, PUBLIC)
    one_hashes = [one.feed(line) for line in lines]
    many = Checker(heads, PUBLIC)
    many_hashes: list[tuple[bytes, bytes]] = []
    start = 0
    for cut in [*sorted(split), len(lines)]:
        fed = many.feed_many(lines[start : max(start, cut)])
        many_hashes.extend(zip(fed.chains, fed.leaves, strict=True))
        start = max(start, cut)
    assert many_hashes == one_hashes
    return one.finish(require_covered=True), many.finish(require_covered=True)


@given(
    st.integers(1, 14),
    st.lists(st.integers(0, 14), max_size=3),
    st.data(),
)
def test_feed_many_reports_what_feed_reports(n: int, split: list[int], data: st.DataObject) -> None:
    lines, heads = honest_log(n)
    edit = data.draw(st.sampled_from(["none", "byte", "member", "drop", "swap", "duplicate"]))
    at = data.draw(st.integers(0, n - 1))
    if edit == "byte":
        pos = data.draw(st.integers(0, len(lines[at]) - 1))
        lines[at] = lines[at][:pos] + bytes([lines[at][pos] ^ 0x20]) + lines[at][pos + 1 :]
    elif edit == "member":
        lines[at] = lines[at].replace(b'"decision":"', b'"decision":"x', 1)
    elif edit == "drop":
        del lines[at]
    elif edit == "swap" and at + 1 < n:
        lines[at], lines[at + 1] = lines[at + 1], lines[at]
    elif edit == "duplicate":
        lines.insert(at, lines[at])
    one, many = reports(lines, heads, split)
    assert many == one
    assert many.ok == (edit == "none" or (edit == "swap" and at + 1 == n))


def test_an_export_with_any_byte_changed_fails(tmp_path: Path) -> None:
    """Every single-byte edit of the entries file fails the verification (a sample of each
    entry's bytes; the whole file of a small export)."""
    from audit import AuditTrail, KeyRing
    from tests.audit.conftest import fill

    with AuditTrail.open(f"sqlite:///{tmp_path / 'a.db'}", KeyRing(tmp_path / "k")) as trail:
        fill(trail, 3)
        trail.export(tmp_path / "x")
    path = tmp_path / "x" / "entries.jsonl"
    original = path.read_bytes()
    assert verify_export(tmp_path / "x").ok
    for at in range(0, len(original), 7):
        path.write_bytes(original[:at] + bytes([original[at] ^ 0x01]) + original[at + 1 :])
        assert not verify_export(tmp_path / "x").ok, at
