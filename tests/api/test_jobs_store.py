"""The job store, the rate limiter, result encodings and the shared enclave, without a server."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from sandbox.core.db import open_control_db
from sandbox.core.errors import Conflict, RateLimited
from sandbox.enclave.shared import JobSlot, SharedEnclave, job_slot
from sandbox.jobs.results import encode
from sandbox.jobs.store import JobState, JobStore, StoredResult
from sandbox.ratelimit import RateLimiter
from tests.api.conftest import held_job


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'control.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = open_control_db(url)
    yield JobStore(engine)
    engine.dispose()


def new_job(store: JobStore, operator: str = "op-a"):
    return store.create(operator=operator, sql="SELECT 1", purpose=None, fmt="json", client=None)


def test_transitions_are_conditional(store: JobStore) -> None:
    job = new_job(store)
    runner = store.runners.register()
    claimed = store.claim(runner)
    assert claimed is not None and claimed.id == job.id and claimed.state is JobState.RUNNING
    assert store.claim(runner) is None, "a job is claimed once"
    assert store.active_count("op-a") == 1
    result = StoredResult("released", b"x", None, 0, 0.0, 0)
    assert store.finish(job.id, JobState.SUCCEEDED, result=result, ttl_s=60)
    assert not store.finish(job.id, JobState.FAILED), "a finished job stays finished"
    with pytest.raises(Conflict) as info:
        store.cancel(job.id)
    assert info.value.rule == "job.final"
    assert store.expire(now=datetime.now(UTC) + timedelta(seconds=30)) == []
    assert store.expire(now=datetime.now(UTC) + timedelta(seconds=61)) == [job.id]
    expired = store.get(job.id)
    assert expired.state is JobState.EXPIRED and store.result(job.id) is None


def test_cancel_queued_running_and_held(store: JobStore) -> None:
    queued = new_job(store)
    assert store.cancel(queued.id).state is JobState.CANCELLED
    running = new_job(store)
    store.claim_job(running.id, store.runners.register())
    asked = store.cancel(running.id)
    assert asked.state is JobState.RUNNING and asked.cancel_requested
    assert store.cancel_requested([running.id]) == {running.id}
    held = new_job(store)
    store.claim_job(held.id, "rn_x")
    held_result = StoredResult("held", b"x", "k" * 64, 1, 1.0, 3)
    assert store.finish(held.id, JobState.AWAITING_REVIEW, result=held_result, ttl_s=60)
    assert store.cancel(held.id).state is JobState.CANCELLED
    assert store.result(held.id) is None, "a withdrawn held result is deleted"


def test_reviews_append_once_per_dataset(store: JobStore) -> None:
    job = new_job(store)
    store.claim_job(job.id, "rn_x")
    store.finish(
        job.id,
        JobState.AWAITING_REVIEW,
        review_datasets=["a.x", "b.y"],
        result=StoredResult("held", b"x", "k", 0, 0.0, 0),
    )
    store.add_review(job.id, {"dataset": "a.x", "verdict": "approve"})
    with pytest.raises(Conflict) as info:
        store.add_review(job.id, {"dataset": "a.x", "verdict": "approve"})
    assert info.value.rule == "review.duplicate"
    done = store.add_review(job.id, {"dataset": "b.y", "verdict": "approve"})
    assert [r["dataset"] for r in done.reviews] == ["a.x", "b.y"]
    assert store.begin_release(job.id, "rn_y") and not store.begin_release(job.id, "rn_z")


def test_each_write_returns_the_job_as_stored(store: JobStore) -> None:
    queued = new_job(store)
    assert queued == store.get(queued.id)
    assert queued.state is JobState.QUEUED and queued.started_at is None
    runner = store.runners.register()
    claimed = store.claim_job(queued.id, runner)
    assert claimed is not None and claimed == store.get(queued.id)
    assert claimed.state is JobState.RUNNING and claimed.runner == runner
    result = StoredResult("released", b"rows", None, 0, 0.0, 0)
    done = store.finish(
        queued.id, JobState.SUCCEEDED, meta={"rows": 1}, receipt={"r": 1}, result=result, ttl_s=60
    )
    assert done is not None and done == store.get(queued.id)
    assert (done.state, done.progress, done.meta) == (JobState.SUCCEEDED, 1.0, {"rows": 1})
    assert done.expires_at is not None and store.result(queued.id) == result
    assert store.finish(queued.id, JobState.FAILED) is None, "a finished job stays finished"
    assert store.get(queued.id) == done


def test_a_job_created_claimed_runs_at_once_and_is_an_orphan_if_its_runner_dies(
    store: JobStore,
) -> None:
    runner, other = store.runners.register(), store.runners.register()
    job = store.create(
        operator="op-a",
        sql="SELECT 1",
        purpose="p",
        fmt="csv",
        client="127.0.0.1",
        token_id="tok_1",
        datasets=["a.x"],
        epsilon=0.5,
        runner=runner,
    )
    assert job == store.get(job.id), "built from the insert, as a read would find it"
    assert (job.state, job.runner, job.started_at) == (JobState.RUNNING, runner, job.created_at)
    assert store.claim(other) is None, "never queued: no other runner takes it"
    assert store.claim_job(job.id, other) is None
    assert store.active_count("op-a") == 1
    asked = store.cancel(job.id)  # as for any running job: its runner is asked to stop it
    assert asked == store.get(job.id)
    assert asked.state is JobState.RUNNING and asked.cancel_requested
    store.runners.stop(runner)  # its process died before finishing it
    assert store.runners.dead(stale_after_s=30, me=other) == [runner]
    assert [j.id for j in store.orphaned([runner])] == [job.id]
    failed = store.finish(job.id, JobState.FAILED, rule="job.interrupted", message="stopped")
    assert failed is not None and failed == store.get(job.id)
    assert (failed.state, failed.rule) == (JobState.FAILED, "job.interrupted")
    assert store.active_count("op-a") == 0


def test_dead_runners_are_found(store: JobStore) -> None:
    me = store.runners.register()
    gone = store.runners.register()
    job = new_job(store)
    store.claim_job(job.id, gone)
    store.runners.stop(gone)
    assert store.runners.dead(stale_after_s=30, me=me) == [gone]
    assert [j.id for j in store.orphaned([gone])] == [job.id]
    store.finish(job.id, JobState.FAILED, rule="job.interrupted")
    store.runners.forget([gone])
    assert store.runners.dead(stale_after_s=30, me=me) == []


def test_rate_limiter_refills_and_says_when() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    for _ in range(3):
        limiter.check("t", 3, "token")
    with pytest.raises(RateLimited) as info:
        limiter.check("t", 3, "token")
    assert info.value.retry_after == 20 and info.value.refused == 1
    now[0] += 20.0
    limiter.check("t", 3, "token")
    limiter.blocked("other", 3, "addr")  # no bucket yet: not blocked, nothing spent


def test_every_format_round_trips() -> None:
    table = pa.table(
        {"district": ["D01", "D02", None], "n": [10, 20, 30], "mean": [1.5, 2.0, None]}
    )
    data = {fmt: b"".join(encode(table, fmt)) for fmt in ("json", "csv", "parquet", "arrow")}
    assert json.loads(data["json"]) == {
        "columns": ["district", "n", "mean"],
        "rows": table.to_pylist(),
    }
    assert pacsv.read_csv(io.BytesIO(data["csv"])).column("n").to_pylist() == [10, 20, 30]
    assert pq.read_table(io.BytesIO(data["parquet"])).equals(table)
    assert pa.ipc.open_stream(pa.BufferReader(data["arrow"])).read_all().equals(table)
    empty = table.slice(0, 0)
    assert json.loads(b"".join(encode(empty, "json")))["rows"] == []
    assert b"".join(encode(empty, "csv")).startswith(b'"district","n","mean"')


def test_json_has_no_value_json_cannot_hold() -> None:
    """A ratio of noisy sums over a noisy 0 is inf or NaN: null in JSON, which strict
    parsers accept (``json.dumps`` writes ``Infinity`` and ``NaN``, which they refuse)."""
    table = pa.table({"ratio": [1.5, float("inf"), float("-inf"), float("nan")]})
    text = b"".join(encode(table, "json")).decode()
    assert "Infinity" not in text and "NaN" not in text
    rows = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))["rows"]
    assert rows == [{"ratio": 1.5}, {"ratio": None}, {"ratio": None}, {"ratio": None}]


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sandbox.enclave.shared import SharedEnclave
    enclave = SharedEnclave(Path(sys.argv[1]), lock_timeout_s=20)
    with enclave.writer() as con:
        con.execute("CREATE OR REPLACE TABLE t AS SELECT 42 AS v")
    print("written")
    """
)


