"""The remaining governance forms over HTTP against the live server: a bureau's
classification change (refused by the API's rules: the shared server's datasets stay as
the journeys need them) and an alert response; the admin co-approves (or is told why not),
approves an enrolment (refused to the code's issuer) and rotates the signing key.  Each
reaches the API's function: its refusals keep their rule, another role is refused, a
form without its CSRF token changes nothing."""

from __future__ import annotations

import hashlib
import re
import secrets

from .conftest import ROOT, Console, csrf_of

RULE = re.compile(r'class="rule">([a-z_]+\.[a-z_]+)<')


def test_a_bureau_classification_change_and_alert_response(console: Console) -> None:
    toml = (ROOT / "sandbox" / "enclave" / "demo" / "health.claims.toml").read_text()
    with console.api("bureau-health") as api:
        before = {d["id"]: d["version"] for d in api.get("/v1/datasets").json()}
    with console.session("bureau-health") as web:
        page = web.get("/console/bureau/datasets")
        assert 'action="/console/bureau/datasets/health.claims/classification"' in page.text
        url = "/console/bureau/datasets/health.claims/classification"
        assert web.post(url, data={"classification": toml}).status_code == 403
        wrong = web.post(
            "/console/bureau/datasets/health.visits_x/classification",
            data={"csrf": csrf_of(page.text), "classification": toml},
        )
        assert wrong.status_code == 400 and RULE.search(wrong.text).group(1) == "api.dataset_id"
        # Another domain's dataset: the API's policy refuses it by domain (the journeys
        # share this server's datasets, so no change is made to them here).
        market = (ROOT / "sandbox" / "enclave" / "demo" / "market.enterprises.toml").read_text()
        outside = web.post(
            "/console/bureau/datasets/market.enterprises/classification",
            data={"csrf": csrf_of(page.text), "classification": market},
        )
        assert outside.status_code in (403, 404), outside.text
        assert RULE.search(outside.text).group(1).startswith("domain."), outside.text
        page = web.get("/console/bureau/alert-policies")
        assert page.status_code == 200 and 'id="set-policy"' in page.text
        fields = {
            "scope": "dataset",
            "target": "health.claims",
            "action": "notify",
            "min_severity": "high",
            "reason": "<b>tell us</b> first",
        }
        assert web.post("/console/bureau/alert-policies", data=fields).status_code == 403
        set_ = web.post(
            "/console/bureau/alert-policies", data={"csrf": csrf_of(page.text), **fields}
        )
        assert set_.status_code == 303, set_.text
        shown = web.get("/console/bureau/alert-policies").text
        assert "&lt;b&gt;tell us&lt;/b&gt; first" in shown and "<b>tell us" not in shown
        outside = web.post(
            "/console/bureau/alert-policies",
            data={"csrf": csrf_of(page.text), **fields, "target": "market.enterprises"},
        )
        assert outside.status_code in (403, 404), outside.text
    with console.api("bureau-health") as api:
        after = {d["id"]: d["version"] for d in api.get("/v1/datasets").json()}
        policies = api.get("/v1/alerts/policies").json()
    assert after == before
    assert [(p["target"], p["action"]) for p in policies if p["target"] == "health.claims"] == [
        ("health.claims", "notify")
    ]


def test_the_admins_co_approval_enrolment_approval_and_key_rotation(console: Console) -> None:
    ask = {
        "dataset": "health.claims",
        "purpose_code": "console-co-approval",
        "purpose_text": "claims by district",
        "columns": ["district", "gender"],
        "groupable": ["gender"],
        "duration_days": 30,
        "use": "public_interest",
    }
    # op-bank's, not op-planner's: the bureau's journey approves op-planner's application.
    with console.api("op-bank") as api:
        applied = api.post("/v1/grant-applications", json=ask)
    assert applied.status_code == 201, applied.text
    app_id = applied.json()["id"]
    with console.api("admin") as api:
        made = api.post(
            "/v1/admin/accounts", json={"name": "admin-g2", "role": "admin", "organisation": "X"}
        )
        assert made.status_code == 201, made.text
        code = api.post("/v1/admin/accounts/admin-g2/enrolments", json={}).json()["code"]
    token = "sbx_" + secrets.token_urlsafe(32)
    with console.api("admin") as anyone:
        pending = anyone.post(
            "/v1/enrol",
            json={"code": code, "token_sha256": hashlib.sha256(token.encode()).hexdigest()},
            headers={"Authorization": ""},
        )
    assert pending.status_code == 202, pending.text
    with console.session("admin") as web:
        page = web.get("/console/admin/applications")
        assert f'id="co-approve-{app_id}"' in page.text
        # Nothing strictly limited is asked for: the bureau alone decides, and the page says why.
        told = web.post(
            f"/console/admin/applications/{app_id}/co-approve",
            data={"csrf": csrf_of(page.text), "reason": "checked"},
        )
        assert told.status_code == 409 and RULE.search(told.text).group(1) == "negative.not_limited"
        # The code's issuer cannot approve its enrolment, even with the right fingerprint.
        page = web.get("/console/admin")
        fields = {
            "enrolment": pending.json()["enrolment"],
            "fingerprint": pending.json()["fingerprint"],
        }
        assert web.post("/console/admin/enrolments/approve", data=fields).status_code == 403
        same = web.post(
            "/console/admin/enrolments/approve", data={"csrf": csrf_of(page.text), **fields}
        )
        assert same.status_code == 403 and RULE.search(same.text).group(1) == "enrolment.same_admin"
        # Key rotation: a new active key; old signatures still verify by the kept keys.
        page = web.get("/console/admin/settings")
        assert web.post("/console/admin/keys/rotate", data={"go": "1"}).status_code == 403
        rotated = web.post("/console/admin/keys/rotate", data={"csrf": csrf_of(page.text)})
        assert rotated.status_code == 200, rotated.text
        key_id = re.search(r'<code id="active-key">([^<]+)</code>', rotated.text).group(1)
    with console.api("bureau-health") as api:  # nothing left waiting for the journeys
        closed = api.post(f"/v1/grant-applications/{app_id}/reject", json={"reason": "test"})
        assert closed.status_code == 200, closed.text
    with console.api("auditor") as api:
        assert key_id in api.get("/v1/audit/keys").json()
        assert api.post("/v1/audit/verify").json()["ok"] is True
    with console.session("bureau-health") as web:
        page = web.get("/console/bureau")
        for path in (
            "/console/admin/keys/rotate",
            f"/console/admin/applications/{app_id}/co-approve",
        ):
            refused = web.post(path, data={"csrf": csrf_of(page.text), "reason": "x"})
            assert refused.status_code == 403 and "console.role" in refused.text
