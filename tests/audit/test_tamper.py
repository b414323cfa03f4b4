"""Every tampering kind of issue 3 is detected, on an export and on the live store.

The log: 10 entries, tree heads signed at sizes 1, 5, 9 (every 4) and 10 (on
demand, or by the export).  Each test edits what an attacker with file or
database access could edit, then checks the report names the right entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit import AuditTrail, KeyRing, Report, TreeHead, verify_export
from audit.chain import GENESIS_HASH, entry_hash
from audit.entry import peek
from audit.merkle import SHA256
from audit.signing import sign_tree_head
from audit.tree import Frontier
from tests.audit.conftest import fill

N = 10


@pytest.fixture(params=["cold", "warm"])
def signed_trail(
    db_url: str, keyring: KeyRing, request: pytest.FixtureRequest
) -> Iterator[AuditTrail]:
    """The signed log; "warm": the trail verified it once before the attacker edits it,
    so its next verification skips the strict parse of those entries if their chain
    head is unchanged (and must find every edit all the same)."""
    with AuditTrail.open(db_url, keyring, sign_every_n=4, sign_every_s=3600) as trail:
        fill(trail, N)
        trail.sign_tree_head()
        assert [h.tree_size for h in trail.tree_heads()] == [1, 5, 9, 10]
        if request.param == "warm":
            assert trail.verify().ok
        yield trail


@pytest.fixture
def export(sqlite_url: str, keyring: KeyRing, tmp_path: Path) -> Path:
    with AuditTrail.open(sqlite_url, keyring, sign_every_n=4, sign_every_s=3600) as trail:
        fill(trail, N)
        trail.export(tmp_path / "export")
    assert verify_export(tmp_path / "export").ok
    return tmp_path / "export"


def stranger(tmp_path: Path) -> KeyRing:
    ring = KeyRing(tmp_path / "stranger")
    ring.ensure()
    return ring


def forged_line(line: bytes) -> bytes:
    return line.replace(b'"actor":"operator-', b'"actor":"intruder-', 1)


def rechain(lines: list[bytes], start: int) -> list[bytes]:
    """What an attacker without the key does after editing: fix every later prev link."""
    out = list(lines)
    prev = GENESIS_HASH if start == 0 else entry_hash(peek(out[start - 1])[1], out[start - 1])
    for i in range(start, len(out)):
        _, old_prev = peek(out[i])
        out[i] = out[i].replace(old_prev.hex().encode(), prev.hex().encode(), 1)
        prev = entry_hash(prev, out[i])
    return out


def assert_first(report: Report, kind: str | tuple[str, ...], seq: int | None) -> None:
    assert not report.ok
    first = report.first_problem
    assert first is not None
    kinds = (kind,) if isinstance(kind, str) else kind
    assert first.kind in kinds and first.seq == seq, report.problems


# -- export ------------------------------------------------------------------------------


def edit_lines(export: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    path = export / "entries.jsonl"
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"".join(line + b"\n" for line in change(lines)))


def edit_heads(export: Path, change: Callable[[list[TreeHead]], list[TreeHead]]) -> None:
    path = export / "tree_heads.jsonl"
    heads = [TreeHead.from_dict(json.loads(line)) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(h.to_dict()) + "\n" for h in change(heads)))


def rewrite_manifest(export: Path) -> None:
    """What a careful attacker does last: the manifest is not signed, so make it agree."""
    manifest = json.loads((export / "manifest.json").read_text())
    heads = (export / "tree_heads.jsonl").read_text().splitlines()
    manifest["entries"] = len((export / "entries.jsonl").read_bytes().splitlines())
    manifest["tree_heads"] = len(heads)
    manifest["tree_head"] = json.loads(heads[-1])
    (export / "manifest.json").write_text(json.dumps(manifest))


def test_export_changed_field(export: Path) -> None:
    edit_lines(export, lambda ls: [*ls[:5], forged_line(ls[5]), *ls[6:]])
    assert_first(verify_export(export), "chain", 5)


def test_export_changed_last_entry(export: Path) -> None:
    edit_lines(export, lambda ls: [*ls[:9], forged_line(ls[9])])
    assert_first(verify_export(export), "chain_head", 9)


def test_export_changed_field_with_relinked_chain(export: Path) -> None:
    edit_lines(export, lambda ls: rechain([*ls[:5], forged_line(ls[5]), *ls[6:]], 5))
    report = verify_export(export)
    assert not report.ok and {"root", "chain_head"} <= {p.kind for p in report.problems}
    assert "[5, 9)" in str(next(p for p in report.problems if p.kind == "root"))


def test_export_deleted_entry(export: Path) -> None:
    edit_lines(export, lambda ls: [*ls[:5], *ls[6:]])
    assert_first(verify_export(export), "sequence", 5)


def test_export_inserted_entry(export: Path) -> None:
    edit_lines(export, lambda ls: [*ls[:5], forged_line(ls[5]), *ls[5:]])
    assert_first(verify_export(export), "sequence", 5)


def test_export_swapped_entries(export: Path) -> None:
    edit_lines(export, lambda ls: [*ls[:5], ls[6], ls[5], *ls[7:]])
    assert_first(verify_export(export), "sequence", 5)


def test_export_truncated_after_signed_head(export: Path) -> None:
    edit_lines(export, lambda ls: ls[:7])
    assert_first(verify_export(export), "truncated", 7)


def test_export_truncated_with_its_heads_needs_a_trusted_head(export: Path) -> None:
    trusted = [h for h in verify_heads(export) if h.tree_size == N]
    edit_lines(export, lambda ls: ls[:5])
    edit_heads(export, lambda hs: [h for h in hs if h.tree_size <= 5])
    assert_first(verify_export(export), "manifest", None)  # the manifest still says 10...
    rewrite_manifest(export)
    assert verify_export(export).ok  # ...self-consistent once it and the heads are rewritten...
    assert_first(verify_export(export, trusted_heads=trusted), "truncated", 5)  # ...not this


def verify_heads(export: Path) -> list[TreeHead]:
    lines = (export / "tree_heads.jsonl").read_text().splitlines()
    return [TreeHead.from_dict(json.loads(line)) for line in lines]


def test_export_entry_appended_after_the_last_head(export: Path) -> None:
    def append_forged(lines: list[bytes]) -> list[bytes]:
        last = lines[-1]
        extra = forged_line(last).replace(b'"seq":9,', b'"seq":10,')
        return rechain([*lines, extra], len(lines))

    edit_lines(export, append_forged)
    assert_first(verify_export(export), "uncovered", 10)


def test_export_forged_signature(export: Path) -> None:
    def forge(heads: list[TreeHead]) -> list[TreeHead]:
        h = heads[1]
        heads[1] = TreeHead(
            **{**h.__dict__, "signature": bytes([h.signature[0] ^ 1]) + h.signature[1:]}
        )
        return heads

    edit_heads(export, forge)
    assert_first(verify_export(export), "signature", None)


def test_export_head_signed_by_unknown_key(export: Path, tmp_path: Path, keyring: KeyRing) -> None:
    intruder = stranger(tmp_path)

    def resign(heads: list[TreeHead]) -> list[TreeHead]:
        h = heads[-1]
        heads[-1] = sign_tree_head(
            intruder.active(),
            tree_size=h.tree_size,
            timestamp_ms=h.timestamp_ms,
            root_hash=h.root_hash,
            chain_head=h.chain_head,
        )
        return heads

    edit_heads(export, resign)
    assert_first(verify_export(export), "unknown_key", None)
    # Slipping the intruder's key into the export only fools a verifier that trusts it.
    for pub in intruder.directory.glob("*.pub"):
        (export / "keys" / pub.name).write_bytes(pub.read_bytes())
    rewrite_manifest(export)
    assert verify_export(export).ok
    assert_first(verify_export(export, public_keys=keyring.public_keys()), "unknown_key", None)


def test_export_malformed_lines(export: Path) -> None:
    edit_lines(export, lambda ls: [*ls[:3], b"not json", *ls[4:]])
    assert_first(verify_export(export), ("malformed", "chain"), 3)


# -- live store ---------------------------------------------------------------------------


def rows(engine: sa.Engine) -> list[sa.Row[tuple[object, ...]]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT * FROM audit_entries ORDER BY seq")))


@pytest.fixture
def engine(signed_trail: AuditTrail, db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


def update(engine: sa.Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def test_live_changed_field(signed_trail: AuditTrail, engine: sa.Engine) -> None:
    entry = bytes(rows(engine)[5].entry)
    update(engine, "UPDATE audit_entries SET entry = :e WHERE seq = 5", e=forged_line(entry))
    assert_first(signed_trail.verify(), ("chain", "stored_hash", "index"), 5)


@pytest.mark.parametrize("member", ["time", "decision", "details"])
def test_live_entry_missing_a_member_is_reported(
    signed_trail: AuditTrail, engine: sa.Engine, member: str
) -> None:
    """Rewritten without one member, seq and prev kept: a report, never a KeyError (warm:
    the entry is below what the trail verified before, where only its chain is re-read)."""
    data = json.loads(bytes(rows(engine)[3].entry))
    del data[member]
    update(engine, "UPDATE audit_entries SET entry = :e WHERE seq = 3", e=json.dumps(data).encode())
    assert_first(signed_trail.verify(), ("malformed", "chain", "stored_hash"), 3)


def test_live_entry_stored_as_text_is_judged_by_its_bytes(
    signed_trail: AuditTrail, engine: sa.Engine, tmp_path: Path
) -> None:
    """SQLite keeps what ``replace()`` returns on a BLOB as TEXT: a report, not a crash;
    the same bytes as text pass, an edit made that way is found."""
    if engine.dialect.name != "sqlite":
        pytest.skip("a bytea column holds no text")
    update(engine, "UPDATE audit_entries SET entry = CAST(entry AS TEXT) WHERE seq = 2")
    assert signed_trail.verify().ok
    update(
        engine,
        "UPDATE audit_entries SET entry = replace(entry, 'operator-', 'intruder-') WHERE seq = 6",
    )
    assert_first(signed_trail.verify(), ("chain", "stored_hash", "index"), 6)
    # The export carries the bytes as they are: its verification finds the same edit.
    signed_trail.export(tmp_path / "export")
    assert_first(verify_export(tmp_path / "export"), ("chain", "root"), 6)


def test_live_changed_index_column_only(signed_trail: AuditTrail, engine: sa.Engine) -> None:
    update(engine, "UPDATE audit_entries SET actor = 'someone-else' WHERE seq = 4")
    assert_first(signed_trail.verify(), "index", 4)


def test_live_changed_stored_hashes(signed_trail: AuditTrail, engine: sa.Engine) -> None:
    update(engine, "UPDATE audit_entries SET subtree_hashes = :h WHERE seq = 3", h=bytes(64))
    assert_first(signed_trail.verify(), "node", 3)
    update(engine, "UPDATE audit_entries SET entry_hash = :h WHERE seq = 2", h=bytes(32))
    assert_first(signed_trail.verify(), "stored_hash", 2)


def test_live_fully_rewritten_tail(signed_trail: AuditTrail, engine: sa.Engine) -> None:
    """An attacker who recomputes every stored hash still cannot match the signed roots."""
    lines = [bytes(r.entry) for r in rows(engine)]
    lines = rechain([*lines[:5], forged_line(lines[5]), *lines[6:]], 5)
    frontier, chain = Frontier(), GENESIS_HASH
    for seq, line in enumerate(lines):
        completed: list[tuple[int, int, bytes]] = []
        leaf = SHA256.hash_leaf(line)
        frontier.append(leaf, completed)
        chain = entry_hash(chain, line)
        update(
            engine,
            "UPDATE audit_entries SET entry = :e, entry_hash = :c, leaf_hash = :l, "
            "subtree_hashes = :s, actor = :a WHERE seq = :q",
            e=line,
            c=chain,
            l=leaf,
            s=b"".join(n[2] for n in completed),
            q=seq,
            a=json.loads(line)["actor"],
        )
    report = signed_trail.verify()
    assert not report.ok and "root" in {p.kind for p in report.problems}
    with pytest.raises(Exception, match="disagree"):
        signed_trail.inclusion_proof(6)  # the trail refuses to hand out proofs it cannot back


def test_live_deleted_entry(signed_trail: AuditTrail, engine: sa.Engine) -> None:
    update(engine, "DELETE FROM audit_entries WHERE seq = 5")
    assert_first(signed_trail.verify(), "sequence", 5)


def test_live_inserted_entry(signed_trail: AuditTrail, engine: sa.Engine) -> None:
    for seq in range(N - 1, 4, -1):
        update(engine, "UPDATE audit_entries SET seq = seq + 1 WHERE seq = :s", s=seq)
    original = rows(engine)[5]
    values = dict(original._mapping) | {"seq": 5, "entry": forged_line(bytes(original.entry))}
    with engine.begin() as conn:
        conn.execute(sa.Table("audit_entries", sa.MetaData(), autoload_with=conn).insert(), values)
    assert_first(signed_trail.verify(), ("sequence", "stored_hash", "index"), 5)


def test_live_swapped_entries(signed_trail: AuditTrail, engine: sa.Engine) -> None:
    five, six = rows(engine)[5:7]
    for seq, row in ((5, six), (6, five)):
        update(
            engine,
            "UPDATE audit_entries SET entry = :e, entry_hash = :h, leaf_hash = :l WHERE seq = :s",
            e=row.entry,
            h=row.entry_hash,
            l=row.leaf_hash,
            s=seq,
        )
    assert_first(signed_trail.verify(), "sequence", 5)


def test_live_truncated_after_signed_head(signed_trail: AuditTrail, engine: sa.Engine) -> None:
    update(engine, "DELETE FROM audit_entries WHERE seq >= 7")
    assert_first(signed_trail.verify(), "truncated", 7)


def test_live_forged_signature(signed_trail: AuditTrail, engine: sa.Engine) -> None:
    update(engine, "UPDATE audit_tree_heads SET signature = :s WHERE tree_size = 5", s=bytes(64))
    assert_first(signed_trail.verify(), "signature", None)


def test_live_head_signed_by_unknown_key(
    signed_trail: AuditTrail, engine: sa.Engine, tmp_path: Path
) -> None:
    h = signed_trail.tree_heads()[-1]
    forged = sign_tree_head(
        stranger(tmp_path).active(),
        tree_size=h.tree_size,
        timestamp_ms=h.timestamp_ms,
        root_hash=h.root_hash,
        chain_head=h.chain_head,
    )
    update(
        engine,
        "UPDATE audit_tree_heads SET key_id = :k, signature = :s WHERE tree_size = :n",
        k=forged.key_id,
        s=forged.signature,
        n=h.tree_size,
    )
    assert_first(signed_trail.verify(), "unknown_key", None)


def test_live_forked_head(signed_trail: AuditTrail, engine: sa.Engine, keyring: KeyRing) -> None:
    """A genuinely signed head for another history (key misuse) is caught as a root mismatch."""
    fork = sign_tree_head(
        keyring.active(), tree_size=5, timestamp_ms=1, root_hash=bytes(32), chain_head=bytes(32)
    )
    with engine.begin() as conn:
        table = sa.Table("audit_tree_heads", sa.MetaData(), autoload_with=conn)
        conn.execute(
            table.insert(),
            {
                **fork.to_dict(),
                "root_hash": fork.root_hash,
                "chain_head": fork.chain_head,
                "signature": fork.signature,
            },
        )
    report = signed_trail.verify()
    assert not report.ok and {"root", "chain_head"} <= {p.kind for p in report.problems}
