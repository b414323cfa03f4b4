"""The review flow: a ``reviewed`` grant holds results until its bureau approves.

op-bank's health grant is ``reviewed`` (the demo's): exact values, each release after the
bureau's recorded review.  A run is charged when the job runs, before it touches data (a
held, rejected, cancelled, stale or expired result paid for its run like any other, here
one query of the grant's daily quota; the release charges nothing more), and the release's
audit entry is durable before the result can be fetched.
"""

from __future__ import annotations

import pytest

from audit.keys import public_key_from_b64
from sandbox.core.errors import Conflict, Forbidden, NotFound
from sandbox.query.receipts import verify_receipt

BY_GENDER = "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1"


@pytest.fixture(scope="module")
def reviewed(server):
    """op-bank's health grant: reviewed."""
    with server.client("op-bank") as bank:
        (grant,) = [g for g in bank.grants() if g["dataset"] == "health.claims"]
    assert grant["release_mode"] == "reviewed"
    return server, grant["id"]


def remaining(server) -> float:
    """Queries left today on the grant: what a run is charged."""
    with server.client("op-bank") as bank:
        (grant,) = [g for g in bank.grants() if g["dataset"] == "health.claims"]
        return grant["usage"]["queries_remaining"]


def held(server, job_id: str) -> dict:
    """The job's held result as its bureau opens it (which waits for the run to end)."""
    with server.client("bureau-health") as bureau:
        return bureau.review(job_id)


def test_approval_releases_what_the_run_paid_for(reviewed) -> None:
    server, _grant_id = reviewed
    before = remaining(server)
    with server.client("op-bank") as bank:
        job = bank.submit(BY_GENDER, wait=True)
        assert job["state"] == "awaiting_review" and job["review_datasets"] == ["health.claims"]
        assert job["result"] is None
        # nothing that moves with the run before approval (sandbox/jobs/held_view.py)
        assert job["meta"] is None and job["started_at"] is None and job["progress"] == 0
        with pytest.raises(Conflict) as info:
            bank.result(job["id"])
        assert info.value.rule == "job.no_result"
    held(server, job["id"])
    assert remaining(server) == pytest.approx(before - 1.0), "the run paid before it ran"
    # A job that touches none of its domains answers as a job that does not exist.
    with server.client("bureau-market") as other, pytest.raises(NotFound) as info:
        other.review(job["id"])
    assert (info.value.rule, info.value.message) == ("job.unknown", f"no job {job['id']}")
    with server.client("bureau-health") as bureau:
        assert job["id"] in [j["id"] for j in bureau.reviews()]
        shown = bureau.review(job["id"])
        assert shown["result"]["columns"] == ["gender", "n"]
        approved = bureau.approve(job["id"], "aggregate by gender is fine")
        assert approved["state"] == "succeeded"
        assert approved["reviews"][0]["by"] == "bureau-health"
        assert job["id"] not in [j["id"] for j in bureau.reviews()]
    assert remaining(server) == pytest.approx(before - 1.0)
    with server.client("op-bank") as bank:
        table = bank.result(job["id"])
        assert table.to_pylist() == shown["result"]["rows"]
        keys = {
            k: public_key_from_b64(v)
            for k, v in bank.request("GET", "/v1/audit/keys").json().items()
        }
        body = verify_receipt(bank.receipt(job["id"]), keys)
        assert body["epsilon_spent"] == 0, "exact: no noise, no ε"
        # Asked again: the released answer from the cache, no new review, no new spend.
        again = bank.submit(BY_GENDER, wait=True)
        assert again["state"] == "succeeded" and again["meta"]["cached"]
    assert remaining(server) == pytest.approx(before - 1.0)
    with server.client("auditor") as auditor:
        trail = auditor.audit_entries(target=f"query:{job['id']}")
        assert [e["details"].get("held_for_review") for e in trail] == [True, None]
        assert trail[1]["details"]["review"][0]["verdict"] == "approve"
        review = auditor.audit_entries(action="job.review", target=f"job:{job['id']}")
        assert [(e["decision"], e["rule"]) for e in review] == [("allow", "review.approved")]
        assert review[0]["seq"] < trail[1]["seq"], "the approval is recorded before the release"


def test_rejection_refuses_and_refunds_nothing(reviewed) -> None:
    server, _ = reviewed
    before = remaining(server)
    with server.client("op-bank") as bank:
        job = bank.submit(
            "SELECT district, gender, count(*) AS n FROM health.claims GROUP BY 1, 2", wait=True
        )
    with server.client("bureau-health") as bureau:
        refused = bureau.reject(job["id"], "too fine for this purpose")
        assert (refused["state"], refused["rule"]) == ("refused", "review.rejected")
        with pytest.raises(Conflict) as info:
            bureau.approve(job["id"], "changed my mind")
        assert info.value.rule == "review.nothing_pending"
    assert remaining(server) == pytest.approx(before - 1.0), "the run paid; nothing more"


def test_stale_and_cancelled_results_are_never_released(reviewed) -> None:
    server, grant_id = reviewed
    before = remaining(server)
    with server.client("op-bank") as bank:
        stale = bank.submit("SELECT age, count(*) AS n FROM health.claims GROUP BY 1", wait=True)
        withdrawn = bank.submit(
            "SELECT diagnosis_code, count(*) AS n FROM health.claims GROUP BY 1", wait=True
        )
        held(server, withdrawn["id"])  # it ran (and paid) before it is withdrawn
        assert bank.cancel(withdrawn["id"])["state"] == "cancelled"
    with server.client("bureau-health") as bureau:
        bureau.narrow_grant(grant_id, k=15, reason="raise k while a result waits")
        outcome = bureau.approve(stale["id"], "looks fine")
        assert (outcome["state"], outcome["rule"]) == ("refused", "review.stale")
        with pytest.raises(Conflict):
            bureau.approve(withdrawn["id"], "too late")
    assert remaining(server) == pytest.approx(before - 2.0), "two runs paid; no release spent"
    with server.client("op-planner") as planner, pytest.raises(Forbidden):
        planner.reviews()


def test_a_job_whose_token_was_revoked_is_not_released_after_review(reviewed) -> None:
    """A release acts with the submitting token, as a run does: revoked, nothing leaves."""
    from sandbox.client import SandboxClient

    server, _grant_id = reviewed
    before = remaining(server)
    with server.client("op-bank") as bank:
        spare = bank.issue_own_token(label="revoked before approval")
    with SandboxClient(server.url, spare["token"], timeout=60) as holder:
        job = holder.submit(BY_GENDER + " ORDER BY 1", wait=True)
    assert job["state"] == "awaiting_review"
    with server.client("admin") as admin:
        admin.revoke_token(spare["id"])
    with server.client("bureau-health") as bureau:
        outcome = bureau.approve(job["id"], "looks fine")
    assert (outcome["state"], outcome["rule"]) == ("refused", "auth.token_revoked")
    assert remaining(server) == pytest.approx(before - 1.0), "the run paid; the release none"
