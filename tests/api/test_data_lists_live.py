"""The negative list and important data against `sandbox serve` in its own process.

Each role does its own part over HTTP (a bureau lists its own data, the admin lists and
takes off and co-approves, operators query, apply and read metadata), and every refusal
is checked by its rule.  ``test_prohibited_column_cannot_be_reached`` tries every route
to a prohibited column: grant, narrowing, application, query in every clause kind, join,
totals and CTEs, ``*``, explain, job, catalog and dataset metadata.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import httpx
import pytest

from tests.api.conftest import LiveServer, served

CLAIMS = "health.claims"
SECRET = "health.claims.claim_amount"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with served(tmp_path_factory.mktemp("data-lists"), {"SANDBOX_JOB_WORKERS": "1"}) as server:
        yield server


def call(live: LiveServer, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {live.tokens[who]}", **kw.pop("headers", {})}
    return httpx.request(method, live.url + path, headers=headers, timeout=60, **kw)


def ok(live: LiveServer, who: str, method: str, path: str, **kw: Any) -> Any:
    response = call(live, who, method, path, **kw)
    assert response.status_code in (200, 201, 202), response.text
    return response.json()


def refused(live: LiveServer, who: str, method: str, path: str, rule: str, **kw: Any) -> int:
    response = call(live, who, method, path, **kw)
    assert response.status_code >= 400, response.text
    assert response.json()["rule"] == rule, response.text
    return response.status_code


def explain(live: LiveServer, who: str, sql: str, purpose: str | None = None) -> dict[str, Any]:
    return ok(live, who, "POST", "/v1/explain", json={"sql": sql, "purpose": purpose})  # type: ignore[no-any-return]


def grant_of(live: LiveServer, bureau: str, operator: str, dataset: str) -> dict[str, Any]:
    grants = ok(live, bureau, "GET", "/v1/grants")
    return next(g for g in grants if g["operator"] == operator and g["dataset"] == dataset)


def until() -> str:
    return (datetime.now(UTC) + timedelta(days=30)).isoformat()


CLAUSES = {
    "select": "SELECT age, sum(claim_amount) FROM health.claims GROUP BY age",
    "where": "SELECT age, count(*) FROM health.claims WHERE claim_amount > 100 GROUP BY age",
    "group by": "SELECT claim_amount // 1000 AS b, count(*) FROM health.claims GROUP BY 1",
    "having": "SELECT age, count(*) FROM health.claims GROUP BY age HAVING avg(claim_amount) > 1",
    "order by": "SELECT age, count(*) FROM health.claims GROUP BY age ORDER BY sum(claim_amount)",
    "cte": "WITH t AS (SELECT age, claim_amount FROM health.claims) "
    "SELECT age, count(*) FROM t GROUP BY age",
    "star": "WITH t AS (SELECT * FROM health.claims) SELECT age, count(*) FROM t GROUP BY age",
    "subquery": "SELECT age, count(*) FROM (SELECT age FROM health.claims "
    "WHERE claim_amount > 5) s GROUP BY age",
    "union": "SELECT age, count(*) FROM (SELECT age, claim_amount FROM health.claims UNION ALL "
    "SELECT age, claim_amount FROM health.claims) u GROUP BY age",
    "total": "SELECT age, count(*), (SELECT sum(claim_amount) FROM health.claims) AS total "
    "FROM health.claims GROUP BY age",
    "join on": "SELECT a.age, count(*) FROM health.claims a JOIN health.claims b "
    "ON a.claim_id = b.claim_id AND b.claim_amount > 1 GROUP BY 1",
}


def test_each_role_does_its_own_part(live: LiveServer) -> None:
    body = {"item": SECRET, "kind": "prohibited", "reason": "payment details"}
    assert refused(live, "op-insurer", "POST", "/v1/negative-list", "data_list.role", json=body)
    assert refused(live, "auditor", "POST", "/v1/negative-list", "data_list.role", json=body)
    assert (
        refused(live, "bureau-market", "POST", "/v1/negative-list", "data_list.domain", json=body)
        == 403
    )
    unknown = {**body, "item": "health.claims.no_such"}
    refused(live, "bureau-health", "POST", "/v1/negative-list", "data_list.column", json=unknown)
    # Before: the operator's dp grant answers a sum of the column.
    assert explain(live, "op-insurer", CLAUSES["select"])["accepted"] is True
    added = ok(live, "bureau-health", "POST", "/v1/negative-list", json=body)
    assert added["item"] == SECRET and added["kind"] == "prohibited"
    assert (
        refused(
            live, "bureau-health", "POST", "/v1/negative-list", "data_list.duplicate", json=body
        )
        == 409
    )
    # Every account reads the list, with why.
    listed = ok(live, "op-insurer", "GET", "/v1/negative-list")
    assert [(i["item"], i["reason"]) for i in listed] == [(SECRET, "payment details")]
    # The existing grant stops reaching it at once: the next query is refused.
    verdict = explain(live, "op-insurer", CLAUSES["select"])
    assert (verdict["accepted"], verdict["rule"]) == (False, "negative.prohibited")
    # Only the admin takes it off (tested last, in test_the_admin_takes_items_off).
    assert refused(
        live,
        "bureau-health",
        "POST",
        f"/v1/negative-list/{added['id']}/remove",
        "data_list.role",
        json={"reason": "mistake"},
    )


def test_prohibited_column_cannot_be_reached(live: LiveServer) -> None:
    if not ok(live, "admin", "GET", "/v1/negative-list", params={"dataset": CLAIMS}):
        ok(
            live,
            "bureau-health",
            "POST",
            "/v1/negative-list",
            json={"item": SECRET, "kind": "prohibited", "reason": "payment details"},
        )
    # Query: every clause kind, by explain and as a job.
    for clause, sql in CLAUSES.items():
        verdict = explain(live, "op-insurer", sql)
        assert verdict["rule"] == "negative.prohibited", (clause, verdict)
        assert SECRET in verdict["message"], clause
        job = call(
            live, "op-insurer", "POST", "/v1/jobs", params={"wait": "true"}, json={"sql": sql}
        )
        assert job.status_code == 422 and job.json()["rule"] == "negative.prohibited", clause
    # The rest of the dataset stays usable under the same grant.
    assert explain(live, "op-insurer", "SELECT age, count(*) FROM health.claims GROUP BY 1")[
        "accepted"
    ]
    # Grant, narrowing and application name it: refused.
    grant = {
        "dataset": CLAIMS,
        "operator": "op-planner",
        "purpose_code": "research",
        "purpose_text": "claims research",
        "valid_until": until(),
        "columns": ["age", "claim_amount"],
        "max_level": "L2",
    }
    assert refused(live, "bureau-health", "POST", "/v1/grants", "negative.prohibited", json=grant)
    insurer = grant_of(live, "bureau-health", "op-insurer", CLAIMS)
    narrow = {"columns": ["age", "gender", "diagnosis_code", "claim_amount"]}
    path = f"/v1/grants/{insurer['id']}/narrow"
    refused(live, "bureau-health", "POST", path, "negative.prohibited", json=narrow)
    ask = {
        "dataset": CLAIMS,
        "purpose_code": "research",
        "purpose_text": "claims research",
        "columns": ["age", "claim_amount"],
        "duration_days": 30,
        "use": "public_interest",
    }
    refused(live, "op-planner", "POST", "/v1/grant-applications", "negative.prohibited", json=ask)
    # Metadata: its name and that it is prohibited, nothing more.
    entry = ok(live, "op-insurer", "GET", f"/v1/catalog/{CLAIMS}")
    shown = next(c for c in entry["columns"] if c["name"] == "claim_amount")
    assert set(shown) == {"name", "negative_list", "note"}, shown
    mine = next(d for d in ok(live, "op-insurer", "GET", "/v1/datasets") if d["id"] == CLAIMS)
    assert set(mine["columns"]["claim_amount"]) == {"negative_list", "note"}
    assert "level" in mine["columns"]["age"]
    # A new version's application in publicity shows the public the column's flag only.
    toml = (resources.files("sandbox.enclave") / "demo" / "health.claims.toml").read_text()
    upload = ok(
        live,
        "bureau-health",
        "POST",
        "/v1/uploads",
        params={"domain": "health", "filename": "claims.csv"},
        content=b"claim_id\nc1\n",
        headers={"Content-Type": "application/octet-stream"},
    )
    body = {
        "classification": toml,
        "source": {"upload_id": upload["upload_id"]},
        "update_frequency": "monthly",
    }
    app = ok(live, "bureau-health", "POST", "/v1/registrations", json=body)
    ok(live, "admin", "POST", f"/v1/registrations/{app['id']}/accept", json={})
    review = {"verdict": "approve", "comment": "new version"}
    ok(live, "admin", "POST", f"/v1/registrations/{app['id']}/review", json=review)
    public = ok(live, "op-insurer", "GET", f"/v1/registrations/{app['id']}")
    assert public["classification"]["columns"]["claim_amount"] == {"negative_list": "prohibited"}
    assert "level" in public["classification"]["columns"]["age"]


def test_prohibited_dataset_and_join(live: LiveServer) -> None:
    sql = (
        "SELECT m.industry, sum(h.employees) FROM market.enterprises m "
        "JOIN hrss.social_insurance h ON m.credit_code = h.credit_code GROUP BY 1"
    )
    assert explain(live, "op-bank", sql)["accepted"] is True
    item = {"item": "hrss.social_insurance", "kind": "prohibited", "reason": "under review"}
    added = ok(live, "admin", "POST", "/v1/negative-list", json=item)
    for query in (sql, "SELECT count(*) FROM hrss.social_insurance"):
        verdict = explain(live, "op-bank", query)
        assert verdict["rule"] == "negative.prohibited", verdict
    entry = ok(live, "op-bank", "GET", "/v1/catalog/hrss.social_insurance")
    assert entry["columns"] == [] and entry["negative_list"] == "prohibited"
    assert "entity_key" not in entry and "description" not in entry
    ok(live, "admin", "POST", f"/v1/negative-list/{added['id']}/remove", json={"reason": "done"})
    assert explain(live, "op-bank", sql)["accepted"] is True


def test_important_data(live: LiveServer) -> None:
    market = "market.enterprises"
    sql = "SELECT industry, count(*) FROM market.enterprises GROUP BY industry"
    body = {"item": market, "reason": "enterprise registry: important data"}
    refused(live, "op-bank", "POST", "/v1/important-data", "data_list.role", json=body)
    refused(live, "bureau-health", "POST", "/v1/important-data", "data_list.domain", json=body)
    ok(live, "bureau-market", "POST", "/v1/important-data", json=body)
    assert [i["item"] for i in ok(live, "op-bank", "GET", "/v1/important-data")] == [market]
    # DP only: op-bank's reviewed grant is refused; a reviewed grant is never issued.
    assert explain(live, "op-bank", sql)["rule"] == "important.dp_only"
    grant = {
        "dataset": market,
        "operator": "op-planner",
        "purpose_code": "research",
        "purpose_text": "enterprise research",
        "valid_until": until(),
        "release_mode": "reviewed",
    }
    refused(live, "bureau-market", "POST", "/v1/grants", "important.dp_only", json=grant)
    bank = grant_of(live, "bureau-market", "op-bank", market)
    mode = {"mode": "dp", "epsilon_total": 5.0, "reason": "important data: dp only"}
    ok(live, "bureau-market", "POST", f"/v1/grants/{bank['id']}/release-mode", json=mode)
    back = {"mode": "reviewed", "reason": "exact figures"}
    path = f"/v1/grants/{bank['id']}/release-mode"
    refused(live, "bureau-market", "POST", path, "important.dp_only", json=back)
    # No joins outside its domain.
    join = (
        "SELECT m.industry, sum(h.employees) FROM market.enterprises m "
        "JOIN hrss.social_insurance h ON m.credit_code = h.credit_code GROUP BY 1"
    )
    assert explain(live, "op-bank", join)["rule"] == "important.cross_domain"
    # Every release held for the owning bureau's review, noised.
    verdict = explain(live, "op-bank", sql)
    assert verdict["accepted"] and verdict["review_required"] and verdict["epsilon"] > 0
    job = ok(live, "op-bank", "POST", "/v1/jobs", params={"wait": "true"}, json={"sql": sql})
    job = _settled(live, job["id"])
    assert job["state"] == "awaiting_review" and job["review_datasets"] == [market], job
    review = {"verdict": "approve", "reason": "aggregates by industry"}
    assert ok(live, "bureau-market", "POST", f"/v1/reviews/{job['id']}", json=review)["state"] == (
        "succeeded"
    )
    entry = ok(live, "op-bank", "GET", f"/v1/catalog/{market}")
    assert entry["important"] is True


def _settled(live: LiveServer, job_id: str) -> dict[str, Any]:
    for _ in range(120):
        job = ok(live, "op-bank", "GET", f"/v1/jobs/{job_id}")
        if job["state"] not in ("queued", "running"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not settle")


def test_strictly_limited_needs_both_approvals(live: LiveServer) -> None:
    item = {"item": "health.claims.diagnosis_code", "kind": "limited", "reason": "diagnoses"}
    ok(live, "admin", "POST", "/v1/negative-list", json=item)
    sql = "SELECT diagnosis_code, count(*) FROM health.claims GROUP BY 1"
    assert explain(live, "op-insurer", sql)["rule"] == "negative.limited"
    ask = {
        "dataset": CLAIMS,
        "purpose_code": "diagnosis-study",
        "purpose_text": "claims by diagnosis",
        "columns": ["age", "diagnosis_code"],
        "groupable": ["diagnosis_code"],
        "duration_days": 30,
        "use": "public_interest",
    }
    app = ok(live, "op-insurer", "POST", "/v1/grant-applications", json=ask)
    path = f"/v1/grant-applications/{app['id']}"
    assert refused(live, "bureau-health", "POST", f"{path}/approve", "negative.limited", json={})
    reason = {"reason": "public health study"}
    refused(live, "bureau-health", "POST", f"{path}/co-approve", "application.role", json=reason)
    co = ok(live, "admin", "POST", f"{path}/co-approve", json=reason)
    assert co["co_approval"]["items"] == ["diagnosis_code"]
    approved = ok(live, "bureau-health", "POST", f"{path}/approve", json={})
    assert approved["state"] == "approved" and approved["grant"]
    steps = [s["step"] for s in ok(live, "op-insurer", "GET", path)["steps"]]
    assert steps == ["apply", "co_approve", "approve"]
    verdict = explain(live, "op-insurer", sql, purpose="diagnosis-study")
    assert verdict["accepted"] is True, verdict
    # A direct grant of it, without the admin, is refused.
    grant = {
        "dataset": CLAIMS,
        "operator": "op-planner",
        "purpose_code": "research",
        "purpose_text": "claims research",
        "valid_until": until(),
        "columns": ["age", "diagnosis_code"],
        "max_level": "L3",
    }
    refused(live, "bureau-health", "POST", "/v1/grants", "negative.limited", json=grant)


def test_the_admin_takes_items_off(live: LiveServer) -> None:
    items = ok(live, "admin", "GET", "/v1/negative-list", params={"dataset": CLAIMS})
    secret = next(i for i in items if i["item"] == SECRET)
    path = f"/v1/negative-list/{secret['id']}/remove"
    ok(live, "admin", "POST", path, json={"reason": "the data protection review ended"})
    assert explain(live, "op-insurer", CLAUSES["select"])["accepted"] is True
    everything = ok(live, "auditor", "GET", "/v1/negative-list", params={"removed": "true"})
    gone = next(i for i in everything if i["id"] == secret["id"])
    assert gone["removed"]["by"] == "admin"
    refused(live, "admin", "POST", path, "data_list.unknown", json={"reason": "again"})
