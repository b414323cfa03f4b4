"""A batch of decisions finds, records and audits what the same decisions one at a time do.

One demo home runs a session of queries as three operators (refusal bursts, a
differencing pair, variants of one query, ε spends), with no monitor attached; the
receipts are kept.  Copies of that home are then evaluated by a fresh monitor each:
one decision at a time, all as one batch, and in batches of five; each finds what the
detectors find on every earlier decision of the operator in the trail.  The queue is the
session's receipts with some left out (decisions another server process made: the
monitor reads them from the trail) and two pairs swapped (two request threads queue
in the other order).  Findings, alert rows and the monitor's audit entries must be
the same in every copy, but for alert ids and wall-clock stamps.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from audit import Entry, EntryFilter
from policies import grants as grant_store
from sandbox.core.db import datasets
from sandbox.core.errors import SandboxError
from sandbox.core.settings import Settings
from sandbox.monitoring import Budget, Finding, History, Monitor, evaluate, thresholds_of
from sandbox.monitoring.catchup import steps
from sandbox.monitoring.events import Event, entry_fields, event_from_entry
from sandbox.monitoring.tables import alerts, create_tables
from sandbox.platform import Platform
from sandbox.query.service import QueryService
from tests.conftest import build_deployment, copy_master_key

BASE = "SELECT count(*) AS n FROM health.claims WHERE gender = 'F'"


def _session(platform: Platform, tokens: dict[str, str]) -> list[bytes]:
    """Every query decision's entry, in the order recorded."""
    actors = {n: platform.authority.authenticate(t) for n, t in tokens.items()}
    service = QueryService(platform)
    receipts: list[bytes] = []
    service.observer = lambda receipt: receipts.append(receipt.entry)
    work = [("op-insurer", BASE), ("op-insurer", BASE + " AND NOT (diagnosis_code = 'J45')")]
    for i in range(24):
        work.append(("op-bank", "SELECT person_id, amount FROM health.claims"))
        work.append(("op-planner", f"SELECT count(*) AS n FROM transport.trips WHERE fare > {i}"))
        if i % 3 == 0:
            work.append(("op-insurer", f"{BASE} AND claim_amount > {10 * i}"))
    for who, sql in work:
        try:
            service.run(actors[who], sql, epsilon=0.3)
        except SandboxError:
            pass
    return receipts


def _queue(receipts: Sequence[bytes]) -> list[Entry]:
    entries = [Entry.from_bytes(raw) for i, raw in enumerate(receipts) if i % 7 != 3]
    for i in (10, 30):  # two decisions of different threads queued in the other order
        entries[i], entries[i + 1] = entries[i + 1], entries[i]
    return entries


def _expected(platform: Platform, queue: list[Entry]) -> list[Finding]:
    """The detectors on each queued decision over every earlier decision of its operator
    in the trail (a decision queued after a later one of its operator is not evaluated)."""
    budgets: dict[str, dict[str, Budget]] = {}
    with platform.engine.connect() as conn:
        known = [row[0] for row in conn.execute(sa.select(datasets.c.id))]
        for grant in grant_store.list_grants(conn):
            if grant.epsilon_total:
                budgets.setdefault(grant.operator, {})[grant.dataset] = Budget(
                    grant.epsilon_total, grant.valid_from.timestamp(), grant.valid_until.timestamp()
                )
    trail = [
        event
        for entry in platform.audit.entries(EntryFilter(action="dataset.query"), limit=10_000)
        if (event := event_from_entry(entry_fields(entry), datasets=known)) is not None
    ]
    found: list[Finding] = []
    last: dict[str, int] = {}
    for entry in queue:
        if entry.seq <= last.get(entry.actor, -1):
            continue
        last[entry.actor] = entry.seq
        history = History(entry.actor)
        for event in trail:
            if event.operator == entry.actor and event.seq <= entry.seq:
                index = history.append(event)
        mine = budgets.get(entry.actor, {})
        spent = history.events[index].epsilon_spent > 0
        found += evaluate(history, index, thresholds_of(platform.settings), mine if spent else {})
    return found


def _outcome(home: Path, feed: Callable[[Monitor, list[Entry]], list[Finding]], queue: list[Entry]):  # type: ignore[no-untyped-def]
    platform = Platform(Settings(home=home, threads=2))
    try:
        create_tables(platform.engine)
        expected = _expected(platform, queue)
        findings = feed(Monitor(platform, lambda: platform.settings), queue)
        assert findings == expected
        with platform.engine.connect() as conn:
            rows = conn.execute(sa.select(alerts).order_by(alerts.c.key, alerts.c.opened_at))
            kept = ("key", "severity", "state", "summary", "evidence", "responses", "domain")
            alert_rows = [{k: row._mapping[k] for k in kept} for row in rows]
        trail = [
            (e.seq, e.action, e.rule, e.dataset, e.decision, _without_id(e.details))
            for e in platform.audit.entries(EntryFilter(actor="monitor"), limit=10_000)
        ]
        return findings, alert_rows, trail
    finally:
        platform.close()


def _without_id(details: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in details.items() if k != "alert"}


def _one_by_one(monitor: Monitor, queue: list[Entry]) -> list[Finding]:
    return [f for entry in queue for f in monitor.process(entry)]


def _one_batch(monitor: Monitor, queue: list[Entry]) -> list[Finding]:
    return monitor.process_batch(queue)


def _batches_of_five(monitor: Monitor, queue: list[Entry]) -> list[Finding]:
    return [f for i in range(0, len(queue), 5) for f in monitor.process_batch(queue[i : i + 5])]


def test_a_batch_finds_records_and_audits_what_one_at_a_time_does(tmp_path: Path) -> None:
    platform, tokens = build_deployment(tmp_path / "session")
    try:
        receipts = _session(platform, tokens)
    finally:
        platform.close()
    queue = _queue(receipts)
    outcomes = []
    for name, feed in (("one", _one_by_one), ("all", _one_batch), ("five", _batches_of_five)):
        home = tmp_path / name
        shutil.copytree(tmp_path / "session", home)
        copy_master_key(tmp_path / "session", home)
        outcomes.append(_outcome(home, feed, queue))
    findings, alert_rows, trail = outcomes[0]
    detectors = {(f.detector, f.severity) for f in findings}
    # the session is worth comparing: several detectors, escalations, a response-free trail
    assert {("probing", "high"), ("differencing", "high")} <= detectors
    assert any(d == "repeated" for d, _ in detectors)
    assert {"alert.open", "alert.escalate"} <= {t[1] for t in trail}
    # a finding on most decisions, an audit entry on few: the once-a-minute rule held
    assert len(findings) > 2 * len(trail)
    for other in outcomes[1:]:
        assert other[0] == findings
        assert other[1] == alert_rows
        assert other[2] == trail


def _event(seq: int) -> Event:
    return Event(seq, float(seq), "op", None, True, "allow.grant")


def test_steps_take_stored_and_earlier_queued_decisions_first() -> None:
    queued = [_event(5), _event(9), _event(7), _event(9), _event(2)]
    stored = [_event(4), _event(6), _event(8)]
    plan = steps(3, queued, stored)
    assert [([e.seq for e in taken], evaluated) for taken, evaluated in plan] == [
        ([4], True),
        ([6, 7, 8], True),  # 7 is queued after 9: history only, as the store would give it
        ([], False),
        ([], False),  # 9 again: already in the history
        ([], False),  # 2: older than the history
    ]
