"""Issue 17 parts 4 and 5 end to end over HTTP: data products and quality reports, each role
doing its own part and each refusal named.

The owning bureau publishes a product (the guard checks every parameter's samples);
an operator proposes one, the bureau rejects it; another operator subscribes for
commercial use, the bureau approves (a grant for the product's queries is issued),
the operator runs it with parameters (checked again, with the actual values, by the
guard), the run is metered at the product's price, the listing counts it; the
subscription's grant serves nothing but the product's template.  One live server
(uvicorn in a thread) for the module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.test_governance import Api, served_api

TEMPLATE = (
    "SELECT district, count(*) AS claims, avg(claim_amount) AS mean_amount "
    "FROM health.claims WHERE gender = :g AND age >= :min_age GROUP BY district"
)
PARAMS = {
    "g": {"type": "string", "domain": "health.claims.gender"},
    "min_age": {"type": "int", "min": 0, "max": 100},
}


def _offer(**over: Any) -> dict[str, Any]:
    body = {
        "dataset": "health.claims",
        "title": "Claims per district by gender",
        "description": "Claims and their mean amount per district, for one gender and ages.",
        "template": TEMPLATE,
        "params": PARAMS,
        "columns": ["district", "gender", "age", "claim_amount"],
        "groupable": ["gender", "age"],
        "price_per_run_fen": 250,
        "terms": "no re-identification; cite the bureau",
    }
    return {**body, **over}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with served_api(tmp_path_factory, "products") as served:
        yield served


def test_quality_report_over_http(api: Api) -> None:
    found = api.ok("op-planner", "GET", "/v1/datasets/health.claims/quality")
    report = found["report"]
    assert found["dataset"] == "health.claims" and report["version"] == found["current_version"]
    for dim in ("completeness", "validity", "uniqueness", "consistency", "timeliness"):
        assert dim in report
    assert report["validity"]["columns"]["gender"]["rule"] == "values"
    assert "id_number" not in report["completeness"]["columns"]  # L4: not evaluated at all
    assert report["timeliness"]["update_frequency"] == "monthly"
    assert [h["version"] for h in found["history"]] == [report["version"]]
    # Aggregates only: none of the column's declared values, no identifier.
    text = json.dumps(found)
    assert '"F"' not in text and '"M"' not in text and "D01" not in text
    catalog = api.ok("op-planner", "GET", "/v1/catalog/health.claims")
    assert catalog["quality"]["sha256"] == report["sha256"]
    api.refused("op-planner", "GET", "/v1/datasets/health.nothing/quality", 404, "dataset.unknown")
    assert any(e.details.get("quality") for e in api.entries("catalog.read"))


def test_publication_is_refused_with_named_rules(api: Api) -> None:
    post = "/v1/products"
    api.refused("op-bank", "POST", post, 403, "product.role", json=_offer())
    api.refused("admin", "POST", post, 403, "product.role", json=_offer())  # 管运分离
    api.refused("auditor", "POST", "/v1/products/proposals", 403, "product.role", json=_offer())
    api.refused("bureau-market", "POST", post, 403, "domain.outside", json=_offer())
    api.refused(
        "bureau-health",
        "POST",
        post,
        400,
        "product.template",
        json=_offer(template=TEMPLATE + " AND district = :d"),
    )
    bad_type = {**PARAMS, "min_age": {"type": "text"}}
    api.refused("bureau-health", "POST", post, 400, "product.params", json=_offer(params=bad_type))
    no_domain = {**PARAMS, "g": {"type": "string", "domain": "health.claims.district"}}
    api.refused(
        "bureau-health", "POST", post, 400, "product.param_domain", json=_offer(params=no_domain)
    )
    # The guard, for every parameter's samples: ages 0..95 sample 47, inside a band of 10.
    inside = {**PARAMS, "min_age": {"type": "int", "min": 0, "max": 95}}
    api.refused(
        "bureau-health", "POST", post, 422, "guard.generalisation", json=_offer(params=inside)
    )
    # A column the negative list prohibits is refused at publication.
    api.ok(
        "admin",
        "POST",
        "/v1/negative-list",
        json={"item": "health.claims.hospital_id", "kind": "prohibited", "reason": "test"},
    )
    api.refused(
        "bureau-health",
        "POST",
        post,
        403,
        "negative.prohibited",
        json=_offer(
            template="SELECT hospital_id, count(*) AS n FROM health.claims GROUP BY hospital_id",
            params={},
            columns=["hospital_id"],
            groupable=[],
        ),
    )
    assert any(e.decision == "deny" for e in api.entries("product.publish"))
    # Nor is any figure of it in the quality report or the catalog's summary.
    report = api.ok("op-bank", "GET", "/v1/datasets/health.claims/quality")["report"]
    assert "hospital_id" not in json.dumps(report) and report["withheld"]
    assert report["certified_score"] is None  # it counts the withheld column too
    columns = api.ok("op-bank", "GET", "/v1/catalog/health.claims")["columns"]
    shown = next(c for c in columns if c["name"] == "hospital_id")
    assert shown["negative_list"] == "prohibited" and "level" not in shown


def test_a_per_entity_template_is_checked_as_a_run_reads_it(api: Api) -> None:
    """A template over a per-entity table (docs/guard.md) is published: the guard reads
    it at publication as a run would; its inner WHERE is checked for every sample."""
    per_person = (
        "SELECT n, count(*) AS persons FROM (SELECT person_id, count(*) AS n "
        "FROM health.claims WHERE gender = :g GROUP BY person_id) GROUP BY n"
    )
    offer = _offer(
        title="Claims per person",
        template=per_person,
        params={"g": PARAMS["g"]},
        columns=["person_id", "gender"],
        groupable=["gender"],
    )
    product = api.ok("bureau-health", "POST", "/v1/products", json=offer)
    assert product["state"] == "published"
    # the entity key outside the product's columns (whose highest level, L2, is the
    # product's ceiling): refused as a run would be
    api.refused(
        "bureau-health",
        "POST",
        "/v1/products",
        422,
        "grant.column_ceiling",
        json={**offer, "title": "Claims per person again", "columns": ["gender"]},
    )


def test_totals_and_thresholds_in_a_template_are_checked_as_a_run_reads_them(
    api: Api,
) -> None:
    """A share of the total, and a count above the mean: published, as a subscriber's run
    answers them (the guard alone refused any subquery outside FROM at publication); a
    threshold on a banded column is refused with the run's rule."""
    for title, template in (
        (
            "Share of claims by gender",
            "SELECT gender, count(*) * 1.0 / (SELECT count(*) FROM health.claims) AS share "
            "FROM health.claims WHERE gender = :g GROUP BY gender",
        ),
        (
            "Claims above the mean amount",
            "SELECT gender, count(*) AS n FROM health.claims WHERE gender = :g AND "
            "claim_amount > (SELECT avg(claim_amount) FROM health.claims) GROUP BY gender",
        ),
    ):
        offer = _offer(
            title=title,
            template=template,
            params={"g": PARAMS["g"]},
            columns=["gender", "claim_amount"],
            groupable=["gender"],
        )
        assert api.ok("bureau-health", "POST", "/v1/products", json=offer)["state"] == ("published")
    banded = _offer(
        title="Claims at the mean age",
        template="SELECT gender, count(*) AS n FROM health.claims WHERE gender = :g AND "
        "age = (SELECT avg(age) FROM health.claims) GROUP BY gender",
        params={"g": PARAMS["g"]},
        columns=["gender", "age"],
        groupable=["gender", "age"],
    )
    api.refused("bureau-health", "POST", "/v1/products", 422, "guard.generalisation", json=banded)


