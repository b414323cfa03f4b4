"""Data products from the console over HTTP: the bureau publishes one from its products
page and decides a subscription there; the operator runs it with a parameter from its
products page and reads the result on the job's page.  CSRF, roles and escaping."""

from __future__ import annotations

import re
import time

from sandbox.console.products import form_params

from .conftest import Console, csrf_of

TEMPLATE = "SELECT district, count(*) AS n FROM health.claims WHERE gender = :g GROUP BY district"
XSS = "<img src=x onerror=alert(1)>"


def test_form_params_take_the_declared_types() -> None:
    declared = {
        "n": {"type": "int", "min": 1, "max": 9},
        "x": {"type": "float", "min": 0, "max": 1},
        "e": {"type": "enum", "values": [1, "b"]},
        "s": {"type": "string", "values": ["F"]},
    }
    form = {"param-n": " 3 ", "param-x": "0.5", "param-e": "1", "param-s": "F", "other": "z"}
    assert form_params(declared, form) == {"n": 3, "x": 0.5, "e": 1, "s": "F"}
    # What does not parse stays text, for the template's check to refuse by its rule.
    assert form_params(declared, {"param-n": "three"})["n"] == "three"
    assert form_params({"d": {"type": "date"}}, {}) == {"d": ""}


def test_publish_subscribe_decide_and_run_from_the_console(console: Console) -> None:
    with console.session("bureau-health") as web:
        page = web.get("/console/bureau/products")
        assert page.status_code == 200 and 'id="publish-product"' in page.text
        fields = {
            "dataset": "health.claims",
            "title": f"Claims per district {XSS}",
            "description": "count of claims per district for one gender",
            "template": TEMPLATE,
            "params": '{"g": {"type": "string", "domain": "health.claims.gender"}}',
            "columns": "district gender",
            "groupable": "gender",
            "price_per_run_fen": "0",
        }
        refused = web.post("/console/bureau/products", data=fields)
        assert refused.status_code == 403 and "console.csrf" in refused.text
        bad = web.post(
            "/console/bureau/products",
            data={"csrf": csrf_of(page.text), **fields, "params": "{not json"},
        )
        assert bad.status_code == 400 and "console.form" in bad.text
        done = web.post("/console/bureau/products", data={"csrf": csrf_of(page.text), **fields})
        assert done.status_code == 303, done.text
        page = web.get("/console/bureau/products")
        assert XSS not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
    with console.api("bureau-health") as api:
        mine = [p for p in api.get("/v1/products").json() if p["title"].endswith(XSS)]
    assert len(mine) == 1 and mine[0]["state"] == "published"
    pid = mine[0]["id"]
    gender = mine[0]["params"]["g"]["values"][0]
    with console.session("op-bank") as web:
        listed = web.get("/console/operator/products")
        section = listed.text.split(f'id="product-{pid}"', 1)[1].split("</section>", 1)[0]
        assert f'action="/console/operator/products/{pid}/run"' in section
        sent = web.post(
            f"/console/operator/products/{pid}/subscribe",
            data={
                "csrf": csrf_of(listed.text),
                "use": "public_interest",
                "release_mode": "dp",
                "purpose_text": f"branch planning {XSS}",
                "duration_days": "30",
            },
        )
        assert sent.status_code == 303, sent.text
        early = web.post(
            f"/console/operator/products/{pid}/run",
            data={"csrf": csrf_of(listed.text), "param-g": gender},
        )
        assert early.status_code in (403, 409), early.text  # not subscribed yet
        assert re.search(r'class="rule">product\.[a-z_]+<', early.text), early.text
        # The bureau's page is not the operator's.
        theirs = web.post(
            f"/console/bureau/products/{pid}/withdraw",
            data={"csrf": csrf_of(listed.text), "reason": "x"},
        )
        assert theirs.status_code == 403 and "console.role" in theirs.text
    with console.session("bureau-health") as web:
        page = web.get("/console/bureau/products")
        section = page.text.split(f'id="product-{pid}"', 1)[1].split("</section>", 1)[0]
        assert "branch planning &lt;img" in section and XSS not in section
        sid = re.search(r'id="sub-(ps_[0-9a-f]+)"', section)
        assert sid, section
        approved = web.post(
            f"/console/bureau/subscriptions/{sid.group(1)}/approve",
            data={"csrf": csrf_of(page.text)},
        )
        assert approved.status_code == 303, approved.text
    with console.session("op-bank") as web:
        listed = web.get("/console/operator/products")
        wrong = web.post(
            f"/console/operator/products/{pid}/run",
            data={"csrf": csrf_of(listed.text), "param-g": "no such gender <b>"},
        )
        assert wrong.status_code == 400 and "product.param" in wrong.text
        assert "no such gender" not in wrong.text
        ran = web.post(
            f"/console/operator/products/{pid}/run",
            data={"csrf": csrf_of(listed.text), "param-g": gender},
        )
        assert ran.status_code == 303, ran.text
        job_page = ran.headers["location"]
        assert re.fullmatch(r"/console/operator/jobs/job_[0-9a-z_]+", job_page), job_page
        for _ in range(120):
            shown = web.get(job_page)
            if re.search(r'data-state="(succeeded|failed|refused|cancelled)"', shown.text):
                break
            time.sleep(0.5)
        assert 'data-state="succeeded"' in shown.text, shown.text[-2000:]
        assert re.search(r"<th[^>]*>district</th>", shown.text), shown.text[-3000:]
