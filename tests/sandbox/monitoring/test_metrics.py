"""The shared figures behind /metrics: rule extraction, the tally, the control-plane counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import AuditTrail, EntryDraft, KeyRing
from audit.entry import seal
from sandbox.core.db import metadata, open_control_db
from sandbox.jobs.states import JobState
from sandbox.jobs.tables import jobs
from sandbox.monitoring.alerts import record_finding
from sandbox.monitoring.detectors import Finding
from sandbox.monitoring.metrics import (
    EMPTY,
    TrailTally,
    alerts_by_severity,
    checkpoints,
    jobs_by_state,
    label_safe,
    rule_of,
    shared_figures,
    tally,
)
from sandbox.monitoring.tables import alerts

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
TRICKY = st.sampled_from(['","prev":"', ',"rule":"x"', '"}', "\\", "规则", '","seq":1,"'])
TEXT = st.one_of(st.text(max_size=30), TRICKY)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def draft(rule: str, details: dict[str, Any], decision: str = "deny") -> EntryDraft:
    return EntryDraft(
        actor="op-x",
        role="operator",
        action="dataset.query",
        target="job:1",
        dataset=None,
        decision=decision,
        rule=rule,
        request_id='req","rule":"fake',
        client="10.0.0.1",
        details=details,
    )


@settings(max_examples=200, deadline=None)
@given(
    rule=st.text(min_size=1, max_size=40),
    details=st.dictionaries(TEXT, JSONISH, max_size=4),
    seq=st.integers(0, 2**40),
)
def test_rule_of_reads_the_top_level_rule(rule: str, details: dict[str, Any], seq: int) -> None:
    """Whatever the details hold (quotes, a nested ``rule``, ``"prev"`` text), the rule
    read from the tail is the entry's own."""
    canonical = seal(
        draft(rule, details).prepare(),
        seq=seq,
        time="2026-12-02T03:00:00.000000Z",
        prev=bytes(32),
    )
    assert rule_of(canonical) == json.loads(canonical)["rule"] == rule


def test_label_safe_keeps_rule_names_only() -> None:
    assert label_safe("guard.not_aggregated") == "guard.not_aggregated"
    assert label_safe("monitor.probing") == "monitor.probing"
    for text in ("SELECT 1", "guard.x'; --", "", None, "Rule", "a" * 81, "x\ny"):
        assert label_safe(text) == "other"


def test_tally_adds_rows_to_what_was_counted() -> None:
    deny = seal(draft("guard.k", {}).prepare(), seq=1, time="t", prev=bytes(32))
    odd = seal(draft("SELECT secret", {}).prepare(), seq=2, time="t", prev=bytes(32))
    first = tally(EMPTY, [(0, "dataset.query", "allow", b"{}"), (1, "dataset.query", "deny", deny)])
    assert first.entries == {("dataset.query", "allow"): 1, ("dataset.query", "deny"): 1}
    assert first.refusals == {("dataset.query", "guard.k"): 1}
    assert first.next_seq == 2
    second = tally(first, [(2, "dataset.query", "deny", odd)])
    assert second.entries[("dataset.query", "deny")] == 2
    assert second.refusals == {("dataset.query", "guard.k"): 1, ("dataset.query", "other"): 1}
    assert second.next_seq == 3 and first.next_seq == 2  # pure: ``first`` unchanged


def test_trail_tally_reads_only_new_entries_and_matches_a_recount(tmp_path: Path) -> None:
    trail = AuditTrail.open(f"sqlite:///{tmp_path / 'audit.db'}", KeyRing(tmp_path / "keys"))
    try:
        rules = ["guard.k", "grant.none", "guard.k"]
        for i, rule in enumerate(rules):
            trail.append(**_fields(draft(rule, {"n": i})))
        trail.append(**_fields(draft("grant.live", {}, decision="allow")))
        running = TrailTally(trail.store, chunk=2)  # chunks smaller than the trail
        counts = running.counts()
        assert counts.refusals == {
            ("dataset.query", "guard.k"): 2,
            ("dataset.query", "grant.none"): 1,
        }
        assert counts.entries == {("dataset.query", "deny"): 3, ("dataset.query", "allow"): 1}
        trail.append(**_fields(draft("guard.k", {})))
        later = running.counts()
        assert later.refusals[("dataset.query", "guard.k")] == 3
        assert later == TrailTally(trail.store).counts()  # a fresh process counts the same
    finally:
        trail.close()


def _fields(d: EntryDraft) -> dict[str, Any]:
    return {
        name: getattr(d, name)
        for name in (
            "actor",
            "role",
            "action",
            "target",
            "dataset",
            "decision",
            "rule",
            "request_id",
            "client",
        )
    } | {"details": dict(d.details)}


