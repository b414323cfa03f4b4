"""Entries: canonical bytes equal RFC 8785 of the whole object; fast reading; strict parsing."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from audit.entry import (
    ENTRY_KEYS,
    Entry,
    EntryDraft,
    _fresh_text,
    format_micros,
    format_time,
    peek,
    query_details,
    seal,
)
from audit.errors import InvalidEntry

text = st.text(min_size=1, max_size=30)
optional = st.none() | text
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(max_size=20)
    | st.floats(min_value=-(2.0**53) + 1, max_value=2.0**53 - 1),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
drafts = st.builds(
    EntryDraft,
    actor=text,
    role=text,
    action=text,
    target=text,
    decision=st.sampled_from(["allow", "deny"]),
    rule=text,
    request_id=optional,
    client=optional,
    dataset=optional,
    details=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)


def sealed(draft: EntryDraft, seq: int = 7, prev: bytes = b"\x01" * 32) -> bytes:
    return seal(draft.prepare(), seq=seq, time="2026-01-02T03:04:05.000006Z", prev=prev)


@given(drafts, st.integers(0, 2**53 - 1), st.binary(min_size=32, max_size=32))
def test_sealed_bytes_are_rfc8785_of_the_whole_entry(
    draft: EntryDraft, seq: int, prev: bytes
) -> None:
    canonical = sealed(draft, seq, prev)
    data = json.loads(canonical)
    assert tuple(sorted(data)) == ENTRY_KEYS
    assert rfc8785.dumps(data) == canonical
    assert peek(canonical) == (seq, prev)
    entry = Entry.from_bytes(canonical, strict=True)
    assert entry.seq == seq and entry.prev == prev.hex() and entry.actor == draft.actor


def test_dataset_defaults_from_a_dataset_target() -> None:
    draft = EntryDraft(
        actor="a",
        role="bureau",
        action="dataset.register",
        target="dataset:health.claims",
        decision="allow",
        rule="role.bureau",
    )
    assert draft.dataset == "health.claims"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"actor": ""}, "actor must be a non-empty string"),
        ({"rule": None}, "rule must be a non-empty string"),
        ({"decision": "maybe"}, "decision must be one of"),
        ({"client": 5}, "client must be a non-empty string or None"),
        ({"details": [1]}, "details must be a JSON object"),
        ({"details": {"x": float("nan")}}, "beyond"),
        ({"details": {"x": 2**60}}, "cannot be canonical JSON"),
        ({"details": {"x": [2.0**60]}}, "beyond"),
        ({"details": {"x": b"bytes"}}, "cannot be canonical JSON"),
        ({"details": {"x": "y" * 70_000}}, "details exceed"),
    ],
)
def test_bad_fields_are_refused(change: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "actor": "a",
        "role": "r",
        "action": "x",
        "target": "t",
        "decision": "allow",
        "rule": "r",
    }
    fields.update(change)
    with pytest.raises(InvalidEntry, match=message):
        EntryDraft(**fields).prepare()


def test_strict_parse_refuses_non_canonical_and_malformed_entries() -> None:
    draft = EntryDraft(actor="a", role="r", action="x", target="t", decision="allow", rule="r")
    canonical = sealed(draft)
    spaced = json.dumps(json.loads(canonical), indent=1).encode()
    Entry.from_bytes(spaced)  # well-formed, just not canonical
    with pytest.raises(InvalidEntry, match="not RFC 8785"):
        Entry.from_bytes(spaced, strict=True)
    data = json.loads(canonical)
    for key, bad in [
        ("seq", -1),
        ("prev", "zz"),
        ("time", "yesterday"),
        ("v", 2),
        ("v", True),  # equal to 1 in Python, not the integer 1 in JSON
        ("seq", True),
        ("decision", "perhaps"),
        ("details", []),
    ]:
        with pytest.raises(InvalidEntry):
            Entry.from_bytes(rfc8785.dumps({**data, key: bad}))
    with pytest.raises(InvalidEntry, match="exactly the members"):
        Entry.from_bytes(rfc8785.dumps({**data, "extra": 1}))
    with pytest.raises(InvalidEntry, match="not JSON"):
        Entry.from_bytes(b"{nope")


@pytest.mark.parametrize(
    "line",
    [b"", b"{}", b'{"prev":"00"}', b'{"a":1,"prev":"' + b"g" * 64 + b'","request_id":null}'],
)
def test_peek_refuses_what_is_not_an_entry(line: bytes) -> None:
    with pytest.raises(InvalidEntry):
        peek(line)


@given(st.text(alphabet=string.printable, max_size=40))
def test_peek_finds_the_top_level_members_whatever_the_strings_hold(noise: str) -> None:
    # Strings that imitate members ("prev", "seq") cannot fool the fast reader.
    fake = f'","prev":"{"a" * 64}","seq":99,'
    draft = EntryDraft(
        actor=noise + fake,
        role="r",
        action="x",
        target=fake,
        decision="deny",
        rule=noise or "r",
        details={"prev": "b" * 64, "seq": 5, "n": noise},
    )
    assert peek(sealed(draft, 3, bytes(32))) == (3, bytes(32))


def test_times_are_fixed_width_utc() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=8)))
    assert format_time(moment) == "2026-03-03T21:06:07.000000Z"
    assert format_time(datetime(2026, 1, 1, tzinfo=UTC)) < format_time(
        datetime(2026, 1, 2, tzinfo=UTC)
    )
    with pytest.raises(InvalidEntry):
        format_time(datetime(2026, 1, 1))


@given(st.integers(0, 253_402_300_799_999_999))  # 1970-01-01 .. 9999-12-31T23:59:59.999999
def test_commit_times_are_format_time_of_the_same_microsecond(micros: int) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    assert format_micros(micros) == format_time(moment)


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=30) | st.none())
def test_fresh_text_fields_are_rfc8785(value: str | None) -> None:
    # ASCII with quotes, backslashes and control characters: the quoted-only path
    # and the escaping path must both write what RFC 8785 writes.
    assert _fresh_text(value) == rfc8785.dumps(value)


def test_query_details_hash_the_sql() -> None:
    details = query_details(
        sql="SELECT 1", result_digest="d", rows_released=1, groups_suppressed=0, duration_ms=2
    )
    assert (
        details["sql_sha256"] == "e004ebd5b5532a4b85984a62f8ad48a81aa3460c1ca07701f386135d72cdecf5"
    )
