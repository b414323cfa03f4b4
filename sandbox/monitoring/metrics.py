"""The shared figures behind ``/metrics``: read from the audit store and the control plane.

Every server process computes them from the same shared state at scrape time, so
any process (any worker, any host on one PostgreSQL) reports the same totals:

- audit entries by action and decision, and refusals by action and rule, from the
  trail (:class:`TrailTally`: each process keeps a cursor and reads only entries
  appended since its last scrape, by primary key; a process starts from the newest
  shared checkpoint of those counts in ``metrics_trail_counts``, so no process re-reads
  a long trail from the start);
- ε spent per dataset, from the grants' budget ledgers (``grant_budgets``);
- alerts not yet resolved, by severity and state (``monitor_alerts``);
- jobs by state (``jobs``).

Labels carry rule names, actions, decisions, severities, states and dataset ids only:
never an operator, a query text or a value.  No prometheus-client here (the core
install has no server extra); ``sandbox.api.metrics`` turns these into metric families.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from audit.schema import entries
from audit.store import AuditStore
from sandbox.core.db import metadata
from sandbox.core.policy_tables import EPSILON_SCALE, grant_budgets, grants

from .detectors import SEVERITIES
from .tables import alerts, create_tables

__all__ = [
    "ALERT_STATES",
    "EMPTY",
    "SharedFigures",
    "TrailCounts",
    "TrailTally",
    "alerts_by_severity",
    "checkpoints",
    "epsilon_spent_by_dataset",
    "jobs_by_state",
    "label_safe",
    "rule_of",
    "shared_figures",
    "tally",
]

ALERT_STATES = ("open", "acknowledged")
_JOBS = sa.table("jobs", sa.column("state"))
"""The jobs table (``sandbox.jobs.tables``), named here: jobs sit above monitoring."""
_LABEL = re.compile(r"^[a-z][a-z0-9_.:-]{0,79}$")
_PREV = b',"prev":"'


def label_safe(name: str | None) -> str:
    """A rule or action name as a label value; anything not shaped like one is ``other``
    (a label never carries free text)."""
    if name is None or not _LABEL.match(name):
        return "other"
    return name


def rule_of(canonical: bytes) -> str:
    """The top-level ``rule`` of a canonical entry, without parsing its ``details``.

    In canonical JSON every member after ``prev`` (request_id, role, rule, seq, target,
    time, v) is a string, number or null, and a string cannot hold an unescaped quote,
    so the last ``,"prev":"`` starts the top-level tail: ``{`` plus that tail is a JSON
    object of its own.  Anything else is parsed whole.
    """
    start = canonical.rfind(_PREV)
    try:
        tail = json.loads(b"{" + canonical[start + 1 :]) if start >= 0 else json.loads(canonical)
    except ValueError:
        tail = json.loads(canonical)
    rule = tail.get("rule")
    return rule if isinstance(rule, str) else ""


@dataclass(frozen=True)
class TrailCounts:
    """Entries by (action, decision) and refusals by (action, rule), up to ``next_seq``."""

    entries: Mapping[tuple[str, str], int]
    refusals: Mapping[tuple[str, str], int]
    next_seq: int


def tally(before: TrailCounts, rows: Iterable[tuple[int, str, str, bytes]]) -> TrailCounts:
    """``before`` plus the rows ``(seq, action, decision, entry bytes)`` (pure)."""
    counted: Counter[tuple[str, str]] = Counter(before.entries)
    refused: Counter[tuple[str, str]] = Counter(before.refusals)
    next_seq = before.next_seq
    for seq, action, decision, entry in rows:
        name = label_safe(action)
        counted[(name, decision if decision in ("allow", "deny") else "other")] += 1
        if decision == "deny":
            refused[(name, label_safe(rule_of(bytes(entry))))] += 1
        next_seq = max(next_seq, seq + 1)
    return TrailCounts(dict(counted), dict(refused), next_seq)


EMPTY = TrailCounts({}, {}, 0)

checkpoints = sa.Table(
    "metrics_trail_counts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("next_seq", sa.BigInteger, nullable=False),
    sa.Column("counts", sa.JSON, nullable=False),
)
"""One row: the trail's counts up to ``next_seq``, shared by every process (any may
write a newer one; counts up to a seq are the same whoever computed them)."""


def _encode(counts: TrailCounts) -> dict[str, list[list[object]]]:
    return {
        "entries": [[a, d, n] for (a, d), n in sorted(counts.entries.items())],
        "refusals": [[a, r, n] for (a, r), n in sorted(counts.refusals.items())],
    }


def _decode(next_seq: int, data: Mapping[str, list[list[object]]]) -> TrailCounts:
    def pairs(rows: list[list[object]]) -> dict[tuple[str, str], int]:
        return {(str(a), str(b)): int(str(n)) for a, b, n in rows}

    return TrailCounts(pairs(data["entries"]), pairs(data["refusals"]), next_seq)


class TrailTally:
    """This process's running counts of the shared trail.

    Each call reads only the entries appended since the previous one (``seq >=`` the
    cursor, the primary key), in chunks.  With a control plane (``control``) the first
    call starts from the shared checkpoint when the trail reaches it, and the counts
    are checkpointed again after every ``checkpoint_every`` new entries; without one
    the first call reads the whole trail.  Every process reaches the same counts because
    the trail is append-only.
    """

    def __init__(
        self,
        store: AuditStore,
        control: sa.engine.Engine | None = None,
        *,
        chunk: int = 20_000,
        checkpoint_every: int = 10_000,
    ) -> None:
        self._store = store
        self._control = control
        self._chunk = chunk
        self._every = checkpoint_every
        self._counts = EMPTY
        self._saved = 0
        self._started = False
        self._lock = threading.Lock()

    def counts(self) -> TrailCounts:
        with self._lock:
            if not self._started:
                self._counts = self._resume()
                self._saved = self._counts.next_seq
                self._started = True
            while True:
                query = (
                    sa.select(entries.c.seq, entries.c.action, entries.c.decision, entries.c.entry)
                    .where(entries.c.seq >= self._counts.next_seq)
                    .order_by(entries.c.seq)
                    .limit(self._chunk)
                )
                with self._store.reading() as reads:
                    rows = [tuple(row) for row in reads.conn.execute(query)]
                self._counts = tally(self._counts, rows)  # type: ignore[arg-type]
                if len(rows) < self._chunk:
                    break
            if self._control is not None and self._counts.next_seq - self._saved >= self._every:
                self._save(self._counts)
                self._saved = self._counts.next_seq
            return self._counts

    def _resume(self) -> TrailCounts:
        """The shared checkpoint, if the trail holds every entry it counted."""
        if self._control is None:
            return EMPTY
        create_tables(self._control)  # the alert tables, if no monitor started yet
        checkpoints.create(self._control, checkfirst=True)
        with self._control.connect() as conn:
            row = conn.execute(sa.select(checkpoints).where(checkpoints.c.id == 1)).first()
        if row is None:
            return EMPTY
        with self._store.reading() as reads:
            size = reads.size_and_chain_head()[0]
        if int(row.next_seq) > size:
            return EMPTY  # another trail than the one counted: count this one afresh
        return _decode(int(row.next_seq), row.counts)

    def _save(self, counts: TrailCounts) -> None:
        values = {"next_seq": counts.next_seq, "counts": _encode(counts)}
        assert self._control is not None
        try:
            with self._control.begin() as conn:
                done = conn.execute(
                    sa.update(checkpoints)
                    .where(checkpoints.c.id == 1, checkpoints.c.next_seq < counts.next_seq)
                    .values(**values)
                )
                if done.rowcount == 0:
                    exists = conn.execute(sa.select(checkpoints.c.id)).first()
                    if exists is None:
                        conn.execute(sa.insert(checkpoints).values(id=1, **values))
        except sa.exc.IntegrityError:
            pass  # another process wrote the first checkpoint at the same moment


def epsilon_spent_by_dataset(conn: Connection) -> dict[str, float]:
    """ε spent so far per dataset: the sum of its grants' budget ledgers."""
    query = (
        sa.select(grants.c.dataset_id, sa.func.sum(grant_budgets.c.spent))
        .select_from(grant_budgets.join(grants, grants.c.id == grant_budgets.c.grant_id))
        .group_by(grants.c.dataset_id)
    )
    return {str(d): int(s or 0) / EPSILON_SCALE for d, s in conn.execute(query)}