def test_control_plane_counts(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'control.db'}")
    metadata.create_all(engine, tables=[jobs, alerts, metadata.tables["datasets"]])
    stamp = "2026-12-02T03:00:00.000000Z"
    states = [s.value for s in JobState]
    with engine.begin() as conn:
        for i, state in enumerate(["queued", "queued", "running", "succeeded"]):
            conn.execute(
                sa.insert(jobs).values(
                    id=f"j{i}",
                    operator="op",
                    state=state,
                    sql="-",
                    format="json",
                    created_at=stamp,
                    datasets=[],
                    review_datasets=[],
                    reviews=[],
                )
            )
        record_finding(conn, Finding("probing", "warning", "op-a", None, (1,), "-"), NOW)
        record_finding(conn, Finding("volume", "high", "op-b", None, (2,), "-"), NOW)
        gone = record_finding(conn, Finding("repeated", "high", "op-c", None, (3,), "-"), NOW)
        conn.execute(
            sa.update(alerts).where(alerts.c.id == gone.alert["id"]).values(state="resolved")
        )
        counted = jobs_by_state(conn, states)
        by_severity = alerts_by_severity(conn)
    assert counted == {**dict.fromkeys(states, 0), "queued": 2, "running": 1, "succeeded": 1}
    assert by_severity[("warning", "open")] == 1 and by_severity[("high", "open")] == 1
    assert sum(by_severity.values()) == 2  # the resolved one is not counted
    assert by_severity[("info", "acknowledged")] == 0


def test_a_new_process_resumes_from_the_shared_checkpoint(tmp_path: Path) -> None:
    """Counts checkpointed by one process let the next start there, and agree with a
    full recount; a checkpoint beyond the trail (another trail) is not trusted."""
    trail = AuditTrail.open(f"sqlite:///{tmp_path / 'audit.db'}", KeyRing(tmp_path / "keys"))
    control = sa.create_engine(f"sqlite:///{tmp_path / 'control.db'}")
    try:
        for i in range(5):
            trail.append(**_fields(draft("guard.k" if i % 2 else "grant.none", {"n": i})))
        first = TrailTally(trail.store, control, checkpoint_every=3)
        assert first.counts().next_seq == 5
        with control.connect() as conn:
            saved = conn.execute(sa.select(checkpoints.c.next_seq)).scalar_one()
        assert saved == 5
        trail.append(**_fields(draft("guard.k", {})))
        resumed = TrailTally(trail.store, control, chunk=1)
        assert resumed.counts() == TrailTally(trail.store).counts()
        with control.begin() as conn:  # a marked checkpoint: a new tally starts from it
            marked = {"entries": [["marker", "allow", 7]], "refusals": []}
            conn.execute(sa.update(checkpoints).values(next_seq=5, counts=marked))
        started = TrailTally(trail.store, control).counts()
        assert started.entries == {("marker", "allow"): 7, ("dataset.query", "deny"): 1}
        with control.begin() as conn:  # a checkpoint of a longer trail than this one
            conn.execute(sa.update(checkpoints).values(next_seq=99))
        assert TrailTally(trail.store, control).counts() == TrailTally(trail.store).counts()
    finally:
        trail.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database holding the audit store and the control plane, as hosts share it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_two_hosts_on_one_database_report_the_same_figures(shared_url: str, tmp_path: Path) -> None:
    """Host A counts and checkpoints; entries and a job arrive; host B starts from the
    checkpoint: both report the same shared figures (the SQL runs on SQLite and PostgreSQL)."""
    keys = KeyRing(tmp_path / "keys")
    trail = AuditTrail.open(shared_url, keys)
    control = open_control_db(shared_url)
    other_trail = AuditTrail.open(shared_url, keys)
    other_control = open_control_db(shared_url)
    states = [s.value for s in JobState]
    try:
        for i in range(4):
            trail.append(**_fields(draft("guard.k" if i % 2 else "grant.none", {"n": i})))
        host_a = TrailTally(trail.store, control, checkpoint_every=2)
        before = shared_figures(host_a, control, states)
        assert before.trail.next_seq == 4 and before.jobs["queued"] == 0
        other_trail.append(**_fields(draft("guard.k", {})))
        with other_control.begin() as conn:
            conn.execute(
                sa.insert(jobs).values(
                    id="j1",
                    operator="op",
                    state="queued",
                    sql="-",
                    format="json",
                    created_at="2026-12-02T03:00:00.000000Z",
                    datasets=[],
                    review_datasets=[],
                    reviews=[],
                )
            )
        host_b = TrailTally(other_trail.store, other_control)
        a, b = (
            shared_figures(host_a, control, states),
            shared_figures(host_b, other_control, states),
        )
        assert a == b
        assert a.trail.refusals[("dataset.query", "guard.k")] == 3 and a.jobs["queued"] == 1
    finally:
        trail.close()
        other_trail.close()
        control.dispose()
        other_control.dispose()