def test_publication_takes_either_mode_and_the_runs_cost_limits(api: Api) -> None:
    """A median (answered only under a budget) is published; a template every run would
    refuse as too costly, or too costly to check, is refused at publication (reviews)."""
    median = _offer(
        title="Median claim by gender",
        template="SELECT gender, median(claim_amount) AS m FROM health.claims "
        "WHERE gender = :g GROUP BY gender",
        params={"g": PARAMS["g"]},
        columns=["gender", "claim_amount"],
        groupable=["gender"],
    )
    assert api.ok("bureau-health", "POST", "/v1/products", json=median)["state"] == "published"
    above = " AND ".join(
        f"claim_amount > (SELECT avg(claim_amount) + {i} FROM health.claims)" for i in range(70)
    )
    costly = _offer(
        title="Seventy thresholds",
        template=f"SELECT gender, count(*) AS n FROM health.claims WHERE gender = :g AND {above} "
        "GROUP BY gender",
        params={"g": PARAMS["g"]},
        columns=["gender", "claim_amount"],
        groupable=["gender"],
    )
    api.refused("bureau-health", "POST", "/v1/products", 422, "guard.cost", json=costly)
    many = {"type": "enum", "values": [f"D{i:02d}" for i in range(1, 17)]}
    heavy = _offer(
        title="Forty thresholds by district",
        template="SELECT gender, count(*) AS n FROM health.claims WHERE district = :d AND "
        + " AND ".join(
            f"claim_amount > (SELECT avg(claim_amount) + {i} FROM health.claims)" for i in range(40)
        )
        + " GROUP BY gender",
        params={"d": many},
        columns=["gender", "district", "claim_amount"],
        groupable=["gender"],
    )
    api.refused("bureau-health", "POST", "/v1/products", 422, "product.template", json=heavy)


