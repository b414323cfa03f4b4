"""Group commit for the control plane: one transaction, and one fsync, per group of writes.

A request's control-plane writes (its job row, its charge, its usage and cached release,
its job's end) are functions of a connection handed to :meth:`ControlWriter.run`.  One
caller at a time commits a group: it opens one write transaction, runs every function
waiting at that moment (up to ``max_group``), each inside its own savepoint (on SQLite a
call alone in its group needs none: its transaction stands for it), commits once and
only then settles them: a call returns after its group's commit (with SQLite's
``synchronous=FULL``, after its fsync), so nothing acknowledged is lost.

- A function that raises is rolled back to its savepoint alone; its caller gets the
  exception as raised, and the rest of the group commits.
- A failed commit (or an error that ends the transaction itself, such as a full disk on
  SQLite) fails every call in the group with that error: fail closed, nothing half-written.

Why: on SQLite each request's transaction used to take the database's write lock on its
first write, and a request that found it taken waited in SQLite's busy handler, which
sleeps (1, 2, 5, 10 ms …) rather than waking when the lock is free.  Under 8 concurrent
small queries the server held the GIL only about half the time, and the threads' largest
wait was that first write (``bench/http_load.py`` under py-spy, 2026-12-03).  Here the
lock is taken once per group (``BEGIN IMMEDIATE``), one fsync pays for the group, and a
waiting caller is woken by a Python lock the moment the commit before it ends.  There is
no writer thread: handing each write to one cost a GIL hand-off each way, and measured
slower (36-39 against 44-50 small queries a second, the same run, interleaved).
Across processes, each group's transaction holds a lock file's ``flock``
(:mod:`sandbox.core.writer_lock`): the next process's writer wakes the moment it is free rather
than sleeping in SQLite's busy handler.  Writers that do not take it meet SQLite's lock
as before (the busy timeout applies).  On PostgreSQL, where hosts share one database,
each group first takes a transaction-scoped advisory lock (``GROUP_LOCK_KEY``): groups
commit one at a time across hosts, so two hosts' groups never lock the same rows in
opposite orders (a deadlock would fail every call of its victim's group).

The transaction is written out (``BEGIN`` … ``SAVEPOINT`` … ``COMMIT``) on a connection in
the driver's autocommit mode, so the driver opens and ends nothing by itself (pysqlite's
implicit ``BEGIN`` would end a savepoint's transaction early).  PostgreSQL runs the same
statements, straight on the driver's connection (through SQLAlchemy's execution machinery
they cost more than SQLite's own work for them).  A function must not commit, roll back or
call :meth:`run` itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sandbox.core.db import BUSY_TIMEOUT_S
from sandbox.core.writer_lock import LockTimeout, WriterLock

__all__ = ["ControlWriter"]

T = TypeVar("T")

_SAVEPOINT = "sbx_call"

GROUP_LOCK_KEY = 0x5BC0_7717_0001
"""PostgreSQL advisory lock every group takes (per database; any fixed 64-bit key)."""


class _Call(Generic[T]):
    """One queued function and, once its group has committed, its outcome."""

    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Callable[[Connection], T]) -> None:
        self.fn = fn
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None


class ControlWriter:
    """Runs control-plane write functions in group-committed transactions (thread-safe)."""

    def __init__(self, engine: Engine, *, max_group: int = 64) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be at least 1, not {max_group}")
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        if engine.dialect.name == "sqlite":
            self._begin: tuple[str, ...] = ("BEGIN IMMEDIATE",)
        else:
            # Hosts sharing one PostgreSQL: a group takes the same transaction-scoped
            # advisory lock first, so groups commit one at a time across hosts as they do
            # across SQLite's processes.  Without it two hosts' groups could lock the same
            # rows (a grant's budget, its usage row of the day) in opposite orders and one
            # would be chosen as a deadlock's victim, failing every call in it.  Waiting
            # for it is bounded as SQLite's busy timeout bounds its lock.
            self._begin = (
                "BEGIN",
                f"SET LOCAL lock_timeout = '{int(BUSY_TIMEOUT_S * 1000)}ms'",
                f"SELECT pg_advisory_xact_lock({GROUP_LOCK_KEY})",
            )
        # A call alone needs no savepoint where a failed statement leaves the transaction
        # usable (SQLite).  PostgreSQL aborts it, and then answers COMMIT with a silent
        # ROLLBACK: a call that caught the error would be told it committed.  Only a
        # savepoint's RELEASE says so there.
        self._alone_ok = engine.dialect.name == "sqlite"
        self._max_group = max_group
        self._waiting: list[_Call[Any]] = []
        self._waiting_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._in_group = threading.local()
        self._closed = False
        # Across processes: the next writer wakes when the lock is free (writer_lock).
        self._lock = WriterLock.beside(
            engine.dialect.name, engine.url.database, timeout_s=BUSY_TIMEOUT_S
        )
        self.groups = 0
        """Transactions committed or attempted (for tests and the bench)."""

    @property
    def waiting(self) -> int:
        """Calls queued for the next group."""
        with self._waiting_lock:
            return len(self._waiting)

    def run(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` inside the next group's transaction; its value once committed.

        No thread of its own: the caller that finds no commit under way commits every
        call waiting at that moment (its own among them), in its own thread; the callers
        that arrive meanwhile wait on a lock (woken when it is free, never sleeping) and
        the first of them commits the next group.
        """
        if getattr(self._in_group, "active", False):
            raise RuntimeError("a control-plane write function cannot queue another")
        call: _Call[T] = _Call(fn)
        with self._waiting_lock:
            if self._closed:
                raise RuntimeError("the control-plane writer is closed")
            self._waiting.append(call)
        while not call.done:
            with self._commit_lock:
                if call.done:
                    break
                with self._waiting_lock:
                    group = self._waiting[: self._max_group]
                    del self._waiting[: self._max_group]
                self._in_group.active = True
                try:
                    self._commit(group)
                finally:
                    self._in_group.active = False
        if call.error is not None:
            raise call.error
        return call.value  # type: ignore[return-value]

    def close(self) -> None:
        """Refuse new calls; the ones under way finish (safe to call twice)."""
        with self._waiting_lock:
            self._closed = True
        with self._commit_lock:
            self._lock.close()

    def _commit(self, group: list[_Call[Any]]) -> None:
        self.groups += 1
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with _held(self._lock), self._engine.connect() as conn:
                _driver_sql(conn, self._begin[0])
                try:
                    for statement in self._begin[1:]:
                        _driver_sql(conn, statement)
                    if len(group) == 1 and self._alone_ok:
                        # Alone in its group: its transaction is its savepoint.
                        outcomes.append(_alone(conn, group[0].fn))
                    else:
                        outcomes.extend(_call(conn, call.fn) for call in group)
                        _driver_sql(conn, "COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
        except BaseException as exc:  # the group's transaction failed: fail every call
            outcomes = [(None, exc)] * len(group)
        for call, (value, error) in zip(group, outcomes, strict=True):
            call.value, call.error, call.done = value, error, True


@contextmanager
def _held(lock: WriterLock) -> Iterator[None]:
    """The writer lock for a group; a timeout is the database being locked (as SQLite's
    own busy timeout would report it: the control plane is unavailable)."""
    try:
        with lock.held():
            yield
    except LockTimeout as exc:
        raise sa.exc.OperationalError("BEGIN", None, exc) from exc


def _driver_sql(conn: Connection, statement: str) -> None:
    """A transaction statement straight on the driver's connection.

    ``BEGIN``, ``SAVEPOINT`` and ``COMMIT`` take no parameters and return no rows; through
    SQLAlchemy's execution machinery each cost several times SQLite's own work for them.
    """
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
    except Exception as exc:  # the same exception SQLAlchemy would have raised
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, conn.dialect.loaded_dbapi.Error
        ) from exc
    finally:
        cursor.close()


