"""The claim's turn order reads each operator's latest start from an index, added in place."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from sandbox.core.db import open_control_db
from sandbox.jobs.store import JobState, JobStore

INDEX = "ix_jobs_operator_started"


def _indexes(engine: sa.Engine) -> set[str]:
    return {ix["name"] for ix in sa.inspect(engine).get_indexes("jobs") if ix["name"]}


def test_an_older_database_gains_the_index_and_turns_are_kept(tmp_path: Path) -> None:
    engine = open_control_db(f"sqlite:///{tmp_path / 'control.db'}")
    JobStore(engine)
    with engine.begin() as conn:  # as a release before the index left it
        conn.execute(sa.text(f"DROP INDEX {INDEX}"))
    assert INDEX not in _indexes(engine)
    store = JobStore(engine)
    assert INDEX in _indexes(engine)
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
    order = []
    while (job := store.claim(runner)) is not None:
        order.append(job.id)
    assert order == [later_b, later_c, backlog[0], backlog[1]]
    engine.dispose()
