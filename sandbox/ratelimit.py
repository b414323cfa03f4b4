"""Per-key token buckets (429 with ``Retry-After``), and the tally of anonymous refusals.

:class:`RateLimiter` keys are API token ids, or, for failed sign-ins, ``addr:``
plus a client address and ``cred:`` plus a digest of the presented credential's
first characters.  With several server processes a client spreading its
connections over them can reach that many times the rate (``docs/deployment.md``).

:class:`FailureTally` keeps a flood of made-up tokens from growing the audit trail
without bound: per client address (and action and rule) the first refusal of a
window is recorded at once, the rest are counted and recorded as one entry when
the window closes, or when the server stops.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.core.errors import RateLimited
from sandbox.core.timeutil import to_rfc3339

__all__ = ["FailureTally", "RateLimiter"]

log = logging.getLogger("sandbox.ratelimit")


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    refused: int = 0


class RateLimiter:
    """Token buckets by key (a token id, or ``addr:`` + client address)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._pruned = clock()

    def take(self, key: str, per_minute: int) -> tuple[bool, float, int]:
        """Spend one request: (allowed, seconds until the next is allowed, refusals so far)."""
        rate = per_minute / 60.0
        now = self.clock()
        with self._lock:
            if now - self._pruned > 120:
                self._prune(now)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(per_minute), now)
            bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                bucket.refused = 0
                return True, 0.0, 0
            bucket.refused += 1
            return False, (1.0 - bucket.tokens) / rate, bucket.refused

    def peek(self, key: str, per_minute: int) -> tuple[bool, float, int]:
        """Like :meth:`take` but spends nothing when allowed (a refusal still counts)."""
        rate = per_minute / 60.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return True, 0.0, 0
            tokens = min(float(per_minute), bucket.tokens + (now - bucket.stamp) * rate)
            if tokens >= 1.0:
                return True, 0.0, 0
            bucket.refused += 1
            return False, (1.0 - tokens) / rate, bucket.refused

    def blocked(self, key: str, per_minute: int, what: str) -> None:
        """Raise :class:`RateLimited` if ``key``'s bucket is empty, without spending from it."""
        allowed, wait, refused = self.peek(key, per_minute)
        if not allowed:
            raise self._error(what, per_minute, wait, refused)

    def check(self, key: str, per_minute: int, what: str) -> None:
        """Spend one request; raise :class:`RateLimited` (with ``retry_after``) when over."""
        allowed, wait, refused = self.take(key, per_minute)
        if allowed:
            return
        raise self._error(what, per_minute, wait, refused)

    @staticmethod
    def _error(what: str, per_minute: int, wait: float, refused: int) -> RateLimited:
        error = RateLimited(
            f"{what}: at most {per_minute} requests per minute; retry in {math.ceil(wait)} s",
            rule="api.rate_limit",
        )
        error.retry_after = max(1, math.ceil(wait))  # type: ignore[attr-defined]
        error.refused = refused  # type: ignore[attr-defined]
        return error

    def _prune(self, now: float) -> None:
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.stamp < 120}
        self._pruned = now


@dataclass
class _Window:
    opened: float
    since: datetime
    fields: dict[str, Any]
    count: int = 0
    last_request_id: str | None = field(default=None)


class FailureTally:
    """Anonymous refusals (unknown tokens and enrolment codes), one audit entry per window.

    ``record`` appends one audit entry (``Platform.record``).  For each (client
    address, action, rule) the first refusal of a window is recorded at once (so a
    flood shows in the trail immediately, and a failing trail fails the request);
    the rest are counted, and the count is recorded as one entry when the window is
    ``window_s`` old, by :meth:`flush` (the server calls it every few seconds, and
    with ``everything=True`` when it stops).  A count whose entry could not be
    written is kept and tried again: no refusal that was answered goes unrecorded
    while the process lives.
    """

    def __init__(
        self,
        record: Callable[..., object],
        *,
        window_s: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.record = record
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[tuple[str | None, str, str], _Window] = {}

    def add(self, fields: dict[str, Any]) -> None:
        """Count one refusal (its audit fields); the first of a window is recorded now."""
        key = (fields.get("client"), str(fields["action"]), str(fields["rule"]))
        now = self.clock()
        with self._lock:
            window = self._open.get(key)
            expired = window is not None and now - window.opened >= self.window_s()
            if window is not None and not expired:
                window.count += 1
                window.last_request_id = fields.get("request_id")
                return
            closed = self._open.pop(key) if expired else None
            self._open[key] = _Window(now, datetime.now(UTC), dict(fields))
        if closed is not None:
            self._write(key, closed)
        details = {**fields.get("details", {}), "tally": "first of its window"}
        self.record(**{**fields, "details": details})

    def flush(self, *, everything: bool = False) -> int:
        """Record the counts of closed windows (all of them with ``everything``)."""
        now = self.clock()
        with self._lock:
            due = [
                (key, window)
                for key, window in self._open.items()
                if everything or now - window.opened >= self.window_s()
            ]
            for key, _ in due:
                del self._open[key]
        return sum(self._write(key, window) for key, window in due)

    def _write(self, key: tuple[str | None, str, str], window: _Window) -> int:
        if window.count == 0:
            return 0
        fields = window.fields
        details = {
            **fields.get("details", {}),
            "tally": "the rest of its window",
            "count": window.count,
            "since": to_rfc3339(window.since),
            "until": to_rfc3339(datetime.now(UTC)),
        }
        try:
            self.record(**{**fields, "request_id": window.last_request_id, "details": details})
        except Exception:
            log.warning("could not record %d refusals from %s; kept", window.count, key[0])
            with self._lock:  # keep the count: the next flush tries again
                kept = self._open.setdefault(key, window)
                if kept is not window:
                    kept.count += window.count
            return 0
        return 1