def alerts_by_severity(conn: Connection) -> dict[tuple[str, str], int]:
    """Alerts not resolved, by (severity, state); every pair present (zeros included)."""
    counts = {(sev, state): 0 for sev in SEVERITIES for state in ALERT_STATES}
    query = (
        sa.select(alerts.c.severity, alerts.c.state, sa.func.count())
        .where(alerts.c.state.in_(ALERT_STATES))
        .group_by(alerts.c.severity, alerts.c.state)
    )
    for severity, state, n in conn.execute(query):
        key = (label_safe(severity), str(state))
        counts[key] = counts.get(key, 0) + int(n)
    return counts


def jobs_by_state(conn: Connection, states: Iterable[str]) -> dict[str, int]:
    """Jobs by state (each of ``states`` present, zeros included): the queue is ``queued``."""
    counts = dict.fromkeys(states, 0)
    query = sa.select(_JOBS.c.state, sa.func.count()).group_by(_JOBS.c.state)
    for state, n in conn.execute(query):
        counts[label_safe(state)] = counts.get(label_safe(state), 0) + int(n)
    return counts


@dataclass(frozen=True)
class SharedFigures:
    trail: TrailCounts
    epsilon_spent: Mapping[str, float]
    alerts: Mapping[tuple[str, str], int]
    jobs: Mapping[str, int]


def shared_figures(
    tally_: TrailTally, control: sa.engine.Engine, job_states: Iterable[str]
) -> SharedFigures:
    """Everything shared, read now: the trail's new entries, then one control-plane read."""
    trail = tally_.counts()
    with control.connect() as conn:
        return SharedFigures(
            trail=trail,
            epsilon_spent=epsilon_spent_by_dataset(conn),
            alerts=alerts_by_severity(conn),
            jobs=jobs_by_state(conn, job_states),
        )
