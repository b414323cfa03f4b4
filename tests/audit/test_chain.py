"""Hash chain properties: any deletion, insertion, swap or change of an entry breaks a link."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from audit.chain import GENESIS_HASH, entry_hash, first_broken_link
from audit.entry import EntryDraft, seal


def chain(n: int) -> list[bytes]:
    out, prev = [], GENESIS_HASH
    for i in range(n):
        draft = EntryDraft(
            actor=f"a{i}", role="r", action="x", target="t", decision="allow", rule="r"
        )
        canonical = seal(draft.prepare(), seq=i, time="2026-01-01T00:00:00.000000Z", prev=prev)
        out.append(canonical)
        prev = entry_hash(prev, canonical)
    return out


def test_genesis_is_32_zero_bytes_and_links_are_sha256() -> None:
    assert GENESIS_HASH == bytes(32)
    entries = chain(2)
    assert (
        entry_hash(GENESIS_HASH, entries[0]).hex()
        == __import__("hashlib").sha256(bytes(32) + entries[0]).hexdigest()
    )
    assert first_broken_link(entries) is None


@given(st.integers(2, 30), st.data())
def test_every_kind_of_edit_is_found_at_or_next_to_the_edit(n: int, data: st.DataObject) -> None:
    entries = chain(n)
    kind = data.draw(st.sampled_from(["delete", "insert", "swap", "change", "truncate_head"]))
    i = data.draw(st.integers(0, n - 2))
    edited = list(entries)
    if kind == "delete":
        del edited[i]
    elif kind == "insert":
        edited.insert(i, edited[i])
    elif kind == "swap":
        edited[i], edited[i + 1] = edited[i + 1], edited[i]
    elif kind == "change":
        edited[i] = edited[i].replace(b'"actor":"a', b'"actor":"z', 1)
    else:
        edited = edited[i + 1 :]
    broken = first_broken_link(edited)
    assert broken is not None
    assert broken in (i, i + 1) or (kind == "truncate_head" and broken == 0)
