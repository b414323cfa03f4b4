"""A per-key token-bucket rate limit (429 with ``Retry-After``), kept in the server process.

Keys are API token ids, or ``addr:`` plus a client address for failed sign-ins.
With several server processes a client spreading its connections over them can
reach that many times the rate (``docs/deployment.md``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.core.errors import RateLimited

__all__ = ["RateLimiter"]


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
