"""The per-decision read: a change committed anywhere is honoured by the very next decision.

On a SQLite file the prober skips re-reading the rows while ``PRAGMA data_version``
stands still (nothing committed since it last read them); these tests commit from
another process, another engine and a bare driver connection, and check the next
decision sees each change, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from policies import Actor, Decision
from policies.probe import Prober, watches_commits
from sandbox.core.db import open_control_db
from sandbox.core.policy_tables import bump_policy_version, policy_state

from .conftest import NOW, World

CLAIMS = "health.claims"
ROOT = Path(__file__).resolve().parents[2]

# Another process (a second API server, the CLI) acting on the same control database.
OTHER_PROCESS = """
import sys
from datetime import datetime

from policies import Actor, Administration, Authority, NullRecorder, UsagePart, record_usage
from policies.accounts import get_account
from policies.grants import get_grant
from sandbox.core.db import open_control_db

url, act, grant_id, now = sys.argv[1:5]
engine = open_control_db(url, create=False)
authority = Authority(engine, recorder=NullRecorder())
with engine.connect() as conn:
    bureau = Actor.of(get_account(conn, "bureau-health"))
if act == "revoke":
    Administration(authority).revoke_grant(bureau, grant_id, reason="another process")
elif act == "use":
    with engine.begin() as conn:
        grant = get_grant(conn, grant_id)
        record_usage(conn, [UsagePart(grant, 0)], now=datetime.fromisoformat(now))
