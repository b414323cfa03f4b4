"""One query decision as the detectors see it, read from its audit entry (metadata only).

:func:`event_from_entry` takes the fields of an ``dataset.query`` audit entry (the
query service writes them, ``sandbox/query/service.py``) and keeps what the
detectors read: when, who, which dataset and client, allowed or the refusing
rule, the predicate fingerprint of its normalized SQL
(``sandbox.monitoring.fingerprint``), groups
suppressed, ε spent.  No released value is ever in an audit entry, so none is here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from audit import Entry

from .fingerprint import predicate_fingerprint

__all__ = ["QUERY_ACTION", "Event", "dataset_named", "entry_fields", "epoch", "event_from_entry"]

QUERY_ACTION = "dataset.query"


@dataclass(frozen=True, slots=True)
class Event:
    """One decision on one query (an explain, a run, a repeat from cache, a refusal)."""

    seq: int
    at: float
    """Seconds since the epoch (UTC)."""
    operator: str
    dataset: str | None
    allowed: bool
    rule: str
    client: str | None = None
    query: str | None = None
    """``query_sha256`` of the normalized query (refusals carry one too)."""
    shape: str | None = None
    template: str | None = None
    sets: tuple[tuple[str, ...], ...] = ()
    suppressed: int = 0
    epsilon_spent: float = 0.0
    epsilon_remaining: float | None = None
    explain: bool = False
    cached: bool = False


def epoch(moment: str) -> float:
    """An audit entry's RFC 3339 time (``…Z``) as seconds since the epoch."""
    return datetime.fromisoformat(moment).timestamp()


_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")


def dataset_named(sql: str, known: Iterable[str]) -> str | None:
    """The first catalogued dataset id written in ``sql`` (a refusal records no dataset)."""
    ids = set(known)
    for match in _NAME.finditer(sql.lower()):
        if match.group(0) in ids:
            return match.group(0)
    return None


@lru_cache(maxsize=256)
def _fingerprint(normalized: str) -> tuple[str | None, str | None, tuple[tuple[str, ...], ...]]:
    """The predicate fingerprint as immutable parts, the last few memoized (an explain
    and its run, a query repeated from the release cache, share one normalized SQL)."""
    found = predicate_fingerprint(normalized)
    sets = tuple(tuple(str(c) for c in s) for s in found.get("sets", ()))
    return found.get("shape"), found.get("template"), sets


def entry_fields(entry: Entry) -> dict[str, Any]:
    """The fields of a parsed audit entry that :func:`event_from_entry` reads."""
    return {
        "seq": entry.seq,
        "time": entry.time,
        "actor": entry.actor,
        "action": entry.action,
        "dataset": entry.dataset,
        "decision": entry.decision,
        "rule": entry.rule,
        "client": entry.client,
        "details": entry.details,
    }


def event_from_entry(entry: Mapping[str, Any], *, datasets: Iterable[str] = ()) -> Event | None:
    """The event of one audit entry, or None if it is not a query decision.

    ``datasets``: the catalogued ids, to name the dataset of a refusal from its SQL.
    """
    if entry.get("action") != QUERY_ACTION:
        return None
    details: Mapping[str, Any] = entry.get("details") or {}
    allowed = entry.get("decision") == "allow"
    dataset = entry.get("dataset")
    if dataset is None and not allowed:
        text = details.get("normalized_sql") or details.get("sql") or ""
        dataset = dataset_named(str(text), datasets)
    shape: str | None = None
    template: str | None = None
    sets: tuple[tuple[str, ...], ...] = ()
    normalized = details.get("normalized_sql")
    if allowed and isinstance(normalized, str):
        shape, template, sets = _fingerprint(normalized)
    suppressed = details.get("groups_suppressed")
    spent = details.get("epsilon_spent")
    remaining = details.get("epsilon_remaining")
    return Event(
        seq=int(entry["seq"]),
        at=epoch(str(entry["time"])),
        operator=str(entry["actor"]),
        dataset=dataset,
        allowed=allowed,
        rule=str(entry.get("rule", "")),
        client=entry.get("client"),
        query=details.get("query_sha256"),
        shape=shape,
        template=template,
        sets=sets,
        suppressed=int(suppressed) if isinstance(suppressed, int) else 0,
        epsilon_spent=float(spent) if isinstance(spent, int | float) else 0.0,
        epsilon_remaining=float(remaining) if isinstance(remaining, int | float) else None,
        explain=bool(details.get("explain")),
        cached=bool(details.get("cache")),
    )
