"""The audit trail: appends with group commit, signed tree heads, proofs, queries.

Appends go through a group-commit writer thread (:mod:`audit.writer`) and are
acknowledged only once durable; each receipt carries its commit's promise of
inclusion (:mod:`audit.receipts`), signed only when a receipt is first serialized
or checked.  Reads (proofs, queries) go
straight to the store.  Several processes may each open a trail on the same
store: the database's lock keeps one gapless chain.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from audit.checker import Report
from audit.entry import Entry, EntryDraft
from audit.errors import AuditError, NotFound, StoreUnavailable
from audit.keys import KeyRing, SigningKey
from audit.merkle import SHA256, consistency_ranges, fold_nodes, inclusion_ranges, range_nodes
from audit.proofs import ConsistencyProof, InclusionProof
from audit.queries import EntryFilter
from audit.receipts import Receipt
from audit.signing import TreeHead
from audit.store import AuditStore, Reads
from audit.writer import GroupCommitWriter

__all__ = ["AuditTrail"]

_T = TypeVar("_T")


class AuditTrail:
    """An open audit trail over one store; use :meth:`open`, and close it (or ``with``)."""

    def __init__(
        self,
        store: AuditStore,
        keyring: KeyRing,
        *,
        sign_every_n: int = 1000,
        sign_every_s: float = 60.0,
        max_batch: int = 1024,
    ) -> None:
        if sign_every_n <= 0 or sign_every_s <= 0:
            raise ValueError("sign_every_n and sign_every_s must be positive")
        self.store = store
        self.keyring = keyring
        self.sign_every_n = sign_every_n
        self.sign_every_s = sign_every_s
        self.max_batch = max_batch
        self._group_writer: GroupCommitWriter | None = None
        self._start_lock = threading.Lock()
        self._key_lock = threading.Lock()
        self._closed = False
        self._key: SigningKey | None = None
        self._key_stamp: int | None = None
        self._active_file = os.fspath(keyring.directory / "ACTIVE")  # stat on every commit
        #: Called with the seconds each :meth:`append_many` (and so :meth:`append`) took,
        #: from submission to durable, after it succeeded (e.g. a latency histogram).
        #: A hook that raises is ignored: the entries are durable by then.
        self.append_observers: list[Callable[[float], None]] = []
        self._checked: tuple[int, bytes] | None = None  # what verify() last found sound

    @classmethod
    def open(
        cls,
        url: str,
        keyring: KeyRing,
        *,
        sign_every_n: int = 1000,
        sign_every_s: float = 60.0,
        lock_timeout_s: float = 30.0,
    ) -> AuditTrail:
        """Open (creating tables and the first signing key if needed) the trail at ``url``."""
        keyring.ensure()
        store = AuditStore(url, lock_timeout_s=lock_timeout_s)
        store.create_schema()
        return cls(store, keyring, sign_every_n=sign_every_n, sign_every_s=sign_every_s)

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish every queued append, stop the writer, release connections."""
        with self._start_lock:
            self._closed = True
            writer = self._group_writer
        if writer is not None:
            writer.close()
        self.store.close()

    # -- appending -----------------------------------------------------------------------

    def append(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        target: str,
        decision: str,
        rule: str,
        request_id: str | None = None,
        client: str | None = None,
        dataset: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Receipt:
        """Record one event durably and return its signed receipt.

        Raises :class:`InvalidEntry` for unacceptable fields and
        :class:`StoreUnavailable` if it could not be recorded.
        """
        started = time.perf_counter()
        draft = EntryDraft(
            actor=actor,
            role=role,
            action=action,
            target=target,
            decision=decision,
            rule=rule,
            request_id=request_id,
            client=client,
            dataset=dataset,
            details=details or {},
        )
        prepared = draft.prepare()
        receipt = self._with_writer(lambda w: w.submit_one(draft, prepared)).result()
        if self.append_observers:
            self._observe(time.perf_counter() - started)
        return receipt

    def append_many(self, drafts: Sequence[EntryDraft]) -> list[Receipt]:
        """Record several events (consecutive unless other appends interleave)."""
        started = time.perf_counter()
        prepared = [(d, d.prepare()) for d in drafts]
        futures = self._with_writer(lambda w: w.submit(prepared))
        receipts = [future.result() for future in futures]
        if self.append_observers:
            self._observe(time.perf_counter() - started)
        return receipts

    def _observe(self, elapsed: float) -> None:
        for observe in self.append_observers:
            try:
                observe(elapsed)
            except Exception:  # a metric must never fail a durable append
                pass

    def import_entries(self, drafts: Sequence[EntryDraft]) -> int:
        """Bulk-record events without receipts (migrations, benchmarks); returns the new size.

        Each entry is still durable and chained exactly as with :meth:`append`.
        """
        prepared = [(d, d.prepare()) for d in drafts]
        last = 0
        for future in self._with_writer(lambda w: w.submit(prepared)):
            last = future.result().seq + 1
        return last

    def sign_tree_head(self) -> TreeHead:
        """Sign a tree head over every entry committed so far, now."""
        return self._with_writer(lambda w: w.sign()).result()

    def _with_writer(self, call: Callable[[GroupCommitWriter], _T]) -> _T:
        """Queue work on the writer, started on first use; never after :meth:`close`.

        Queuing under the same lock ``close`` takes guarantees that everything
        queued is ahead of the writer's stop marker, so no caller waits forever.
        """
        with self._start_lock:
            if self._closed:
                raise StoreUnavailable("the audit trail is closed")
            if self._group_writer is None:
                self._group_writer = GroupCommitWriter(
                    self.store,
                    self._signing_key,
                    sign_every_n=self.sign_every_n,
                    sign_every_s=self.sign_every_s,
                    max_batch=self.max_batch,
                )
            return call(self._group_writer)

    def _signing_key(self) -> SigningKey:
        """The active key, re-read when the ACTIVE file changed (rotation).

        Called for every commit (its promise and any tree head), so a rotation
        takes effect with the next commit.
        """
        try:
            stamp: int | None = os.stat(self._active_file).st_mtime_ns
        except OSError:
            stamp = None
        with self._key_lock:
            if self._key is None or stamp != self._key_stamp:
                self._key = self.keyring.active()
                self._key_stamp = stamp
            return self._key

    def reload_key(self) -> SigningKey:
        """Pick up a rotated key now (call after ``KeyRing.rotate``)."""
        with self._key_lock:
            self._key = None
        return self._signing_key()

    # -- reading -------------------------------------------------------------------------

    def size(self) -> int:
        """Number of committed entries (the next entry's seq)."""
        return self.store.size()

    def latest_tree_head(self) -> TreeHead | None:
        return self.store.latest_tree_head()

    def tree_heads(self, max_size: int | None = None) -> list[TreeHead]:
        return self.store.tree_heads(max_size)

    @staticmethod
    def _range_hashes(reads: Reads, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        wanted = [range_nodes(a, b) for a, b in ranges]
        found = reads.node_hashes(node for group in wanted for node in group)
        try:
            return [fold_nodes([found[node] for node in group]) for group in wanted]
        except KeyError:
            raise StoreUnavailable("stored Merkle nodes are missing; run verify") from None

    @staticmethod
    def _check_size(reads: Reads, tree_size: int) -> None:
        size = reads.size_and_chain_head()[0]
        if tree_size > size:
            raise NotFound(f"tree size {tree_size} is beyond the log's {size} entries")

    def root(self, tree_size: int) -> bytes:
        """The Merkle root of the first ``tree_size`` entries."""
        if tree_size == 0:
            return SHA256.empty_root()
        with self.store.reading() as reads:
            self._check_size(reads, tree_size)
            return self._range_hashes(reads, [(0, tree_size)])[0]

    def inclusion_proof(self, seq: int, tree_size: int | None = None) -> InclusionProof:
        """Audit path of entry ``seq`` up to ``tree_size`` (default: the newest signed head).

        A proof up to a signed head is checked against that head's root before it
        is handed out, so a damaged node cache fails here rather than at the client.
        """
        with self.store.reading() as reads:
            head = reads.newest_tree_head() if tree_size is None else None
            if tree_size is None:
                if head is None or seq >= head.tree_size:
                    raise NotFound(f"entry {seq} is not covered by a signed tree head yet")
                tree_size = head.tree_size
            else:
                self._check_size(reads, tree_size)
            ranges = [(seq, seq + 1), *inclusion_ranges(seq, tree_size)]
            leaf, *path = self._range_hashes(reads, ranges)
        proof = InclusionProof(seq, tree_size, leaf, tuple(path))
        if head is not None:
            try:
                proof.verify(head.root_hash)
            except AuditError:
                raise StoreUnavailable("stored nodes disagree with the signed head") from None
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        """Proof that the log at ``size1`` is a prefix of the log at ``size2`` (default: now)."""
        with self.store.reading() as reads:
            if size2 is None:
                size2 = reads.size_and_chain_head()[0]
            self._check_size(reads, size2)
            path = self._range_hashes(reads, consistency_ranges(size1, size2))
        return ConsistencyProof(size1, size2, tuple(path))

    def entry(self, seq: int) -> Entry:
        row = self.store.entry_row(seq)
        if row is None:
            raise NotFound(f"no audit entry {seq}")
        return Entry.from_bytes(bytes(row.entry))

    def entries(
        self,
        filters: EntryFilter | None = None,
        *,
        offset: int = 0,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[Entry]:
        """Entries matching ``filters``, in seq order, one page."""
        filters = filters or EntryFilter()
        rows = self.store.select_entries(
            filters.conditions(), offset=offset, limit=min(limit, 10_000), newest_first=newest_first
        )
        return [Entry.from_bytes(row) for row in rows]

    def counts(
        self, by: Sequence[str] = ("actor", "dataset"), filters: EntryFilter | None = None
    ) -> list[dict[str, Any]]:
        """Number of entries per combination of the ``by`` fields, largest first."""
        filters = filters or EntryFilter()
        return self.store.count_entries(filters.group_by(by), filters.conditions())

    def export(self, out_dir: Path) -> Any:
        """Write an export (see :mod:`audit.export`) after signing a head over everything."""
        from audit.export import write_export

        return write_export(self, Path(out_dir))

    def verify(self, *, strict: bool = True) -> Report:
        """Check the live store: chain, stored hashes, indexes, nodes and every tree head.

        Entries a previous run of this trail found sound are not parsed again if the
        chain still reaches the head it had after them (see
        :func:`audit.livecheck.verify_store_again`); everything else is checked anew.
        """
        from audit.livecheck import verify_store_again

        report, checked = verify_store_again(
            self.store, self.keyring.public_keys(), strict=strict, checked=self._checked
        )
        if report.ok and strict:
            self._checked = checked  # the next run parses only what came after
        return report
