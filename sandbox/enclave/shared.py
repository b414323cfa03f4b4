"""The enclave as server processes share it: query progress, cancellation, one writer among readers.

:class:`SharedEnclave` is the :class:`~sandbox.enclave.enclave.Enclave` the HTTP server
uses.  It adds
three things the command line does not need:

1. **Progress.**  DuckDB reports a running query's progress only on a connection whose progress
   bar was enabled before the configuration was locked, and a locked connection's cursors cannot
   enable it.  So a pool of cursors is prepared, progress on, before the lock; a job's query takes
   one of them.
2. **Cancellation.**  A job runs inside a :class:`JobSlot` (:func:`job_slot`); the cursor its query
   uses is published there, so the runner reads its progress and can interrupt it.  An
   interrupted job's query ends with :class:`~sandbox.core.errors.Conflict` whose rule says why
   (``job.cancelled``, or ``job.interrupted`` at shutdown), not with a timeout.
3. **Several processes.**  DuckDB lets many processes open the file read-only, or one process
   read-write, never both.  Readers and the writer coordinate through two lock files beside the
   enclave (``flock``): a process holds ``.enclave.readers`` shared while its read-only
   connection is open.  A writer first takes ``.enclave.intent`` exclusively (from then on no
   process opens a new reader), then ``.enclave.readers`` exclusively.  Each reading process
   watches the intent lock and, when a writer waits, lets its running queries finish, closes its
   connection and releases its shared lock; its next query waits for the writer and reopens.  A
   registration through any server process therefore works while the others serve queries.
"""

from __future__ import annotations

import contextvars
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from sandbox.core.errors import Conflict, EnclaveBusy, EnclaveError, QueryTimeout
from sandbox.core.settings import Settings
from sandbox.enclave.enclave import LOCKDOWN, Enclave
from sandbox.enclave.encrypted import cursor_of, open_connection

__all__ = ["JobSlot", "SharedEnclave", "current_slot", "exclusive_with_servers", "job_slot"]

_PROGRESS_SETTINGS = (
    "SET enable_progress_bar = true",
    "SET enable_progress_bar_print = false",
    "SET progress_bar_time = 0",
)


