"""Deadlines for running queries: one watchdog thread per process, not a timer per query.

A :class:`threading.Timer` per query started a thread for every query, and starting one
waits until the new thread has run (a GIL hand-off): about 0.1 ms on a quiet machine, with
a p90 of 4 ms measured here (2026-12-03), on the path of every small query.  The watchdog
keeps the deadlines in a heap; arming one is a heap push under a lock, and the thread is
woken only when the new deadline is earlier than every other (a query's deadline is
usually the latest).  Disarming marks the entry; marked entries are dropped when they
come due, or all at once when they outnumber the armed ones.
The callback (``cursor.interrupt``) runs on the watchdog thread, never under its lock.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

__all__ = ["Deadline", "Watchdog"]


class Deadline:
    """One armed deadline; :meth:`disarm` before it fires and it never does."""

    __slots__ = ("_callback", "_watchdog", "at")

    def __init__(self, at: float, callback: Callable[[], object], watchdog: Watchdog) -> None:
        self.at = at
        self._callback: Callable[[], object] | None = callback
        self._watchdog = watchdog

    def disarm(self) -> None:
        with self._watchdog._lock:
            if self._callback is not None:
                self._callback = None
                self._watchdog._live -= 1

    def _take(self) -> Callable[[], object] | None:
        """The callback, once (None if disarmed); call with the watchdog's lock held."""
        callback, self._callback = self._callback, None
        if callback is not None:
            self._watchdog._live -= 1
        return callback


class Watchdog:
    """Calls each armed callback at its deadline unless it was disarmed first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._live = 0  # armed and not yet fired or disarmed

    def arm(self, seconds: float, callback: Callable[[], object]) -> Deadline:
        """Call ``callback`` in ``seconds`` (on the watchdog's thread) unless disarmed."""
        at = self._clock() + seconds
        deadline = Deadline(at, callback, self)
        with self._lock:
            if len(self._heap) > 64 and self._live * 2 < len(self._heap):
                # Mostly disarmed entries (queries that ended in time): drop them.
                self._heap = [item for item in self._heap if item[2]._callback is not None]
                heapq.heapify(self._heap)
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (at, next(self._order), deadline))
            self._live += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            elif earliest is None or at < earliest:
                self._wake.notify()
        return deadline

    def close(self) -> None:
        """Stop the thread; deadlines still armed are dropped (the next arm starts again)."""
        with self._lock:
            thread, self._thread = self._thread, None
            for _, _, deadline in self._heap:
                deadline._take()
            self._heap = []
            self._wake.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def armed(self) -> int:
        """Deadlines armed and not yet fired or disarmed."""
        with self._lock:
            return self._live

    def held(self) -> int:
        """Entries in the heap (disarmed ones not yet dropped included)."""
        with self._lock:
            return len(self._heap)

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            due: list[Callable[[], object]] = []
            with self._lock:
                if self._thread is not me:  # closed
                    return
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    callback = heapq.heappop(self._heap)[2]._take()
                    if callback is not None:
                        due.append(callback)
                if not due:
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._wake.wait(timeout)
                    continue
            for callback in due:
                try:
                    callback()
                except Exception:  # an interrupt of a finished cursor: nothing to stop
                    pass
