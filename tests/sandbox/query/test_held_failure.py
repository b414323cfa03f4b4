"""A reviewed run that fails on the data is held like a result: the failure is data.

An outside review (December 2026) read exact totals through op-bank's ``reviewed`` grant
with no review at all: a query whose ``HAVING`` keeps more groups than
``max_result_rows`` exactly when a total exceeds ``X`` was refused at once
(``enclave.max_result_rows``) or else held, so one job per bit bisected any total, and
the difference of two totals one person's diagnosis.  Now both runs wait in
``awaiting_review`` and look the same to the operator; the reviewer sees what failed.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from sandbox.core.errors import EnclaveError, Forbidden, QueryRefused, QueryTimeout, ResultTooLarge
from sandbox.core.settings import Settings
from sandbox.platform import Platform
from sandbox.query.held_failure import DATA_FAILURES, failure_table, held_failure
from sandbox.query.service import QueryService
from tests.conftest import build_deployment
from tests.reviewing import reviewing

ORACLE = (
    "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 "
    "HAVING (SELECT count(*) FROM health.claims WHERE gender = 'F') > {x}"
)
VISIBLE = {"request_id", "k", "epsilon", "datasets", "review_datasets", "columns", "query_sha256"}


@pytest.mark.parametrize(
    "error",
    [
        ResultTooLarge("the released result has more than 3 rows", rule="enclave.max_result_rows"),
        QueryTimeout("the query could not be completed within its limits", rule="enclave.limits"),
        EnclaveError("disclosure could not compute the release", rule="disclosure.arithmetic"),
        EnclaveError(
            "the query could not be run at its thresholds' values", rule="release.threshold"
        ),
        # a review-bound job refused or failed when its run started (held by its runner)
        Forbidden("the grant is suspended", rule="grant.suspended"),
        QueryRefused("its grants now give it another ε", rule="budget.changed"),
        EnclaveError("internal error", rule="job.internal"),
    ],
)
def test_a_failure_travels_as_its_held_table(error) -> None:  # type: ignore[no-untyped-def]
    from sandbox.jobs.desk import read_table
    from sandbox.jobs.runner import arrow_bytes

    table = read_table(arrow_bytes(failure_table(error)))  # as the job store keeps it
    assert table.num_columns == 0 and table.num_rows == 0
    again = held_failure(table)
    assert type(again) is type(error) and again is not None
    assert (again.rule, again.message) == (error.rule, error.message)
    assert set(DATA_FAILURES) == {
        "enclave.max_result_rows",
        "enclave.limits",
        "disclosure.arithmetic",
        "release.threshold",
    }


def test_a_result_that_looks_like_a_failure_is_no_failure() -> None:
    """Only the schema's metadata marks a failure, which no query's result carries: a
    one-row result saying "the released result has more than 3 rows" (whose text could
    vary with the data, as a review showed) is a result like any other."""
    assert (
        held_failure(pa.table({"run_failed": ["the released result has more than 3 rows"]})) is None
    )
    assert held_failure(pa.table({"district": ["D01"], "n": [12]})) is None
    assert held_failure(pa.table({})) is None


def test_a_reviewed_run_over_the_row_limit_is_held_and_looks_like_any_other(
    tmp_path: Path,
) -> None:
    platform, tokens = build_deployment(tmp_path / "home")
    platform.close()
    platform = Platform(Settings(home=tmp_path / "home", threads=2, max_result_rows=3))
    try:
        bank = platform.authority.authenticate(tokens["op-bank"])
        with platform.enclave.cursor() as cur:
            (women,) = cur.execute(
                "SELECT count(*) FROM health.claims WHERE gender = 'F'"
            ).fetchone()  # type: ignore[misc]
        with reviewing(platform, QueryService(platform)) as desk:
            over = desk.submit(bank, ORACLE.format(x=women - 1))  # 16 districts: over 3 rows
            under = desk.submit(bank, ORACLE.format(x=women))  # no group: an empty result
            for job in (over, under):
                assert job.state.value == "awaiting_review" and job.rule is None
                assert set(job.meta or {}) <= VISIBLE
            assert {
                k: v
                for k, v in (over.meta or {}).items()
                if k not in ("request_id", "query_sha256")
            } == {
                k: v
                for k, v in (under.meta or {}).items()
                if k not in ("request_id", "query_sha256")
            }
            reviewer = desk.bureau_of("health.claims")
            _, shown = desk.desk.review_show(reviewer, over.id, "r1", None)
            failure = held_failure(shown)
            assert shown.num_rows == 0 and failure is not None
            assert failure.message == "the released result has more than 3 rows"
            _, empty = desk.desk.review_show(reviewer, under.id, "r2", None)
            assert empty.num_rows == 0 and empty.column_names == ["district", "n"]
            ended = desk.approve(over, "the operator may know it failed")
            assert ended.state.value == "refused" and ended.rule == "enclave.max_result_rows"
            assert ended.message == "the released result has more than 3 rows"
        held = [
            e
            for e in platform.audit.entries(limit=1_000, newest_first=True)
            if e.request_id == over.id and e.details.get("held_for_review")
        ]
        assert held and held[0].details["failed"]["rule"] == "enclave.max_result_rows"
    finally:
        platform.close()


def test_an_approved_held_limits_failure_ends_failed_as_a_run_would(tmp_path: Path) -> None:
    """A timeout or the enclave's limits (408) ends ``failed``, as under a dp grant; the
    desk once ended it ``refused`` (status below 500)."""
    platform, tokens = build_deployment(tmp_path / "home")
    platform.close()
    platform = Platform(Settings(home=tmp_path / "home", threads=1, memory_limit="1MB"))
    try:
        bank = platform.authority.authenticate(tokens["op-bank"])
        with reviewing(platform, QueryService(platform)) as desk:
            job = desk.submit(bank, "SELECT district, count(*) AS n FROM health.claims GROUP BY 1")
            assert job.state.value == "awaiting_review"
            ended = desk.approve(job, "the operator may know it failed")
        assert ended.state.value == "failed" and ended.rule == "enclave.limits"
    finally:
        platform.close()


#: ``(a - b) * M``: a count difference scaled so that rounding to the grant's 2 decimals
#: overflows exactly when the difference exceeds ``t`` (an outside review read a cell of
#: 7 persons, withheld below k, by bisecting ``t``: December 2026).
ROUNDING = (
    "SELECT (count(*) FILTER (WHERE district = 'D01') - count(*) FILTER (WHERE "
    "district = 'D01' AND diagnosis_code <> 'G35')) * {m} AS v FROM health.claims"
)


def test_a_release_that_fails_in_rounding_is_held_like_any_other(tmp_path: Path) -> None:
    platform, tokens = build_deployment(tmp_path / "home")
    try:
        bank = platform.authority.authenticate(tokens["op-bank"])
        with platform.enclave.cursor() as cur:
            (cell,) = cur.execute(
                "SELECT count(*) FILTER (WHERE diagnosis_code = 'G35') FROM health.claims "
                "WHERE district = 'D01'"
            ).fetchone()  # type: ignore[misc]
        huge = 1.797e308 / 100
        with reviewing(platform, QueryService(platform)) as desk:
            # over the cell: rounding overflows; at the cell: it does not
            fails = desk.submit(bank, ROUNDING.format(m=huge / (cell - 0.5)))
            fine = desk.submit(bank, ROUNDING.format(m=huge / (cell + 0.5)))
            for job in (fails, fine):
                assert job.state.value == "awaiting_review" and job.rule is None
            reviewer = desk.bureau_of("health.claims")
            _, shown = desk.desk.review_show(reviewer, fails.id, "r1", None)
            failure = held_failure(shown)
            assert failure is not None and failure.rule == "disclosure.arithmetic"
            _, values = desk.desk.review_show(reviewer, fine.id, "r2", None)
            assert held_failure(values) is None and values.num_rows == 1
        # Under a budget the same failure is a refusal by rule, in the trail (no 500)
        insurer = platform.authority.authenticate(tokens["op-insurer"])
        service = QueryService(platform)
        with pytest.raises(EnclaveError) as info:
            service.run_job(insurer, "SELECT avg(claim_amount) * 3.6e303 AS v FROM health.claims")
        assert info.value.rule == "disclosure.arithmetic"
    finally:
        platform.close()


def test_a_withheld_refusal_travels_as_the_not_found_its_caller_saw() -> None:
    """``Withheld`` (a 404 that audits its real rule) takes more than a message to build:
    held, it is the ``NotFound`` its caller would have seen, never a crash of the review."""
    from sandbox.core.errors import NotFound, Withheld
    from sandbox.jobs.desk import read_table
    from sandbox.jobs.runner import arrow_bytes

    error = Withheld("no dataset x", rule="dataset.unknown", actual_rule="r", actual_reason="q")
    again = held_failure(read_table(arrow_bytes(failure_table(error))))
    assert type(again) is NotFound and (again.rule, again.message) == (
        "dataset.unknown",
        "no dataset x",
    )
