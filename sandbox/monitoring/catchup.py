"""Bringing operators' histories up to date for a batch of queued decisions.

The monitor takes every decision queued since its last pass as one batch.  For each
operator in the batch it reads the audit store once: at first sight the operator's
last 8 days before its first queued decision, then every ``dataset.query`` entry the
history has not seen up to the newest queued one (entries other server processes
appended).  :func:`steps` then says, for each queued decision in queue order, which
events its history takes first and whether it is evaluated: exactly what bringing
the history up to each decision on its own, one read per decision, would do.  That
includes decisions queued out of seq order: a decision whose seq the history has
already passed joins it as history only and is not evaluated.

The two reads are built once (bound parameters), so a read costs the store's round
trip and not the building of its expression.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from audit import Entry
from audit.schema import entries

from .events import QUERY_ACTION, Event, entry_fields, event_from_entry

__all__ = ["KEEP", "Step", "read_first", "read_since", "steps"]

KEEP = 50_000
"""Events kept per operator in memory (then the oldest half is forgotten)."""

Step = tuple[tuple[Event, ...], bool]
"""The events a history takes before a queued decision, and whether that decision is
evaluated (False: its seq is already in the history)."""

_OF_OPERATOR = (entries.c.actor == sa.bindparam("operator"), entries.c.action == QUERY_ACTION)

_FIRST = (
    sa.select(entries.c.seq, entries.c.entry)
    .where(
        *_OF_OPERATOR,
        entries.c.time >= sa.bindparam("since"),
        entries.c.seq < sa.bindparam("before"),
    )
    .order_by(entries.c.seq.desc())
    .limit(KEEP)
)

_SINCE = (
    sa.select(entries.c.seq, entries.c.entry)
    .where(
        *_OF_OPERATOR,
        entries.c.seq > sa.bindparam("after"),
        entries.c.seq < sa.bindparam("before"),
    )
    .order_by(entries.c.seq)
    .limit(KEEP)
)


def _events(rows: Iterable[Any], skip: frozenset[int], datasets: Sequence[str]) -> list[Event]:
    out = []
    for seq, raw in rows:
        if seq in skip:  # a queued decision: its event comes from the queue
            continue
        event = event_from_entry(entry_fields(Entry.from_bytes(bytes(raw))), datasets=datasets)
        if event is not None:
            out.append(event)
    return out


def read_first(
    conn: sa.Connection, operator: str, before: int, since: str, datasets: Sequence[str]
) -> list[Event]:
    """The operator's newest ``KEEP`` decisions from ``since`` (an RFC 3339 time) with a
    seq below ``before``, oldest first."""
    rows = conn.execute(_FIRST, {"operator": operator, "since": since, "before": before})
    found = _events(rows, frozenset(), datasets)
    found.reverse()
    return found


def read_since(
    conn: sa.Connection,
    operator: str,
    after: int,
    before: int,
    queued: Iterable[int],
    datasets: Sequence[str],
) -> list[Event]:
    """The operator's decisions with a seq between ``after`` and ``before`` (both
    excluded), in seq order, but for the ``queued`` seqs."""
    if before <= after + 1:
        return []
    rows = conn.execute(_SINCE, {"operator": operator, "after": after, "before": before})
    return _events(rows, frozenset(queued), datasets)


def steps(last_seq: int, queued: Sequence[Event], stored: Sequence[Event]) -> list[Step]:
    """One operator's steps, one per ``queued`` event (in queue order).

    ``last_seq``: the newest seq in the history; ``stored``: the operator's events read
    from the store after ``last_seq`` that are not queued.  Before each queued event the
    history takes every stored or queued event with a smaller seq it has not taken yet
    (as reading the store up to that event would find them); an event whose seq the
    history has passed is not evaluated (nor taken twice).
    """
    pending = sorted(
        {e.seq: e for e in (*stored, *queued) if e.seq > last_seq}.values(), key=lambda e: e.seq
    )
    out: list[Step] = []
    at, last = 0, last_seq
    for event in queued:
        if event.seq <= last:
            out.append(((), False))
            continue
        start = at
        while pending[at].seq < event.seq:
            at += 1
        out.append((tuple(pending[start:at]), True))
        at += 1  # the event itself
        last = event.seq
    return out