def test_a_product_from_publication_to_a_metered_run(api: Api) -> None:
    product = api.ok("bureau-health", "POST", "/v1/products", json=_offer())
    pid = product["id"]
    assert product["state"] == "published" and product["usage"] == {"runs": 0, "subscribers": 0}
    assert product["params"]["g"]["values"] == ["F", "M"]  # the domain, resolved

    # op-planner holds no grant on health.claims: nothing to run yet.
    run = f"/v1/products/{pid}/run"
    api.refused("op-planner", "POST", run, 403, "product.not_subscribed", json={"params": {}})
    subscribe = f"/v1/products/{pid}/subscriptions"
    api.refused(
        "bureau-health",
        "POST",
        subscribe,
        403,
        "product.role",
        json={"use": "commercial", "purpose_text": "x", "duration_days": 30},
    )
    sub = api.ok(
        "op-planner",
        "POST",
        subscribe,
        json={"use": "commercial", "purpose_text": "district planning", "duration_days": 30},
    )
    assert sub["state"] == "requested" and sub["grant"] is None
    api.refused(
        "op-planner",
        "POST",
        subscribe,
        409,
        "product.subscribed",
        json={"use": "public_interest", "purpose_text": "again", "duration_days": 30},
    )
    decide = f"/v1/product-subscriptions/{sub['id']}"
    api.refused("op-planner", "POST", f"{decide}/approve", 403, "product.role")
    api.refused("bureau-market", "POST", f"{decide}/approve", 404, "product.unknown")
    api.refused("bureau-health", "POST", f"{decide}/reject", 400, "product.reason", json={})
    approved = api.ok("bureau-health", "POST", f"{decide}/approve")
    assert approved["state"] == "active" and approved["grant"]
    api.refused("bureau-health", "POST", f"{decide}/approve", 409, "product.state")
    grant = api.ok("op-planner", "GET", f"/v1/grants/{approved['grant']}")["grant"]
    assert grant["purpose"]["code"] == product["purpose_code"]
    assert grant["tariff"]["price_per_query_fen"] == 250 and grant["tariff"]["use"] == "commercial"

    # Parameters: typed, listed, in range; then the guard again with the actual values.
    for params, status, rule in (
        ({"g": "F"}, 400, "product.param_names"),
        ({"g": "F", "min_age": "30"}, 400, "product.param_type"),
        ({"g": "X", "min_age": 30}, 400, "product.param_value"),
        ({"g": "F", "min_age": 130}, 400, "product.param_range"),
        ({"g": "F' OR '1'='1", "min_age": 30}, 400, "product.param_value"),
        ({"g": "F", "min_age": 35}, 422, "guard.generalisation"),
    ):
        api.refused("op-planner", "POST", run, status, rule, json={"params": params})

    done = api.call(
        "op-planner", "POST", f"{run}?wait=true", json={"params": {"g": "F", "min_age": 30}}
    )
    assert done.status_code == 202, done.text
    job = done.json()["job"]
    assert job["state"] == "succeeded", job
    assert job["purpose"] == product["purpose_code"] and "'F'" in job["sql"]
    assert job["meta"]["epsilon_spent"] > 0  # the subscription's release mode: dp
    assert job["result"] is not None
    listed = {p["id"]: p for p in api.ok("op-insurer", "GET", "/v1/products")}
    assert listed[pid]["usage"] == {"runs": 1, "subscribers": 1}
    audited = api.ok("auditor", "GET", f"/v1/products/{pid}")  # the auditor sees it all
    assert [x["operator"] for x in audited["subscriptions"]] == ["op-planner"]
    usage = api.ok("op-planner", "GET", "/v1/usage", params={"operator": "op-planner"})
    charged = [u for u in usage if u["grant"] == approved["grant"]]
    assert charged and sum(u["query_fee_fen"] for u in charged) == 250

    # The subscription's grant serves the product's template only.
    free = {"sql": "SELECT district, count(*) AS n FROM health.claims GROUP BY district"}
    # (to an operator without another grant the dataset is answered as unknown)
    api.refused("op-planner", "POST", "/v1/jobs", 404, "dataset.unknown", json=free)
    api.refused(
        "op-planner",
        "POST",
        "/v1/jobs",
        422,
        "product.template",
        json={**free, "purpose": product["purpose_code"]},
    )
    assert any(e.decision == "allow" for e in api.entries("product.run"))
    assert any(e.rule == "product.not_subscribed" for e in api.entries("product.run"))