class JobSlot:
    """Where a running job's cursor is published: its progress can be read, it can be stopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self.cancelled = False
        self.reason = ("job.cancelled", "the job was cancelled")

    def stopped(self) -> Conflict:
        """The error a query interrupted through this slot ends with (rule: why)."""
        rule, message = self.reason
        return Conflict(message, rule=rule)

    def attach(self, cursor: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            if self.cancelled:
                raise self.stopped()
            self._cursor = cursor

    def detach(self) -> None:
        with self._lock:
            self._cursor = None

    def progress(self) -> float | None:
        """Percent done of the query running now (DuckDB's estimate), or None."""
        with self._lock:
            if self._cursor is None:
                return None
            try:
                value = float(self._cursor.query_progress())
            except duckdb.Error:
                return None
        return value if value >= 0 else None

    def cancel(self, reason: tuple[str, str] | None = None) -> None:
        """Interrupt the query (now, or as soon as it starts); ``reason`` is (rule, message)."""
        with self._lock:
            if reason is not None and not self.cancelled:
                self.reason = reason
            self.cancelled = True
            if self._cursor is not None:
                self._cursor.interrupt()


_SLOT: contextvars.ContextVar[JobSlot | None] = contextvars.ContextVar("job_slot", default=None)


def current_slot() -> JobSlot | None:
    return _SLOT.get()


@contextmanager
def job_slot(slot: JobSlot | None) -> Iterator[JobSlot | None]:
    """Run the enclosed query as the job of ``slot`` (this thread / context only).

    ``None``: the enclosed reads are no job's query (the planner's bookkeeping, such as
    whether a version is ranked): a cancelled job does not stop them, and its progress
    does not show them."""
    token = _SLOT.set(slot)
    try:
        yield slot
    finally:
        _SLOT.reset(token)


def _lock(path: Path, mode: int, timeout_s: float, what: str) -> int:
    """Open ``path`` and take an flock on it, polling until ``timeout_s``; returns the fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise EnclaveBusy(
                    f"the enclave stayed busy for {timeout_s:g} s ({what}); retry later",
                    rule="enclave.locked",
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _unlock(fd: int | None) -> None:
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def exclusive_with_servers(directory: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """The writer's side of the protocol below, for a process that serves no queries.

    A registration on the host console (a plain :class:`Enclave`) takes ``.enclave.intent``
    and then ``.enclave.readers`` in ``directory`` exclusively around its writer, so the
    server processes on the same home let go of their readers for the swap-in instead of
    the load failing with ``enclave.locked``.
    """
    intent = _lock(directory / ".enclave.intent", fcntl.LOCK_EX, timeout_s, "a load is running")
    try:
        readers = _lock(
            directory / ".enclave.readers", fcntl.LOCK_EX, timeout_s, "queries in server processes"
        )
        try:
            yield
        finally:
            _unlock(readers)
    finally:
        _unlock(intent)


class SharedEnclave(Enclave):
    """An :class:`Enclave` with progress cursors, job slots and cross-process write coordination."""

    def __init__(
        self,
        path: Path,
        *,
        progress_cursors: int = 8,
        lock_timeout_s: float = 120.0,
        poll_s: float = 0.2,
        **options: object,
    ) -> None:
        super().__init__(path, **options)  # type: ignore[arg-type]
        self.progress_cursors = progress_cursors
        self.lock_timeout_s = lock_timeout_s
        self.poll_s = poll_s
        self._intent_path = self.path.parent / ".enclave.intent"
        self._readers_path = self.path.parent / ".enclave.readers"
        self._free: list[duckdb.DuckDBPyConnection] = []
        self._pooled: set[int] = set()
        self._readers_fd: int | None = None
        self._yielding = False
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def for_server(
        cls, settings: Settings, *, progress_cursors: int, encryption_key: bytes | None = None
    ) -> SharedEnclave:
        return cls(
            settings.enclave_path,
            progress_cursors=progress_cursors,
            encryption_key=encryption_key,
            memory_limit=settings.memory_limit,
            threads=settings.threads,
            timeout_s=settings.query_timeout_s,
            max_result_rows=settings.max_result_rows,
        )

    # -- the reader ------------------------------------------------------------------------

    def _connect(self, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        if not read_only:
            return super()._connect(read_only=False)
        if not self.path.exists():
            raise EnclaveError(
                f"enclave file {self.path} does not exist: run `sandbox init`",
                rule="enclave.missing",
            )
        config = dict(LOCKDOWN, memory_limit=self.memory_limit, threads=self.threads)
        try:
            con = open_connection(self.path, read_only=True, config=config, key=self.encryption_key)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise EnclaveBusy(
                    "the enclave file is held read-write by another process (a CLI load?)",
                    rule="enclave.locked",
                ) from None
            raise EnclaveError(
                f"the enclave file {self.path.name} cannot be opened (corrupt or unreadable)",
                rule="enclave.open",
            ) from None
        except duckdb.Error:
            raise EnclaveError(
                f"the enclave file {self.path.name} cannot be opened (corrupt or unreadable)",
                rule="enclave.open",
            ) from None
        # Progress must be switched on per connection, before the configuration is locked.
        for _ in range(self.progress_cursors):
            cur = cursor_of(con, self.encryption_key)
            for statement in _PROGRESS_SETTINGS:
                cur.execute(statement)
            self._free.append(cur)
            self._pooled.add(id(cur))
        con.execute("SET lock_configuration = true")
        return con

    def _open_reader(self) -> None:
        """Under ``_gate``: wait out any writer, take the shared readers lock, connect."""
        intent = _lock(self._intent_path, fcntl.LOCK_SH, self.lock_timeout_s, "a load is running")
        try:
            self._readers_fd = _lock(
                self._readers_path, fcntl.LOCK_SH, self.lock_timeout_s, "a load is starting"
            )
        finally:
            _unlock(intent)
        try:
            self._reader = self._connect(read_only=True)
            self._digests = {}
        except BaseException:
            self._close_reader()
            raise
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="enclave-watch", daemon=True)
            self._watcher.start()

    def _close_reader(self) -> None:
        """Under ``_gate`` with no active query: close cursors and connection, release the lock."""
        for cur in self._free:
            cur.close()
        self._free.clear()
        self._pooled.clear()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        _unlock(self._readers_fd)
        self._readers_fd = None

    def _writer_waiting(self) -> bool:
        fd = os.open(self._intent_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock taken on it
        return False

    def _watch(self) -> None:
        """Give the enclave up to a waiting writer (in any process) as soon as it is idle."""
        while not self._stop.wait(self.poll_s):
            if self._reader is None or not self._writer_waiting():
                continue
            with self._gate:
                self._yielding = True
                try:
                    self._gate.wait_for(lambda: self._active == 0)
                    if not self._writing:
                        self._close_reader()
                finally:
                    self._yielding = False
                    self._gate.notify_all()

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A locked read-only cursor; a job's query gets a progress cursor and its slot."""
        slot = current_slot()
        with self._gate:
            self._gate.wait_for(lambda: not self._writing and not self._yielding)
            if self._reader is None:
                self._open_reader()
            assert self._reader is not None
            if slot is not None and self._free:
                cur = self._free.pop()
            else:
                cur = cursor_of(self._reader, self.encryption_key)
            self._active += 1
        try:
            if slot is not None:
                slot.attach(cur)
            try:
                yield cur
            except QueryTimeout:
                if slot is not None and slot.cancelled:
                    raise slot.stopped() from None
                raise
            finally:
                if slot is not None:
                    slot.detach()
        finally:
            with self._gate:
                if id(cur) in self._pooled and self._reader is not None:
                    self._free.append(cur)
                else:
                    cur.close()
                self._active -= 1
                self._gate.notify_all()

    # -- the writer ------------------------------------------------------------------------

    @contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The exclusive read-write connection, once every process has released its reader."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        intent = _lock(
            self._intent_path, fcntl.LOCK_EX, self.lock_timeout_s, "another load is running"
        )
        try:
            with self._gate:
                self._gate.wait_for(lambda: self._active == 0 and not self._writing)
                self._writing = True
                self._close_reader()
            try:
                readers = _lock(
                    self._readers_path,
                    fcntl.LOCK_EX,
                    self.lock_timeout_s,
                    "queries in other server processes",
                )
                try:
                    con = self._connect(read_only=False)
                    try:
                        yield con
                    finally:
                        con.close()
                finally:
                    _unlock(readers)
            finally:
                with self._gate:
                    self._writing = False
                    self._gate.notify_all()
        finally:
            _unlock(intent)

    def close(self) -> None:
        self._stop.set()
        with self._gate:
            self._gate.wait_for(lambda: self._active == 0)
            self._close_reader()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        self._stop = threading.Event()