def test_a_writer_in_another_process_waits_for_readers_to_yield(tmp_path: Path) -> None:
    path = tmp_path / "enclave.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE t AS SELECT 1 AS v").close()
    reader = SharedEnclave(path, poll_s=0.05, progress_cursors=1)
    try:
        assert reader.query("SELECT v FROM t").to_pylist() == [{"v": 1}]
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", WRITER, str(path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0 and "written" in proc.stdout, proc.stderr
        assert time.monotonic() - started < 30
        assert reader.query("SELECT v FROM t").to_pylist() == [{"v": 42}]
    finally:
        reader.close()


def test_a_cancelled_slot_stops_its_query_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "enclave.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE t AS SELECT 1 AS v").close()
    enclave = SharedEnclave(path, progress_cursors=1)
    try:
        slot = JobSlot()
        slot.cancel(("job.interrupted", "the server shut down"))
        with job_slot(slot), pytest.raises(Conflict) as info:
            enclave.query("SELECT v FROM t")
        assert (info.value.rule, info.value.message) == ("job.interrupted", "the server shut down")
        assert enclave.query("SELECT v FROM t").num_rows == 1
    finally:
        enclave.close()


def test_a_held_job_expires_from_its_submission_even_before_its_run_ends(store: JobStore) -> None:
    """A job bound for review still queued or running ``held_ttl_s`` after submission
    expires then (a running one is asked to stop): expiring when its run ended would tell
    its operator when that was (held_view).  Other jobs are left to run."""

    first, second, shown = held_job(store), held_job(store), new_job(store).id
    runner = store.runners.register()
    assert store.claim(runner, held=True).id == first  # type: ignore[union-attr]
    assert store.claim(runner, held=True).id == second  # type: ignore[union-attr]
    assert store.claim(runner).id == shown  # type: ignore[union-attr]
    waiting = held_job(store)  # queued
    soon = datetime.now(UTC) + timedelta(seconds=30)
    assert store.expire_held(60, now=soon) == []
    later = datetime.now(UTC) + timedelta(seconds=61)
    expired = store.expire_held(60, now=later)
    assert {(j.id, j.state) for j in expired} == {
        (first, JobState.RUNNING),
        (second, JobState.RUNNING),
        (waiting, JobState.QUEUED),
    }
    for job_id in (first, second, waiting):
        job = store.get(job_id)
        assert (job.state, job.rule) == (JobState.EXPIRED, "job.expired")
    assert store.cancel_requested([first, second, waiting]) == {first, second}
    assert store.get(shown).state is JobState.RUNNING, "not bound for review: it runs on"
    assert store.expire(now=later) == [], "only results expire there"


