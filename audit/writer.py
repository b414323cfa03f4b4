"""Group commit: one writer thread turns every waiting request into one locked transaction.

Callers put requests on a queue and block on a :class:`Pending` result.  The writer takes the
first request, opens a write transaction (which waits for the store-wide
lock), then drains whatever else queued up meanwhile into the same
transaction, commits, and only then settles the results: an append is
acknowledged only once it is durable, and a failed commit fails every request
in it (fail closed).  The chain head is read inside the lock on every commit,
so other processes appending to the same store are simply continued.

A tree head is signed inside the same transaction when ``sign_every_n``
entries are unsigned, when the newest head is older than ``sign_every_s``
seconds while entries are unsigned (the writer wakes up for that while idle),
and on request.

Each commit's appends share one :class:`~audit.receipts.Promise` (the Merkle root of
their leaves, signed when a receipt is first serialized or checked) and each gets
its audit path in that batch: no signature on the append path.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from audit.chain import GENESIS_HASH, entry_hash
from audit.entry import EntryDraft, Prepared, format_micros, seal
from audit.errors import AuditError, StoreUnavailable
from audit.keys import KeyRingError, SigningKey
from audit.merkle import SHA256, batch_paths
from audit.receipts import Promise, Receipt
from audit.signing import TreeHead, sign_tree_head
from audit.state import LogState, SeqTaken, WriteOps
from audit.store import AuditStore
from audit.tree import Frontier, peak_nodes

__all__ = ["GroupCommitWriter", "Pending"]

_STOP = object()
_T = TypeVar("_T")


class Pending(Generic[_T]):
    """A one-shot result a caller blocks on until the writer settles it.

    A bare C lock (held until settled) rather than ``concurrent.futures.Future``,
    whose Python-level Condition makes every wake-up cost more under the GIL.
    """

    __slots__ = ("_error", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._value: _T | None = None
        self._error: BaseException | None = None

    def set_result(self, value: _T) -> None:
        self._value = value
        self._lock.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._lock.release()

    def result(self) -> _T:
        with self._lock:  # blocks until settled; releasing lets result() be called again
            pass
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


@dataclass(slots=True)
class _Append:
    draft: EntryDraft
    prepared: Prepared
    future: Pending[Receipt]


@dataclass(slots=True)
class _Sign:
    future: Pending[TreeHead]


class GroupCommitWriter:
    """The writer thread of one :class:`~audit.trail.AuditTrail`."""

    def __init__(
        self,
        store: AuditStore,
        signing_key: Callable[[], SigningKey],
        *,
        sign_every_n: int,
        sign_every_s: float,
        max_batch: int = 1024,
        group_delay_s: float = 0.0005,
    ) -> None:
        self.store = store
        self.signing_key = signing_key
        self.sign_every_n = sign_every_n
        self.sign_every_s = sign_every_s
        self.max_batch = max_batch
        self.group_delay_s = group_delay_s
        self._last_batch = 1
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._frontier: Frontier | None = None
        self._state: LogState | None = None
        self._sign_due: float | None = None
        self._stopping = False
        # The gathering writer sleeps on this lock (held = not rung) until ``_want``
        # appends are queued or the group delay runs out: one wake-up a commit, not
        # one per queued request (see _gather).
        self._doorbell = threading.Lock()
        self._doorbell.acquire()
        self._want = 0
        self._db = store.writer()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def submit(self, prepared: Sequence[tuple[EntryDraft, Prepared]]) -> list[Pending[Receipt]]:
        """Queue prepared drafts (canonicalized by the caller, outside any lock)."""
        requests = [_Append(draft, ready, Pending()) for draft, ready in prepared]
        put = self._queue.put
        for request in requests:
            put(request)
        self._ring_if_wanted()
        return [r.future for r in requests]

    def submit_one(self, draft: EntryDraft, prepared: Prepared) -> Pending[Receipt]:
        """:meth:`submit` of one draft, without its lists (the common append)."""
        future: Pending[Receipt] = Pending()
        self._queue.put(_Append(draft, prepared, future))
        self._ring_if_wanted()
        return future

    def _ring_if_wanted(self) -> None:
        """Ring once the queue holds what the gathering writer waits for (see _gather)."""
        want = self._want
        if want and self._queue.qsize() >= want:
            self._ring()

    def sign(self) -> Pending[TreeHead]:
        request = _Sign(Pending())
        self._queue.put(request)
        self._ring()
        return request.future

    def close(self) -> None:
        """Commit everything queued so far, then stop (callers must not submit after)."""
        self._queue.put(_STOP)
        self._ring()
        self._thread.join()

    def _ring(self) -> None:
        """Wake the gathering writer (a second ring before it wakes is a no-op)."""
        try:
            self._doorbell.release()
        except RuntimeError:
            pass  # already rung

    def _drain(self, batch: list[Any]) -> None:
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _STOP:
                self._stopping = True
                return
            batch.append(item)

    def _gather(self, batch: list[Any]) -> None:
        """Wait up to ``group_delay_s`` until ``batch`` has as many appends as the last one.

        Appenders that were just acknowledged are still preparing their next
        request; waiting a fraction of a commit for them turns many small
        commits into one (PostgreSQL's ``commit_delay`` idea).  A lone appender
        never waits: its last batch had one request.

        The writer sleeps on the doorbell, which the submitter that makes the
        queue long enough rings (as do :meth:`sign` and :meth:`close`); waking up
        for every queued request instead cost a thread switch and a GIL hand-off
        per append.  Lost wake-ups cannot happen: ``_want`` is set before the
        queue is measured, and a submitter measures the queue after its put.  A
        late ring only ends some later wait early (a smaller group).
        """
        self._drain(batch)
        missing = self._last_batch - len(batch)
        if missing > 0 and not self._stopping:
            self._doorbell.acquire(blocking=False)  # forget a ring meant for an earlier wait
            self._want = missing
            if self._queue.qsize() < missing:
                self._doorbell.acquire(timeout=self.group_delay_s)
            self._want = 0
            self._drain(batch)

    def _run(self) -> None:
        """Commit groups until stopped.

        After a group of several appends the writer goes straight to waiting for
        the next one (its appenders come back at once); after a group of one, or
        when nobody came within the delay, it blocks until a request arrives or a
        signing deadline passes.
        """
        try:
            while True:
                batch: list[Any] = []
                if self._last_batch > 1:
                    self._gather(batch)
                if not batch:
                    if self._stopping:
                        break
                    due = self._sign_due
                    timeout = None if due is None else max(0.0, due - time.time())
                    try:
                        first = self._queue.get(timeout=timeout)
                    except queue.Empty:
                        first = None  # a signing deadline passed while idle
                    if first is _STOP:
                        break
                    if first is not None:
                        batch.append(first)
                        self._gather(batch)
                self._last_batch = max(1, sum(isinstance(item, _Append) for item in batch))
                self._commit(batch)
                if self._stopping:
                    break
        finally:
            self._db.close()

    def _commit(self, batch: list[Any]) -> None:
        try:
            try:
                outcome = self._try_commit(batch, self._state)
            except SeqTaken:
                # Another process appended since our last commit: re-read and redo.
                self._state = self._frontier = None
                outcome = self._try_commit(batch, None)
        except (AuditError, KeyRingError, OSError) as exc:
            self._state = self._frontier = None
            error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(str(exc))
            for request in batch:
                request.future.set_exception(error)
            return
        except BaseException as exc:  # never leave a caller waiting forever
            self._state = self._frontier = None
            for request in batch:
                request.future.set_exception(StoreUnavailable(f"audit writer failed: {exc!r}"))
            raise
        appended, head = outcome
        results = iter(appended)
        for request in batch:
            if isinstance(request, _Append):
                request.future.set_result(next(results))
            else:
                request.future.set_result(head)

    def _try_commit(
        self, batch: list[Any], known: LogState | None
    ) -> tuple[list[Receipt], TreeHead | None]:
        """One locked transaction; ``known`` is the state our own last commit left.

        Trusting ``known`` saves a query per commit; if another process appended
        meanwhile, our first seq is taken and the insert raises :class:`SeqTaken`.
        """
        done: list[tuple[int, bytes, bytes, bytes]] = []  # seq, chain, leaf, entry
        key = self.signing_key()  # before the commit: no key, nothing committed
        with self._db.transaction() as txn:
            state = known or txn.state()
            self._drain(batch)  # whatever queued while we waited for the lock joins
            frontier = self._load_frontier(txn, state.size)
            chain = state.chain_head or GENESIS_HASH
            rows: list[tuple[Any, ...]] = []  # in ENTRY_COLUMNS order
            completed: list[tuple[int, int, bytes]] = []
            append_leaf = frontier.append
            # One commit, one instant: every entry of the batch gets the same time.
            micros = time.time_ns() // 1000
            moment = format_micros(micros)
            for request in batch:
                if not isinstance(request, _Append):
                    continue
                seq = frontier.size
                canonical = seal(request.prepared, seq=seq, time=moment, prev=chain)
                chain = entry_hash(chain, canonical)
                leaf = SHA256.hash_leaf(canonical)
                completed.clear()
                append_leaf(leaf, completed)
                d = request.draft
                subtrees = b"".join(node[2] for node in completed)
                rows.append(
                    (seq, moment, d.actor, d.role, d.action, d.target, d.dataset, d.decision,
                     canonical, chain, leaf, subtrees)
                )  # fmt: skip
                done.append((seq, chain, leaf, canonical))
            txn.insert_entries(rows)
            forced = any(isinstance(r, _Sign) for r in batch)
            head = self._maybe_sign(txn, state, frontier, chain, key, forced=forced)
        # Committed: remember where the log stands for the next commit.
        self._frontier = frontier
        self._state = LogState(
            size=frontier.size,
            chain_head=chain if frontier.size else None,
            signed_size=head.tree_size if head else state.signed_size,
            signed_at_ms=head.timestamp_ms if head else state.signed_at_ms,
        )
        return _promised(done, key, moment, micros // 1000), head

    def _load_frontier(self, txn: WriteOps, size: int) -> Frontier:
        cached = self._frontier
        if cached is not None and cached.size == size:
            return cached.copy()
        wanted = peak_nodes(size)
        found = txn.node_hashes(wanted)
        try:
            return Frontier(size, [found[node] for node in wanted])
        except KeyError:
            raise StoreUnavailable(f"stored Merkle nodes for size {size} are missing") from None

    def _maybe_sign(
        self,
        txn: WriteOps,
        state: LogState,
        frontier: Frontier,
        chain: bytes,
        key: SigningKey,
        *,
        forced: bool,
    ) -> TreeHead | None:
        now = time.time()
        signed_at = state.signed_at_ms / 1000
        unsigned = frontier.size - state.signed_size
        stale = now - signed_at >= self.sign_every_s
        head = None
        if forced or (unsigned > 0 and (unsigned >= self.sign_every_n or stale)):
            head = sign_tree_head(
                key,
                tree_size=frontier.size,
                timestamp_ms=int(now * 1000),
                root_hash=frontier.root(),
                chain_head=chain,
            )
            txn.insert_tree_head(head)
            signed_at, unsigned = now, 0
        self._sign_due = signed_at + self.sign_every_s if unsigned > 0 else None
        return head


def _promised(
    done: list[tuple[int, bytes, bytes, bytes]], key: SigningKey, moment: str, timestamp_ms: int
) -> list[Receipt]:
    """The committed entries' receipts: the group's promise and each one's path in it."""
    if not done:
        return []
    root, paths = batch_paths([leaf for _, _, leaf, _ in done])
    promise = Promise(
        first=done[0][0],
        count=len(done),
        timestamp_ms=timestamp_ms,
        batch_root=root,
        key_id=key.key_id,
        key=key,
    )
    committed = Receipt.committed
    return [
        committed(seq, chain, leaf, moment, canonical, promise, tuple(path))
        for (seq, chain, leaf, canonical), path in zip(done, paths, strict=True)
    ]
