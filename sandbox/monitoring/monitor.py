"""The monitor of one process: query decisions in, detectors run, alerts and responses out.

The query service hands every ``dataset.query`` audit receipt to :meth:`Monitor.observe`
(after the entry is durable); a single thread then brings that operator's history
up to date from the audit store (entries other server processes appended too),
runs the detectors on the new event, and records what they find: the alert row
and its audit entry in one control-plane transaction, and for a new or escalated
alert whose severity a response policy acts on, the response in that same
transaction (``sandbox.monitoring.responses``).  Off the query's path: a query
never waits for the detectors, and a detector failure is logged, never a refusal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from audit import Entry
from audit.schema import entries
from policies import GrantStatus
from policies import grants as grant_store
from sandbox.core.db import datasets
from sandbox.core.settings import Settings
from sandbox.platform import Platform

from .alerts import Change, record_finding, set_responses
from .detectors import DAY, Budget, Finding, History, Thresholds, evaluate, severity_rank
from .events import QUERY_ACTION, Event, event_from_entry
from .responses import MONITOR, apply_responses
from .tables import alerts

__all__ = ["Monitor", "entry_fields", "record_change", "thresholds_of"]

log = logging.getLogger("sandbox.monitoring")

KEEP = 50_000
"""Events kept per operator in memory (then the oldest half is forgotten)."""
RECENT_S = 60.0


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


def entry_fields(entry: Entry) -> dict[str, Any]:
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
            item = self._queue.get()
            try:
                if item is None:
                    return
                self.process(Entry.from_bytes(item))
            except Exception:  # logged: the monitor must never stop the platform
                log.exception("the risk monitor could not evaluate a decision")
            finally:
                self._queue.task_done()

    # -- evaluation ----------------------------------------------------------------------------

    def process(self, entry: Entry) -> list[Finding]:
        """Evaluate one decision: bring its operator's history up to it, detect, record."""
        settings = self.settings()
        if not settings.monitor_enabled or entry.action != QUERY_ACTION:
            return []
        event = event_from_entry(entry_fields(entry), datasets=self._dataset_ids())
        if event is None:
            return []
        history = self._history(event.operator, event.seq)
        if event.seq <= history.last_seq:
            return []
        index = history.append(event)
        if len(history.events) > KEEP:
            history.trim(KEEP // 2)
            index = len(history.events) - 1
        findings = evaluate(history, index, thresholds_of(settings), self._budget_of(event))
        for finding in findings:
            self._raise(finding)
        return findings

    def _history(self, operator: str, before: int) -> History:
        """The operator's history with every entry before ``before`` (other processes' too)."""
        history = self._histories.get(operator)
        conditions = [entries.c.actor == operator, entries.c.action == QUERY_ACTION]
        if history is None:
            history = self._histories[operator] = History(operator)
            since = datetime.fromtimestamp(time.time() - 8 * DAY, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.000000Z"
            )
            conditions.append(entries.c.time >= since)
            rows = self.platform.audit.store.select_entries(
                [*conditions, entries.c.seq < before], offset=0, limit=KEEP, newest_first=True
            )
            rows.reverse()
        else:
            rows = self.platform.audit.store.select_entries(
                [*conditions, entries.c.seq > history.last_seq, entries.c.seq < before],
                offset=0,
                limit=KEEP,
                newest_first=False,
            )
        known = self._dataset_ids()
        for raw in rows:
            event = event_from_entry(entry_fields(Entry.from_bytes(raw)), datasets=known)
            if event is not None:
                history.append(event)
        return history

    def _dataset_ids(self) -> tuple[str, ...]:
        read_at, ids = self._datasets
        if time.monotonic() - read_at > 30:
            with self.platform.engine.connect() as conn:
                ids = tuple(r[0] for r in conn.execute(sa.select(datasets.c.id)))
            self._datasets = (time.monotonic(), ids)
        return ids

    def _budget_of(self, event: Event) -> Mapping[str, Budget]:
        if event.epsilon_spent <= 0 or event.dataset is None:
            return {}
        key = (event.operator, event.dataset)
        read_at, budget = self._budgets.get(key, (0.0, None))
        if time.monotonic() - read_at > 30:
            with self.platform.engine.connect() as conn:
                found = grant_store.grants_for(conn, event.operator, [event.dataset])
            budget = None
            for grant in found.get(event.dataset, []):
                if grant.status is GrantStatus.ACTIVE and grant.epsilon_total:
                    budget = Budget(
                        grant.epsilon_total,
                        grant.valid_from.timestamp(),
                        grant.valid_until.timestamp(),
                    )
            self._budgets[key] = (time.monotonic(), budget)
        return {} if budget is None else {event.dataset: budget}

    def _still_open(self, alert_id: str) -> bool:
        with self.platform.engine.connect() as conn:
            state = conn.execute(
                sa.select(alerts.c.state).where(alerts.c.id == alert_id)
            ).scalar_one_or_none()
        return state is not None and state != "resolved"

    def _raise(self, finding: Finding) -> None:
        """Record a finding, unless this process recorded one of its kind, no less severe,
        within ``RECENT_S`` (a burst adds its evidence once a minute, not once a query)."""
        key = f"{finding.detector}|{finding.operator}|{finding.dataset or ''}"
        rank, clock = severity_rank(finding.severity), time.monotonic()
        last = self._recent.get(key)
        if last is not None and last[0] >= rank and clock - last[1] < RECENT_S:
            if last[2] and self._still_open(last[2]):  # a read, not a write
                return
        now = datetime.now(UTC)
        done: list[dict[str, Any]] = []
        with self.platform.engine.begin() as conn:
            change = record_finding(conn, finding, now)
            self._recent[key] = (rank, clock, change.alert.get("id", ""))
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
