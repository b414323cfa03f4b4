"""A SQLite database's group writers, across processes: a lock that hands over at once.

SQLite's write lock has no queue.  A connection that finds it taken sleeps in the busy
handler (1, 2, 5, 10 … ms) and tries again, so with two server processes a group often
slept on after the lock it wanted had been released: under 8 clients and
``sandbox serve --workers 2`` the two processes kept 1.3 to 1.4 of 2 cores busy
(``bench/http_load.py --workers 2``; with this lock 1.5 to 1.6, and about 15% more
small queries a second, December 2026).

So each group transaction of the control plane's writer holds an exclusive ``flock``
on a file beside the database (``<database>-writer.lock``), taken before
``BEGIN IMMEDIATE``.  A waiter is woken the moment the holder releases the lock, or
dies (the kernel releases a dead process's locks).  The wait is bounded as SQLite's
busy timeout bounds it: after ``timeout_s`` the caller gets :class:`LockTimeout`
rather than waiting forever on a stopped process.  A lock taken at once costs one
system call; only a contended one waits, in a thread of its own (``flock`` has no
timeout), which the caller leaves behind if it gives up.

The lock is advisory.  A lock file that cannot be opened is logged once and gone
without.  A writer that does not take it (another program, the ``sqlite3``
shell, a write outside the group writer) meets SQLite's own lock, as before.
Correctness never depends on it, only the wait does.  Nobody takes it while holding
SQLite's write lock, so the two cannot deadlock.  There is none for PostgreSQL (its
lock waits are queued), in-memory or URI databases.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: SQLite's busy handler alone, as before
    fcntl = None  # type: ignore[assignment]

__all__ = ["SUFFIX", "LockTimeout", "WriterLock"]

log = logging.getLogger("sandbox.core.writer_lock")

SUFFIX = "-writer.lock"


class LockTimeout(TimeoutError):
    """Another process held the database's writer lock for longer than the timeout."""


class WriterLock:
    """An exclusive cross-process lock for one database file's write transactions.

    Its callers in one process take it one at a time (the group writer's commit lock).
    """

    def __init__(self, path: Path | None, *, timeout_s: float = 10.0) -> None:
        self.path = path if fcntl is not None else None
        self.timeout_s = timeout_s
        self._fd: int | None = None
        self._pid = 0  # the process that opened _fd (a forked child opens its own)
        self._guard = threading.Lock()

    @classmethod
    def beside(cls, dialect: str, database: str | None, *, timeout_s: float = 10.0) -> WriterLock:
        """The lock of a SQLite database file; a lock that does nothing for any other."""
        if dialect != "sqlite" or not database or database == ":memory:":
            return cls(None)
        if database.startswith("file:"):
            return cls(None)
        return cls(Path(database + SUFFIX), timeout_s=timeout_s)

    @property
    def active(self) -> bool:
        return self.path is not None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block; :class:`LockTimeout` if it stays taken."""
        fd = None if self.path is None else self._open()
        if fd is None:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._wait(fd)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _wait(self, fd: int) -> None:
        """Block until ``fd`` holds the lock, at most ``timeout_s``.

        A thread waits in ``flock`` (which releases the GIL and has no timeout).  If the
        caller gives up, the descriptor is the thread's from then on: this lock opens a
        new one, and the thread releases and closes the old one once it gets the lock,
        so a lock taken too late is never mistaken for the next caller's.
        """
        taken = threading.Event()
        outcome = threading.Lock()
        given_up = False

        def take() -> None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with outcome:
                if not given_up:
                    taken.set()
                    return
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

        threading.Thread(target=take, name="writer-lock-wait", daemon=True).start()
        if taken.wait(self.timeout_s):
            return
        with outcome:
            if taken.is_set():
                return
            given_up = True
        with self._guard:
            if self._fd == fd:
                self._fd = None  # the waiting thread closes it
        raise LockTimeout(
            f"another process held the database's writer lock for over {self.timeout_s:g} s"
        )

    def _open(self) -> int | None:
        """This process's descriptor of the lock file (flock locks an open file
        description: a child sharing its parent's would share its lock); None if the
        file cannot be opened (another account's, a directory in its place ...): then
        writes go without it, as before it existed, and the server log says so once."""
        with self._guard:
            if self.path is None:
                return None
            if self._fd is None or self._pid != os.getpid():
                try:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except OSError as exc:
                    log.warning(
                        "cannot open the writer lock %s (%s): writes wait in SQLite's busy "
                        "handler instead",
                        self.path,
                        type(exc).__name__,
                    )
                    self.path = None
                    return None
                self._pid = os.getpid()
            return self._fd

    def close(self) -> None:
        with self._guard:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None
