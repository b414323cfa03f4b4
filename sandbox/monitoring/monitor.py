"""The monitor of one process: query decisions in, detectors run, alerts and responses out.

The query service hands every ``dataset.query`` audit receipt to :meth:`Monitor.observe`
(after the entry is durable); a single thread then takes every decision queued so far
as one batch: it brings each operator's history up to date from the audit store
(entries other server processes appended too; one read per operator and batch,
``sandbox.monitoring.catchup``), runs the detectors on each decision in queue order,
and records what they find: the alert row and its audit entry in one control-plane
transaction, and for a new or escalated alert whose severity a response policy acts
on, the response in that same transaction (``sandbox.monitoring.responses``).  A batch
finds, records and audits exactly what taking its decisions one at a time would.  Off
the query's path: a query never waits for the detectors, and a detector failure is
logged, never a refusal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from audit import Entry
from policies import GrantStatus
from policies import grants as grant_store
from sandbox.core.db import datasets
from sandbox.core.settings import Settings
from sandbox.platform import Platform

from .alerts import Change, record_finding, set_responses
from .catchup import KEEP, Step, read_first, read_since, steps
from .detectors import DAY, Budget, Finding, History, Thresholds, evaluate, severity_rank
from .events import QUERY_ACTION, Event, entry_fields, event_from_entry
from .responses import MONITOR, apply_responses
from .tables import alerts

__all__ = ["Monitor", "entry_fields", "record_change", "thresholds_of"]

log = logging.getLogger("sandbox.monitoring")

RECENT_S = 60.0
BATCH = 256
"""Decisions taken from the queue at most per batch."""
_STATES = sa.select(alerts.c.id, alerts.c.state).where(
    alerts.c.id.in_(sa.bindparam("ids", expanding=True))
)


def thresholds_of(settings: Settings) -> Thresholds:
    start, _, end = settings.monitor_work_hours.partition("-")
    try:
        hours = (int(start), int(end))
    except ValueError:
        hours = (0, 24)
    return Thresholds(
        probe_window_s=settings.monitor_probe_window_s,
        probe_rule_warning=settings.monitor_probe_rule_warning,
        probe_total_high=settings.monitor_probe_total_high,
        repeat_warning=settings.monitor_repeat_warning,
        repeat_high=settings.monitor_repeat_high,
        volume_floor_per_hour=settings.monitor_volume_floor_per_hour,
        volume_factor=settings.monitor_volume_factor,
        burn_factor=settings.monitor_burn_factor,
        suppress_queries=settings.monitor_suppress_queries,
        work_hours=hours,
        utc_offset_hours=settings.monitor_utc_offset_hours,
    )


def record_change(
    platform: Platform, conn: sa.Connection, change: Change, finding: Finding | None = None
) -> None:
    """The audit entry of a new or escalated alert (in the caller's transaction)."""
    alert = change.alert
    record_monitor_act(
        platform,
        alert,
        "alert.open" if change.kind == "opened" else "alert.escalate",
        {
            "severity": alert["severity"],
            "evidence": list(finding.evidence if finding else alert["evidence"]),
            "summary": alert["summary"],
        },
    )


def record_monitor_act(
    platform: Platform, alert: dict[str, Any], action: str, details: dict[str, Any]
) -> None:
    """An allow entry of the monitor (a system actor) on ``alert``, under the detector's
    rule; ``details`` after the alert's id and operator."""
    platform.record(
        actor=MONITOR,
        role="system",
        action=action,
        target=f"alert:{alert['id']}",
        decision="allow",
        rule=f"monitor.{alert['detector']}",
        dataset=alert["dataset"],
        details={"alert": alert["id"], "operator": alert["operator"], **details},
    )


class Monitor:
    """Detectors over this process's view of the decision stream (one worker thread)."""

    def __init__(self, platform: Platform, settings: Callable[[], Settings]) -> None:
        self.platform = platform
        self.settings = settings
        self._queue: queue.Queue[Any] = queue.Queue()
        self._histories: dict[str, History] = {}
        self._datasets: tuple[float, tuple[str, ...]] = (0.0, ())
        self._budgets: dict[tuple[str, str], tuple[float, Budget | None]] = {}
        self._thread: threading.Thread | None = None
        self._recent: dict[str, tuple[int, float, str]] = {}
        """Alert key -> (severity rank, when, alert id) of this process's last write for it."""
        self.batches = 0
        self.taken = 0
        """Batches the thread took from the queue, and decisions in them (the mean batch)."""

    # -- the query path's side ---------------------------------------------------------------

    def observe(self, receipt: Any) -> None:
        """Hand over one query decision's audit receipt (cheap; never raises)."""
        if self._thread is not None:
            self._queue.put(receipt.entry)

    def start(self) -> None:
        from .tables import create_tables

        create_tables(self.platform.engine)
        self._thread = threading.Thread(target=self._work, name="monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def drain(self) -> None:
        """Wait until every decision handed over so far has been evaluated."""
        self._queue.join()

    def _work(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < BATCH and items[-1] is not None:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = items[-1] is None
            self.batches += 1
            self.taken += len(items) - stop
            try:
                batch = []
                for item in items[:-1] if stop else items:
                    try:
                        batch.append(Entry.from_bytes(item))
                    except Exception:  # logged: the monitor must never stop the platform
                        log.exception("the risk monitor could not read a decision")
                self._process(batch, strict=False)
            except Exception:  # logged: the monitor must never stop the platform
                log.exception("the risk monitor could not evaluate a batch of decisions")
            finally:
                for _ in items:
                    self._queue.task_done()
            if stop:
                return

    # -- evaluation ----------------------------------------------------------------------------

    def process(self, entry: Entry) -> list[Finding]:
        """Evaluate one decision: bring its operator's history up to it, detect, record."""
        return self._process([entry], strict=True)

    def process_batch(self, batch: Sequence[Entry]) -> list[Finding]:
        """Evaluate decisions in the order given, as :meth:`process` of each in turn
        would, reading the audit store and the control plane once per batch."""
        return self._process(batch, strict=True)

    def _process(self, batch: Sequence[Entry], *, strict: bool) -> list[Finding]:
        """``strict``: raise a decision's failure; else log it and go on with the next."""
        settings = self.settings()
        if not settings.monitor_enabled:
            return []
        queries = [entry for entry in batch if entry.action == QUERY_ACTION]
        if not queries:
            return []
        known = self._dataset_ids()
        events = [
            event
            for entry in queries
            if (event := event_from_entry(entry_fields(entry), datasets=known)) is not None
        ]
        if not events:
            return []
        plan = self._catch_up(events, known)
        thresholds = thresholds_of(settings)
        budgets = self._budgets_of(events)
        still_open = _OpenAlerts(self)
        found: list[Finding] = []
        for event in events:
            taken, evaluated = plan[event.operator].pop(0)
            try:
                history = self._histories[event.operator]
                for earlier in taken:
                    history.append(earlier)
                if not evaluated:
                    continue
                index = history.append(event)
                if len(history.events) > KEEP:
                    history.trim(KEEP // 2)
                    index = len(history.events) - 1
                budget = (
                    {}
                    if event.dataset is None
                    else budgets.get((event.operator, event.dataset), {})
                )
                findings = evaluate(history, index, thresholds, budget)
                for finding in findings:
                    self._raise(finding, still_open)
                found.extend(findings)
            except Exception:
                if strict:
                    raise
                log.exception("the risk monitor could not evaluate a decision")
        return found

    def _catch_up(self, events: Sequence[Event], known: Sequence[str]) -> dict[str, list[Step]]:
        """Read what each operator's history lacks (one read per operator; two at its
        first sight; none when its queued seqs run on from the history's with no gap);
        each operator's steps, in queue order (``catchup.steps``)."""
        queued: dict[str, list[Event]] = {}
        for event in events:
            queued.setdefault(event.operator, []).append(event)
        plan: dict[str, list[Step]] = {}
        with ExitStack() as stack:
            opened: list[sa.Connection] = []

            def store() -> sa.Connection:  # one read transaction for the batch, if any
                if not opened:
                    opened.append(stack.enter_context(self.platform.audit.store.reading()).conn)
                return opened[0]

            for operator, mine in queued.items():
                history = self._histories.get(operator)
                if history is None:
                    history = self._histories[operator] = History(operator)
                    since = datetime.fromtimestamp(time.time() - 8 * DAY, UTC).strftime(
                        "%Y-%m-%dT%H:%M:%S.000000Z"
                    )
                    for event in read_first(store(), operator, mine[0].seq, since, known):
                        history.append(event)
                seqs = {e.seq for e in mine}
                stored = []
                if _may_lack(history.last_seq, seqs):
                    stored = read_since(store(), operator, history.last_seq, max(seqs), seqs, known)
                plan[operator] = steps(history.last_seq, mine, stored)
        return plan

    def _dataset_ids(self) -> tuple[str, ...]:
        read_at, ids = self._datasets
        if time.monotonic() - read_at > 30:
            with self.platform.engine.connect() as conn:
                ids = tuple(r[0] for r in conn.execute(sa.select(datasets.c.id)))
            self._datasets = (time.monotonic(), ids)
        return ids

    def _budgets_of(self, events: Iterable[Event]) -> dict[tuple[str, str], Mapping[str, Budget]]:
        """The grants' budgets of the (operator, dataset) pairs that spent ε in ``events``,
        each read again at most every 30 s (one connection for the batch)."""
        wanted = {(e.operator, e.dataset) for e in events if e.epsilon_spent > 0 and e.dataset}
        clock = time.monotonic()
        stale: dict[str, list[str]] = {}
        for operator, dataset in wanted:
            if clock - self._budgets.get((operator, dataset), (0.0, None))[0] > 30:
                stale.setdefault(operator, []).append(dataset)
        if stale:
            with self.platform.engine.connect() as conn:
                for operator, names in stale.items():
                    found = grant_store.grants_for(conn, operator, names)
                    for dataset in names:
                        budget = None
                        for grant in found.get(dataset, []):
                            if grant.status is GrantStatus.ACTIVE and grant.epsilon_total:
                                budget = Budget(
                                    grant.epsilon_total,
                                    grant.valid_from.timestamp(),
                                    grant.valid_until.timestamp(),
                                )
                        self._budgets[(operator, dataset)] = (time.monotonic(), budget)
        out: dict[tuple[str, str], Mapping[str, Budget]] = {}
        for key in wanted:
            budget = self._budgets[key][1]
            out[key] = {} if budget is None else {key[1]: budget}
        return out

    def _raise(self, finding: Finding, still_open: _OpenAlerts) -> None:
        """Record a finding, unless this process recorded one of its kind, no less severe,
        within ``RECENT_S`` (a burst adds its evidence once a minute, not once a query)."""
        key = f"{finding.detector}|{finding.operator}|{finding.dataset or ''}"
        rank, clock = severity_rank(finding.severity), time.monotonic()
        last = self._recent.get(key)
        if last is not None and last[0] >= rank and clock - last[1] < RECENT_S:
            if last[2] and still_open(last[2]):  # a read per batch, not a write
                return
        now = datetime.now(UTC)
        done: list[dict[str, Any]] = []
        with self.platform.engine.begin() as conn:
            change = record_finding(conn, finding, now)
            self._recent[key] = (rank, clock, change.alert.get("id", ""))
            if change.alert.get("id"):
                still_open.wrote(change.alert["id"])
            if change.kind in ("updated", "ignored"):
                return
            record_change(self.platform, conn, change, finding)
            alert = change.alert
            if alert["severity"] == "info":
                return
            done = apply_responses(conn, alert, now)
            if done:
                set_responses(conn, alert["id"], [*alert.get("responses", []), *done])
                record_monitor_act(self.platform, alert, "alert.respond", {"responses": done})
        if done:
            log.warning("alert %s: %s applied", alert["id"], ", ".join(d["action"] for d in done))


def _may_lack(last_seq: int, seqs: set[int]) -> bool:
    """Whether the store may hold entries of the operator that neither its history (up
    to ``last_seq``) nor its queued ``seqs`` have: not when no queued seq is beyond the
    next one, nor when the queued seqs beyond ``last_seq`` run on from it with no gap."""
    top = max(seqs)
    if top <= last_seq + 1:
        return False
    return sum(1 for seq in seqs if seq > last_seq) != top - last_seq


class _OpenAlerts:
    """Which of the monitor's recent alerts are still open, for one batch: read once, at
    the first question, for every alert that can be asked about; then kept up to date
    with the batch's own writes (an alert recorded for one decision is open for the next)."""

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor
        self._open: dict[str, bool] | None = None

    def __call__(self, alert_id: str) -> bool:
        if self._open is None:
            clock = time.monotonic()
            ids = sorted(
                {
                    last[2]
                    for last in self._monitor._recent.values()
                    if last[2] and clock - last[1] < RECENT_S
                }
            )
            with self._monitor.platform.engine.connect() as conn:
                states = {row[0]: row[1] for row in conn.execute(_STATES, {"ids": ids})}
            self._open = {i: states.get(i) not in (None, "resolved") for i in ids}
        return self._open.get(alert_id, False)

    def wrote(self, alert_id: str) -> None:
        """The batch recorded a finding on ``alert_id`` (opened or added to: not resolved)."""
        if self._open is not None:
            self._open[alert_id] = True
