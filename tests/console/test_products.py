"""Data products in the operator's console: listed with template, parameters and price;
a subscription sent from the page reaches the product (as POST /v1/products/{id}/subscriptions)."""

from __future__ import annotations

import re

from .conftest import Console, csrf_of

TEMPLATE = "SELECT district, count(*) AS n FROM health.claims WHERE gender = :g GROUP BY district"


def test_an_operator_sees_a_product_and_subscribes(console: Console) -> None:
    with console.api("bureau-health") as bureau:
        published = bureau.post(
            "/v1/products",
            json={
                "dataset": "health.claims",
                "title": "Claims per district <i>for one gender</i>",
                "description": "count of claims per district",
                "template": TEMPLATE,
                "params": {"g": {"type": "string", "domain": "health.claims.gender"}},
                "columns": ["district", "gender"],
                "groupable": ["gender"],
            },
        )
    assert published.status_code == 201, published.text
    pid = published.json()["id"]
    with console.session("op-planner") as web:
        listed = web.get("/console/operator/products")
        assert listed.status_code == 200
        section = listed.text.split(f'id="product-{pid}"', 1)[1].split("</section>", 1)[0]
        assert "Claims per district &lt;i&gt;for one gender&lt;/i&gt;" in section
        assert "WHERE gender = :g" in section and "<code>:g</code> string" in section
        sent = web.post(
            f"/console/operator/products/{pid}/subscribe",
            data={
                "csrf": csrf_of(listed.text),
                "use": "public_interest",
                "release_mode": "dp",
                "purpose_text": "clinic planning per district",
                "duration_days": "30",
            },
        )
        assert sent.status_code == 303, sent.text
        refused = web.post(f"/console/operator/products/{pid}/subscribe", data={"use": "x"})
        assert refused.status_code == 403 and "console.csrf" in refused.text
    with console.api("op-planner") as api:
        shown = api.get(f"/v1/products/{pid}").json()
    mine = [s for s in shown["subscriptions"] if s["operator"] == "op-planner"]
    assert [s["purpose_text"] for s in mine] == ["clinic planning per district"]
    assert re.fullmatch(r"ps_[0-9a-f]+", mine[0]["id"])