authority.close()
engine.dispose()
"""


def other_process(w: World, act: str, grant_id: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, w.url, act, grant_id, NOW.isoformat()],
        check=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def ask(w: World, bank: Actor) -> Decision:
    return w.authority.decide(
        bank, "dataset.query", datasets=[CLAIMS], columns={CLAIMS: ["age", "gender"]}
    )


def test_a_revocation_committed_by_another_process_is_seen_by_the_next_decision(
    any_world: World,
) -> None:
    w = any_world
    bank = w.actor("op-bank")
    first = ask(w, bank)
    assert first.allowed and ask(w, bank).allowed  # the outcome is cached, the state read
    other_process(w, "revoke", first.grants[0].id)
    assert ask(w, bank).rule == "grant.revoked"


def test_usage_counted_by_another_process_is_seen_by_the_next_decision(
    any_world: World,
) -> None:
    w = any_world
    grant_id = w.grant_id("op-bank", CLAIMS)
    w.admin.narrow_grant(w.actor("bureau-health"), grant_id, queries_per_day=1)
    bank = w.actor("op-bank")
    for _ in range(2):  # the counters of a cached outcome, read (and kept) on every decision
        d = ask(w, bank)
        assert d.allowed and d.usage[grant_id].queries == 0
    other_process(w, "use", grant_id)
    assert ask(w, bank).rule == "quota.queries_per_day"


def test_a_bare_driver_commit_is_seen_by_the_next_decision(world: World) -> None:
    """No SQLAlchemy, no bump from our code paths: only the version row moves."""
    w = world
    bank = w.actor("op-bank")
    assert ask(w, bank).allowed and ask(w, bank).allowed
    database = sa.engine.make_url(w.url).database
    assert database is not None
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("UPDATE accounts SET frozen = 1 WHERE name = 'op-bank'")
        conn.execute("UPDATE policy_state SET version = version + 1 WHERE id = 1")
    finally:
        conn.close()
    assert ask(w, bank).rule == "operator.frozen"


def test_the_prober_reads_the_rows_only_after_a_commit(tmp_path: Path) -> None:
    engine = open_control_db(f"sqlite:///{tmp_path / 'control.db'}")
    statements: list[str] = []

    def trace(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(statements.append)

    sa.event.listen(engine, "connect", trace)
    engine.dispose()  # the connections creating the tables were made before the trace
    prober = Prober(engine, connections=1)
    try:
        assert prober.watching
        first = prober.read(("g1",), ("g2",), "2026-11-24")
        statements.clear()
        assert prober.read(("g1",), ("g2",), "2026-11-24") == first
        assert statements == ["PRAGMA data_version"]  # nothing committed: nothing re-read
        statements.clear()
        assert prober.read(("g3",), (), "2026-11-24").state == first.state
        assert len(statements) == 2  # counters it never read: read, with the state
        with engine.begin() as conn:
            version = bump_policy_version(conn)
        statements.clear()
        assert prober.read(("g1",), ("g2",), "2026-11-24").state[0] == version
        assert len(statements) == 2 and "policy_state" in statements[1]
    finally:
        prober.close()
        engine.dispose()


def test_the_prober_holds_no_snapshot_between_reads(tmp_path: Path) -> None:
    """A held connection left mid-statement would pin the WAL: no checkpoint could finish."""
    engine = open_control_db(f"sqlite:///{tmp_path / 'control.db'}")
    prober = Prober(engine, connections=1)
    try:
        for _ in range(2):  # a full read, then a data_version check alone
            prober.read(("g1",), ("g2",), "2026-11-24")
            with engine.begin() as conn:
                bump_policy_version(conn)
            with engine.connect() as conn:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
            assert busy == 0
            prober.read(("g1",), ("g2",), "2026-11-24")
    finally:
        prober.close()
        engine.dispose()


def test_the_prober_reads_every_time_where_commits_cannot_be_watched(tmp_path: Path) -> None:
    # One connection shared by every holder (in-memory SQLite): the writer's commit would
    # not move the prober's data_version, so the rows are read for each decision.
    memory = open_control_db("sqlite://")
    prober = Prober(memory)
    try:
        assert not watches_commits(memory) and not prober.watching
        before = prober.read().state
        with memory.begin() as conn:
            bump_policy_version(conn)
        assert prober.read().state[0] == before[0] + 1
    finally:
        prober.close()
        memory.dispose()
    shared = open_control_db(f"sqlite:///file:{tmp_path / 'uri.db'}?uri=true")
    server = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # not connected
    assert not watches_commits(shared) and not watches_commits(server)
    assert watches_commits(open_control_db(f"sqlite:///{tmp_path / 'file.db'}"))
    shared.dispose()


def test_a_closed_prober_reads_afresh_on_new_connections(tmp_path: Path) -> None:
    engine = open_control_db(f"sqlite:///{tmp_path / 'control.db'}")
    prober = Prober(engine)
    try:
        prober.read()
        prober.close()
        with engine.begin() as conn:
            conn.execute(sa.update(policy_state).values(version=policy_state.c.version + 5))
        assert prober.read().state == (5, 0, 5)
    finally:
        prober.close()
        engine.dispose()


@pytest.mark.parametrize(
    "changes",
    [
        {"target": "query:job-1"},
        {"allowed": False, "rule": "grant.revoked", "reason": "revoked", "grants": ()},
        {"budgets": {}, "usage": {}, "dataset_rows": {CLAIMS: 3}},
    ],
)
def test_amend_is_dataclasses_replace(changes: dict[str, Any]) -> None:
    decision = Decision(
        allowed=True,
        rule="allow.grant",
        reason="live grants cover the query",
        actor="op-bank",
        action="dataset.query",
        target="query:health.claims",
        policy="p, operator, *, dataset, query",
        datasets=(CLAIMS,),
    )
    amended = decision.amend(**changes)
    assert amended == dataclasses.replace(decision, **changes)
    assert vars(amended) == vars(dataclasses.replace(decision, **changes))
    assert decision.target == "query:health.claims"  # the original is untouched
    with pytest.raises(AssertionError):
        decision.amend(no_such_field=1)


def test_the_same_request_spelt_differently_decides_alike(world: World) -> None:
    """The outcome cache keys by the request as given: spellings are entries, not errors."""
    w = world
    bank = w.actor("op-bank")
    plain = ask(w, bank)
    for columns in ({CLAIMS: ("gender", "AGE")}, {CLAIMS: iter(["age", "gender", "age"])}):
        d = w.authority.decide(bank, "dataset.query", datasets=iter([CLAIMS]), columns=columns)
        assert (d.allowed, d.rule, d.grants, d.target) == (
            plain.allowed,
            plain.rule,
            plain.grants,
            plain.target,
        )
    job = w.authority.decide(bank, "dataset.query", "query:job-7", datasets=[CLAIMS])
    assert job.target == "query:job-7"
    again = w.authority.decide(bank, "dataset.query", "query:job-8", datasets=[CLAIMS])
    assert again.target == "query:job-8" and again.allowed
    # A query naming no job after one that did: its own target, never the cached job's.
    anonymous = w.authority.decide(bank, "dataset.query", None, datasets=[CLAIMS])
    assert anonymous.target == f"query:{CLAIMS}" and anonymous.allowed
    assert w.recorder.entries[-1]["target"] == f"query:{CLAIMS}"
