"""Through a real server: a reviewed run that fails on the data is held, and only the
reviewer's view says it failed, apart from any rows (``ReviewOut.failed``).

The oracle an outside review found (December 2026): a ``HAVING`` keeping more groups
than ``max_result_rows`` exactly when a total exceeds a guess was refused at once, or
else held.  Both now wait in ``awaiting_review``, alike to op-bank; a result made to
read like a failure (one row, ``run_failed``, its text varying with the data) is shown
as the rows it is, never as a failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.conftest import LiveServer, deployment

ORACLE = (
    "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 "
    "HAVING (SELECT count(*) FROM health.claims WHERE gender = 'F') > {x}"
)
LOOKALIKE = (
    "SELECT 'the released result has more than 3 rows' AS run_failed, count(*) AS n "
    "FROM health.claims"
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("held-failure") / "home"
    server = LiveServer(home, deployment(home), env={"SANDBOX_MAX_RESULT_ROWS": "3"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_only_the_reviewer_learns_that_the_run_failed(live: LiveServer) -> None:
    with live.client("op-bank") as bank:
        over = bank.submit(ORACLE.format(x=0), wait=True)  # 16 districts, over 3 rows
        under = bank.submit(ORACLE.format(x=10**9), wait=True)  # no district
        for job in (over, under):
            assert job["state"] == "awaiting_review" and job["result"] is None
            assert job.get("rule") is None and job.get("message") is None
        assert over["meta"] is None and under["meta"] is None  # held_view: nothing shown
        lookalike = bank.submit(LOOKALIKE, wait=True)
    with live.client("bureau-health") as bureau:
        shown = bureau.review(over["id"])
        assert shown["failed"] == {
            "rule": "enclave.max_result_rows",
            "message": "the released result has more than 3 rows",
        }
        assert shown["result"] == {"columns": [], "rows": []}
        assert bureau.review(under["id"])["failed"] is None
        fake = bureau.review(lookalike["id"])
        assert fake["failed"] is None and fake["result"]["columns"] == ["run_failed", "n"]
        ended = bureau.approve(over["id"], "the operator may know that it failed")
    assert ended["state"] == "refused" and ended["rule"] == "enclave.max_result_rows"
    with live.client("op-bank") as bank:
        seen = bank.job(over["id"])
        assert seen["message"] == "the released result has more than 3 rows"
