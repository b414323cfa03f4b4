"""Parsed, costed and prepared queries, cached by everything that computing them reads.

A query's analysis (parse, cost bound, guard, rewrite: a few milliseconds) is a pure
function of its inputs: the SQL text and length limit; the grants' terms and each
dataset's classification, as :class:`~sandbox.core.access.DatasetAccess`; the
disclosure parameters; the catalog's row counts and the cost limits.  The cache keys
each result by *all* of those inputs, read fresh for the request at hand, plus the
policy state the authority last adopted (``policies.probe.State``: policy version,
sum of dataset versions, rules version; every grant, freeze, classification or list
change moves it).  So a change never meets a stale entry: a narrowed grant, a new
classification or a different ε is a different key, and the next query is analysed
afresh.  There is nothing to invalidate; old keys fall out of the bounded LRU.

What is cached is never a verdict on the operator: authorization (grant live,
quotas, budget) is decided for every request, and only queries that passed the
analysis are kept (a refusal is raised again by computing it again).

Closed by construction: an input that cannot be hashed (a new field of
``DatasetAccess`` or ``DisclosureParams`` nobody taught to hash) makes the key
``None`` and the query is analysed without the cache.  Cached values are shared by
concurrent requests and must not be mutated: :class:`~sandbox.query.parse.Parsed` and
:class:`~sandbox.query.release.Prepared` are read-only after they are built
(``tests/sandbox/query/test_plan_cache.py`` checks that preparing changes nothing).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

from sandbox.core.access import DatasetAccess

__all__ = ["PlanCache", "access_key"]

T = TypeVar("T")


def access_key(access: Mapping[str, DatasetAccess], versions: Mapping[str, Hashable]) -> Hashable:
    """A hashable fingerprint of what the grants allow on each dataset.

    The classification (``spec``) stands by ``versions[dataset]`` (the catalog's version
    and classification digest); every other field of ``DatasetAccess`` is taken as it
    is, whatever fields it grows.  ``None`` if any of it cannot be hashed.
    """
    parts: list[Hashable] = []
    for dataset in sorted(access):
        item = access[dataset]
        values: list[Hashable] = [dataset, versions[dataset]]
        for f in dataclasses.fields(item):
            if f.name != "spec":
                values.append((f.name, getattr(item, f.name)))
        parts.append(tuple(values))
    key = tuple(parts)
    try:
        hash(key)
    except TypeError:
        return None
    return key


class PlanCache:
    """A bounded, thread-safe LRU of analysis results (``size`` 0: no caching at all)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_build(self, key: Hashable | None, build: Callable[[], T]) -> T:
        """The value cached under ``key``, or ``build()`` (cached unless it raises).

        ``key`` None: not cacheable, always built.  Two threads missing the same key may
        both build it; the results are equal (a pure function) and one is kept.
        """
        if key is None or self.size <= 0:
            return build()
        try:
            with self._lock:
                found = self._entries.get(key, _MISSING)
                if found is not _MISSING:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return found  # type: ignore[no-any-return]
                self.misses += 1
        except TypeError:  # an unhashable part slipped through: analyse without the cache
            return build()
        value = build()
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_MISSING = object()
