"""The jobs table's composite indexes, added in place to a database an older release made.

``ix_jobs_operator_started``: each operator's latest start, read by every claim (turn
order).  ``ix_jobs_operator_state``: an operator's queued and running jobs, counted by
every submission (``JobStore.active_count``), a range of the index rather than a scan of
the operator's history.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sandbox.core.db import open_control_db
from sandbox.jobs.store import JobState, JobStore

INDEXES = ("ix_jobs_operator_started", "ix_jobs_operator_state")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'control.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = open_control_db(url)
    yield engine
    engine.dispose()


def _indexes(engine: sa.Engine) -> set[str]:
    return {ix["name"] for ix in sa.inspect(engine).get_indexes("jobs") if ix["name"]}


def test_an_older_database_gains_the_indexes_and_turns_are_kept(engine: sa.Engine) -> None:
    JobStore(engine)
    with engine.begin() as conn:  # as a release before the indexes left it
        for index in INDEXES:
            conn.execute(sa.text(f"DROP INDEX {index}"))
    assert not set(INDEXES) & _indexes(engine)
    store = JobStore(engine)
    assert set(INDEXES) <= _indexes(engine)
    JobStore(engine)  # and opening it again changes nothing
    runner = store.runners.register()

    def submit(operator: str) -> str:
        return store.create(
            operator=operator, sql="SELECT 1", purpose=None, fmt="json", client=None
        ).id

    # op-a has a history and a backlog; op-b never ran, op-c ran before op-a's last start.
    for _ in range(3):
        job = store.claim_job(submit("op-c" if _ == 0 else "op-a"), runner)
        assert job is not None
        assert store.finish(job.id, JobState.SUCCEEDED)
    backlog = [submit("op-a") for _ in range(2)]
    later_b, later_c = submit("op-b"), submit("op-c")
    assert store.active_count("op-a") == 2 and store.active_count("op-c") == 1
    order = []
    while (job := store.claim(runner)) is not None:
        order.append(job.id)
    assert order == [later_b, later_c, backlog[0], backlog[1]]
    assert store.active_count("op-a") == 2, "running counts as active"


def test_counting_an_operator_s_active_jobs_searches_the_index(tmp_path: Path) -> None:
    engine = open_control_db(f"sqlite:///{tmp_path / 'control.db'}")
    store = JobStore(engine)
    for n in range(50):
        store.create(operator=f"op-{n % 5}", sql="SELECT 1", purpose=None, fmt="json", client=None)
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))  # as a long-lived home's statistics would
        plan = conn.execute(
            sa.text(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM jobs "
                "WHERE operator = 'op-1' AND state IN ('queued', 'running')"
            )
        ).all()
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING COVERING INDEX ix_jobs_operator_state" in details, details
    assert store.active_count("op-1") == 10
    engine.dispose()
