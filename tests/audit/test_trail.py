"""The live trail on SQLite and PostgreSQL: receipts, proofs, signing, queries, concurrency."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from audit import (
    AuditTrail,
    EntryDraft,
    EntryFilter,
    InvalidEntry,
    InvalidQuery,
    KeyRing,
    NotFound,
    ProofError,
    StoreUnavailable,
    verify_receipt,
    verify_receipt_inclusion,
)
from audit.merkle import SHA256, verify_consistency, verify_inclusion
from audit.tree import MemoryTree
from tests.audit.conftest import fill, record


def test_appends_return_verifiable_receipts(trail: AuditTrail, keyring: KeyRing) -> None:
    receipts = fill(trail, 6)
    assert [r.seq for r in receipts] == list(range(6))
    keys = keyring.public_keys()
    for receipt in receipts:
        verify_receipt(receipt, keys)
        entry = trail.entry(receipt.seq)
        assert entry.actor == f"operator-{receipt.seq % 3}" and entry.time == receipt.time
    head = trail.sign_tree_head()
    assert head.tree_size == 6
    for receipt in receipts:
        verify_receipt_inclusion(receipt, head, trail.inclusion_proof(receipt.seq), keys)
    assert trail.verify().ok


def test_proofs_and_roots_match_an_in_memory_tree(trail: AuditTrail) -> None:
    receipts = fill(trail, 13)
    tree = MemoryTree.from_leaves([SHA256.hash_leaf(r.entry) for r in receipts])
    for size in range(14):
        assert trail.root(size) == tree.root(size)
    for size in range(1, 14):
        for seq in range(size):
            proof = trail.inclusion_proof(seq, size)
            assert list(proof.path) == tree.inclusion_proof(seq, size)
            verify_inclusion(seq, size, receipts[seq].leaf_hash, proof.path, tree.root(size))
        for older in range(1, size + 1):
            proof = trail.consistency_proof(older, size)
            verify_consistency(older, size, proof.path, tree.root(older), tree.root(size))
    with pytest.raises(NotFound):
        trail.root(14)
    with pytest.raises(NotFound):
        trail.inclusion_proof(0, 99)
    with pytest.raises(ProofError):
        trail.inclusion_proof(13, 13)


def test_tree_heads_every_n_entries_and_on_demand(trail: AuditTrail) -> None:
    assert trail.latest_tree_head() is None
    fill(trail, 10)
    # The first entry finds no head at all (older than any interval); then every 4 entries.
    assert [h.tree_size for h in trail.tree_heads()] == [1, 5, 9]
    with pytest.raises(NotFound, match="not covered"):
        trail.inclusion_proof(9)
    head = trail.sign_tree_head()
    assert head.tree_size == 10 and trail.latest_tree_head() == head
    assert head.root_hash == trail.root(10)
    assert trail.inclusion_proof(9).tree_size == 10


def test_tree_head_every_t_seconds_while_idle(db_url: str, keyring: KeyRing) -> None:
    with AuditTrail.open(db_url, keyring, sign_every_n=1000, sign_every_s=0.3) as trail:
        fill(trail, 3)
        assert trail.latest_tree_head().tree_size == 1  # type: ignore[union-attr]
        deadline = time.time() + 5
        while time.time() < deadline and trail.latest_tree_head().tree_size < 3:  # type: ignore[union-attr]
            time.sleep(0.05)
        assert trail.latest_tree_head().tree_size == 3  # type: ignore[union-attr]


def test_rotated_keys_sign_new_heads_and_old_heads_still_verify(
    trail: AuditTrail, keyring: KeyRing
) -> None:
    first = record(trail, 0)
    old = trail.sign_tree_head()
    keyring.rotate()
    trail.reload_key()
    second = record(trail, 1)
    new = trail.sign_tree_head()
    assert first.promise is not None and second.promise is not None
    assert old.key_id != new.key_id == second.promise.key_id != first.promise.key_id
    assert trail.verify().ok


def test_auditor_queries(trail: AuditTrail) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    fill(trail, 12)
    record(
        trail,
        99,
        actor="admin-1",
        role="admin",
        action="operator.freeze",
        target="operator:bank-1",
        dataset=None,
        decision="allow",
        rule="role.admin",
        details={},
    )
    by_actor = trail.entries(EntryFilter(actor="operator-1"))
    assert [e.seq for e in by_actor] == [1, 4, 7, 10]
    denied = trail.entries(EntryFilter(decision="deny", dataset="health.claims_1"))
    assert [e.seq for e in denied] == [3, 7, 11] and all(
        e.rule == "guard.aggregate_only" for e in denied
    )
    assert [e.seq for e in trail.entries(EntryFilter(action="operator.freeze"))] == [12]
    page = trail.entries(offset=3, limit=4)
    assert [e.seq for e in page] == [3, 4, 5, 6]
    assert [e.seq for e in trail.entries(limit=2, newest_first=True)] == [12, 11]
    assert len(trail.entries(EntryFilter(since=start), limit=100)) == 13
    assert trail.entries(EntryFilter(until=start.isoformat())) == []
    counts = trail.counts(("actor", "dataset"))
    assert {"actor": "operator-0", "dataset": "health.claims_0", "count": 2} in counts
    assert sum(row["count"] for row in counts) == 13
    assert trail.counts("decision") == [
        {"decision": "allow", "count": 10},
        {"decision": "deny", "count": 3},
    ]
    with pytest.raises(InvalidQuery):
        trail.counts(("entry",))
    with pytest.raises(InvalidQuery):
        EntryFilter(since="last tuesday").conditions()
    with pytest.raises(InvalidQuery):
        EntryFilter(since="2026-01-01T00:00:00").conditions()  # no offset: ambiguous


def test_threads_build_one_gapless_chain(trail: AuditTrail, keyring: KeyRing) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(25):
            receipt = record(trail, t * 100 + i)
            with lock:
                results.append(receipt.seq)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(200))
    report = trail.verify()
    assert report.ok and report.entries == 200, report.summary()


def test_two_trails_on_one_store_interleave_without_gaps(db_url: str, keyring: KeyRing) -> None:
    # Two writers that each remember their last commit: the other's appends must be noticed.
    with AuditTrail.open(db_url, keyring) as one, AuditTrail.open(db_url, keyring) as two:
        seqs = [record(one if i % 3 else two, i).seq for i in range(30)]
        assert seqs == list(range(30))
        assert one.verify().ok


def test_reopen_continues_the_chain(db_url: str, keyring: KeyRing) -> None:
    with AuditTrail.open(db_url, keyring) as trail:
        fill(trail, 5)
    with AuditTrail.open(db_url, keyring) as trail:
        assert record(trail, 5).seq == 5
        assert trail.verify().ok


def test_invalid_entries_are_refused_before_queuing(trail: AuditTrail) -> None:
    with pytest.raises(InvalidEntry):
        record(trail, 0, decision="perhaps")
    assert trail.size() == 0


def test_store_failure_fails_the_append_closed(db_url: str, keyring: KeyRing) -> None:
    trail = AuditTrail.open(db_url, keyring)
    try:
        record(trail, 0)
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE audit_entries")
        engine.dispose()
        with pytest.raises(StoreUnavailable):
            record(trail, 1)
        with pytest.raises(StoreUnavailable):
            trail.size()
    finally:
        trail.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        record(trail, 2)


def test_unsupported_url_is_refused(keyring: KeyRing) -> None:
    with pytest.raises(StoreUnavailable, match="SQLite or PostgreSQL"):
        AuditTrail.open("mysql://nobody@localhost/x", keyring)


def test_sqlite_runs_wal_with_full_sync(sqlite_url: str, keyring: KeyRing) -> None:
    with AuditTrail.open(sqlite_url, keyring) as trail, trail.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_append_observers_see_each_durable_append_and_cannot_fail_it(trail: AuditTrail) -> None:
    seen: list[float] = []

    def broken(_elapsed: float) -> None:
        raise RuntimeError("a broken metric")

    trail.append_observers.extend([seen.append, broken])
    first = record(trail, 0)  # one append: the single-entry path
    draft = EntryDraft(actor="a", role="r", action="x", target="t", decision="allow", rule="r")
    batch = trail.append_many([draft, draft])
    assert [first.seq] + [r.seq for r in batch] == [0, 1, 2]
    assert len(seen) == 2 and all(elapsed > 0 for elapsed in seen)
    assert trail.size() == 3