def test_an_operator_proposes_and_the_bureau_decides(api: Api) -> None:
    offer = _offer(title="Claims by district", price_per_run_fen=0)
    proposed = api.ok("op-insurer", "POST", "/v1/products/proposals", json=offer)
    pid = proposed["id"]
    assert proposed["state"] == "proposed"
    # Another operator does not see it; the bureau does.
    api.refused("op-planner", "GET", f"/v1/products/{pid}", 404, "product.unknown")
    assert pid in {p["id"] for p in api.ok("bureau-health", "GET", "/v1/products")}
    api.refused("op-insurer", "POST", f"/v1/products/{pid}/approve", 403, "product.role")
    api.refused(
        "op-insurer",
        "POST",
        f"/v1/products/{pid}/subscriptions",
        409,
        "product.state",
        json={"use": "public_interest", "purpose_text": "x", "duration_days": 5},
    )
    rejected = api.ok(
        "bureau-health", "POST", f"/v1/products/{pid}/reject", json={"reason": "overlaps"}
    )
    assert rejected["state"] == "rejected" and rejected["reason"] == "overlaps"
    api.refused("bureau-health", "POST", f"/v1/products/{pid}/approve", 409, "product.state")

    again = api.ok("op-insurer", "POST", "/v1/products/proposals", json=offer)["id"]
    assert api.ok("bureau-health", "POST", f"/v1/products/{again}/approve")["state"] == (
        "published"
    )
    api.ok("bureau-health", "POST", f"/v1/products/{again}/withdraw", json={"reason": "done"})
    api.refused(
        "op-insurer",
        "POST",
        f"/v1/products/{again}/run",
        409,
        "product.state",
        json={"params": {"g": "F", "min_age": 30}},
    )


