"""No exact value leaves without a recorded review (issue 14), on every route.

A live server on the demo deployment: op-bank's health grant is ``reviewed``, op-insurer's
is ``dp``.  Under the reviewed grant, the client's query (a job it waits for), explain, a
job (its status, metadata, result download, receipt) and the release cache give nothing
data-dependent until the bureau's approval is recorded; then the reviewed table is what
leaves.  Under the dp grant, every released number is noised: two runs that differ only by
an alias (the cache does not answer the second) differ, and neither is the exact table.
Last line: a grant row that somehow reads ``dp`` without a budget is refused, not
released exact (``release.exact_unreviewed``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sandbox.core.errors import Conflict, SandboxError
from tests.api.conftest import LiveServer, served

SQL = "SELECT diagnosis_code, count(*) AS n FROM health.claims GROUP BY 1"
DATA_KEYS = {"rows", "groups_suppressed", "result_sha256", "epsilon_spent", "cached"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with served(tmp_path_factory.mktemp("noexact"), {"SANDBOX_JOB_WORKERS": "2"}) as server:
        yield server


def _exact(live: LiveServer) -> dict[str, int]:
    """The exact counts, straight from the enclave file (what must not leave unreviewed)."""

    from sandbox.core.home_keys import open_home_keyring
    from sandbox.core.settings import Settings
    from sandbox.enclave.encrypted import open_connection

    settings = Settings(home=live.home)
    keys = open_home_keyring(settings)  # the enclave is encrypted: open it with its key
    key = None if keys is None else keys.active("enclave").key
    con = open_connection(settings.enclave_path, read_only=True, config={}, key=key)
    try:
        rows = con.sql(
            'SELECT diagnosis_code, count(*) FROM "health"."claims" GROUP BY 1'
        ).fetchall()
    finally:
        con.close()
    return {str(code): int(n) for code, n in rows}


def _numbers(text: str, exact: dict[str, int]) -> set[int]:
    """Which exact counts (of groups of at least 10) appear as numbers in ``text``."""
    found = set()
    for value in {n for n in exact.values() if n >= 10}:
        if f": {value}," in text or f":{value}," in text or f", {value}]" in text:
            found.add(value)
    return found


def test_reviewed_grant_releases_nothing_before_review(live: LiveServer) -> None:
    exact = _exact(live)
    with live.client("op-bank") as bank:
        with pytest.raises(SandboxError) as raised:  # the client's query: a job held
            bank.query(SQL)
        assert raised.value.rule == "job.review"
        assert not _numbers(str(raised.value.message), exact)
        explained = bank.explain(SQL)
        assert explained["accepted"] and explained["review_required"]
        assert not DATA_KEYS & set(explained) and not _numbers(json.dumps(explained), exact)
        job = bank.submit(SQL, wait=True)
        assert job["state"] == "awaiting_review" and job["result"] is None
        assert job["meta"] is None, job["meta"]  # nothing of its run (sandbox/jobs/held_view.py)
        assert not _numbers(json.dumps(job), exact)
        for fetch in (bank.result, bank.receipt, bank.result_bytes):
            with pytest.raises(Conflict) as info:
                fetch(job["id"])
            assert info.value.rule == "job.no_result"
        listed = bank.jobs()
        assert not _numbers(json.dumps(listed), exact)
        # The same query again: held again (no cached release to repeat), still nothing.
        again = bank.submit(SQL, wait=True)
        assert again["state"] == "awaiting_review" and again["result"] is None
    with live.client("bureau-health") as bureau:
        shown = bureau.review(job["id"])
        held = {str(row["diagnosis_code"]): row["n"] for row in shown["result"]["rows"]}
        assert held and all(exact[code] == n for code, n in held.items()), "exact after review"
        assert bureau.approve(job["id"], "aggregates by diagnosis, k applied")["state"] == (
            "succeeded"
        )
    with live.client("op-bank") as bank:
        released = bank.result(job["id"]).to_pylist()
        assert {str(r["diagnosis_code"]): r["n"] for r in released} == held
        assert str(len(released)) in json.dumps(bank.receipt(job["id"]))
        # Released after review: a repeat comes from the cache (the reviewed release).
        repeat = bank.submit(SQL, wait=True)
        assert repeat["state"] == "succeeded" and repeat["meta"]["cached"]
    with live.client("auditor") as auditor:
        entries = auditor.audit_entries(actor="bureau-health", action="job.review")
        assert any(e["rule"] == "review.approved" for e in entries), "the review is recorded"


def _released(result: Any) -> dict[str, float]:
    table, _job = result
    return {str(r["diagnosis_code"]): r[list(r)[1]] for r in table.to_pylist()}


def test_dp_grant_noises_every_released_number(live: LiveServer) -> None:
    exact = _exact(live)
    with live.client("op-insurer") as insurer:
        first = _released(insurer.query(SQL))
        second = _released(insurer.query(SQL.replace("AS n", "AS m")))
        cached = _released(insurer.query(SQL))
    assert first and second
    assert cached == first, "a repeat is the first release (no new draw, no new spend)"
    assert any(first[c] != second[c] for c in set(first) & set(second)), "fresh noise"
    assert any(first[c] != exact[c] for c in first), "not the exact table"
    assert any(second[c] != exact[c] for c in second)


def test_a_dp_row_without_budget_is_refused_not_released_exact(live: LiveServer) -> None:
    from sandbox.core.policy_tables import grants
    from sandbox.core.settings import Settings

    with live.client("op-planner") as planner:
        (grant,) = planner.grants()
    engine = sa.create_engine(Settings(home=live.home).control_db_url)
    try:
        with engine.begin() as conn:  # as a hand edit of the control plane would
            conn.execute(
                sa.update(grants)
                .where(grants.c.id == grant["id"])
                .values(epsilon_total=None, epsilon_per_query=None, version=grants.c.version + 1)
            )
            conn.execute(sa.text("UPDATE policy_state SET version = version + 1"))
    finally:
        engine.dispose()
    with live.client("op-planner") as planner:
        with pytest.raises(SandboxError) as raised:
            planner.query("SELECT count(*) AS n FROM transport.trips")
        assert raised.value.rule == "release.exact_unreviewed"
    assert Path(live.home).exists()