def _alone(conn: Connection, fn: Callable[[Connection], Any]) -> tuple[Any, Exception | None]:
    """``fn(conn)`` as the only call of the open transaction, committed: (value, None); or
    (None, its exception) with the transaction rolled back (nothing else was in it).

    A failed COMMIT raises (the group fails, as any group whose commit fails).
    """
    try:
        value = fn(conn)
    except Exception as exc:
        _rollback(conn)
        return None, exc
    _driver_sql(conn, "COMMIT")
    return value, None


def _call(conn: Connection, fn: Callable[[Connection], Any]) -> tuple[Any, Exception | None]:
    """``fn(conn)`` in a savepoint: (value, None), or (None, its exception) rolled back.

    If the savepoint cannot be rolled back to (the error ended the transaction), that
    error propagates and fails the group.
    """
    _driver_sql(conn, f"SAVEPOINT {_SAVEPOINT}")
    try:
        value = fn(conn)
    except Exception as exc:
        _driver_sql(conn, f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        _driver_sql(conn, f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return None, exc
    _driver_sql(conn, f"RELEASE SAVEPOINT {_SAVEPOINT}")
    return value, None


def _rollback(conn: Connection) -> None:
    """End the transaction after a failure (it may already be gone: nothing to undo)."""
    try:
        _driver_sql(conn, "ROLLBACK")
    except sa.exc.DBAPIError:
        pass