def test_a_reviewed_public_interest_run_and_a_column_listed_afterwards(api: Api) -> None:
    offer = _offer(
        title="Claims per district (amounts)",
        template="SELECT district, count(*) AS claims, sum(claim_amount) AS amount "
        "FROM health.claims WHERE diagnosis_code = :dx GROUP BY district",
        params={"dx": {"type": "enum", "values": ["J18", "I10", "E11"]}},
        columns=["district", "diagnosis_code", "claim_amount"],
        groupable=["diagnosis_code"],
    )
    pid = api.ok("bureau-health", "POST", "/v1/products", json=offer)["id"]
    sub = api.ok(
        "op-bank",
        "POST",
        f"/v1/products/{pid}/subscriptions",
        json={
            "use": "public_interest",
            "release_mode": "reviewed",
            "purpose_text": "hospital capacity, public interest",
            "duration_days": 30,
        },
    )
    approved = api.ok("bureau-health", "POST", f"/v1/product-subscriptions/{sub['id']}/approve")
    grant = api.ok("op-bank", "GET", f"/v1/grants/{approved['grant']}")["grant"]
    assert grant["release_mode"] == "reviewed" and grant["tariff"]["use"] == "public_interest"

    ran = api.call(
        "op-bank", "POST", f"/v1/products/{pid}/run?wait=true", json={"params": {"dx": "I10"}}
    )
    job = ran.json()["job"]
    assert job["state"] == "awaiting_review", job  # exact values wait for the bureau
    released = api.ok(
        "bureau-health",
        "POST",
        f"/v1/reviews/{job['id']}",
        json={"verdict": "approve", "reason": "aggregates only"},
    )
    assert released["state"] == "succeeded"
    usage = api.ok("op-bank", "GET", "/v1/usage", params={"operator": "op-bank"})
    mine = [u for u in usage if u["grant"] == approved["grant"]]
    assert mine and sum(u["charge_fen"] for u in mine) == 0  # public interest: free

    # Listed afterwards, a column the product reads stops every run at the guard.
    api.ok(
        "bureau-health",
        "POST",
        "/v1/negative-list",
        json={"item": "health.claims.diagnosis_code", "kind": "prohibited", "reason": "test"},
    )
    api.refused(
        "op-bank",
        "POST",
        f"/v1/products/{pid}/run",
        422,
        "negative.prohibited",
        json={"params": {"dx": "I10"}},
    )


def test_a_product_grant_never_serves_an_operators_own_queries(api: Api) -> None:
    """op-insurer holds its own grant on health.claims and subscribes to a product: its
    free queries are decided on its own grant alone, the product's on the product's."""
    offer = _offer(title="Claims per district (insurer)", price_per_run_fen=0)
    pid = api.ok("bureau-health", "POST", "/v1/products", json=offer)["id"]
    sub = api.ok(
        "op-insurer",
        "POST",
        f"/v1/products/{pid}/subscriptions",
        json={"use": "public_interest", "purpose_text": "claims review", "duration_days": 10},
    )
    product_grant = api.ok(
        "bureau-health", "POST", f"/v1/product-subscriptions/{sub['id']}/approve"
    )["grant"]
    free = "SELECT district, count(*) AS n FROM health.claims GROUP BY district"
    explained = api.ok("op-insurer", "POST", "/v1/explain", json={"sql": free})
    assert explained["accepted"], explained
    assert product_grant not in {g["id"] for g in explained["grants"]}
    bound = TEMPLATE.replace(":g", "'M'").replace(":min_age", "40")
    purpose = api.ok("op-insurer", "GET", f"/v1/products/{pid}")["purpose_code"]
    under_product = api.ok(
        "op-insurer", "POST", "/v1/explain", json={"sql": bound, "purpose": purpose}
    )
    assert [g["id"] for g in under_product["grants"]] == [product_grant]
    refused = api.ok("op-insurer", "POST", "/v1/explain", json={"sql": free, "purpose": purpose})
    assert refused == {**refused, "accepted": False, "rule": "product.template"}


def test_the_python_client(api: Api) -> None:
    from sandbox.client import SandboxClient

    with SandboxClient(str(api.client.base_url), api.tokens["op-insurer"]) as client:
        assert client.quality("market.enterprises")["report"]["uniqueness"]["declared"] is True
        mine = [p for p in client.products() if p["title"] == "Claims per district (insurer)"]
        assert mine and mine[0]["usage"]["subscribers"] == 1
        ran = client.run_product(mine[0]["id"], {"g": "M", "min_age": 40}, wait=True)
        assert ran["job"]["state"] == "succeeded", ran