def test_an_ended_held_job_looks_the_same_however_far_its_run_got(store: JobStore) -> None:
    """Expired from the queue, from a run still going, or from its held result, a
    review-bound job shows its operator the same fields (held_view.seen_by_operator):
    no start, no progress, no metadata or expiry, and ``cancel_requested`` only if its
    operator cancelled it (an expiry that stops a run sets it in the store)."""
    from sandbox.jobs.held_view import seen_by_operator

    runner = store.runners.register()
    kept, running, queued = held_job(store), held_job(store), held_job(store)
    store.claim(runner, held=True)
    store.finish(
        kept,
        JobState.AWAITING_REVIEW,
        meta={"k": 10},
        result=StoredResult("held", b"x", "key", None, 0.0, 5),
        ttl_s=60,
    )
    assert store.claim(runner, held=True).id == running  # type: ignore[union-attr]
    store.set_progress({running: 0.4})
    later = datetime.now(UTC) + timedelta(seconds=61)
    store.expire(now=later)
    store.expire_held(60, now=later)
    fields = ("state", "started_at", "progress", "expires_at", "meta", "cancel_requested", "rule")
    seen = [
        {f: getattr(seen_by_operator(store.get(j)), f) for f in fields}
        for j in (kept, running, queued)
    ]
    assert seen[0] == seen[1] == seen[2]
    assert seen[0]["state"] is JobState.EXPIRED and seen[0]["cancel_requested"] is False
    assert store.get(running).cancel_requested, "the store still asks its runner to stop"
