"""The bureau's and the admin's governance forms over HTTP against the live server: a
registration applied for from the console, objected to by an operator during publicity,
the objection resolved by the admin, an application withdrawn; a grant's release mode
changed and the grant revoked.  Each form reaches the API's function: its refusals
keep their rule, another role's form is refused by the procedure, and a form without
its CSRF token changes nothing."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from .conftest import Console, csrf_of

ROOT = Path(__file__).resolve().parents[2]
XSS = "<script>alert(1)</script>"


def _upload(api: httpx.Client) -> str:
    sent = api.post(
        "/v1/uploads?domain=health&filename=visits.csv",
        content=(ROOT / "examples" / "visits.csv").read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert sent.status_code == 201, sent.text
    return str(sent.json()["upload_id"])


def _apply(console: Console, dataset: str) -> str:
    """A registration applied for from the bureau's console page; its id."""
    toml = (ROOT / "examples" / "visits.toml").read_text()
    toml = toml.replace('id = "health.visits"', f'id = "{dataset}"')
    with console.api("bureau-health") as api:
        upload = _upload(api)
        before = {r["id"] for r in api.get("/v1/registrations").json()}
    with console.session("bureau-health") as web:
        page = web.get("/console/bureau/registrations")
        assert 'action="/console/registrations"' in page.text
        fields = {
            "classification": toml,
            "upload_id": upload,
            "update_frequency": "monthly",
            "public_interest": "on",
            "price_per_query_fen": "0",
        }
        refused = web.post("/console/registrations", data=fields)
        assert refused.status_code == 403 and "console.csrf" in refused.text
        done = web.post("/console/registrations", data={"csrf": csrf_of(page.text), **fields})
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/console/bureau/registrations"
    with console.api("bureau-health") as api:
        new = [r for r in api.get("/v1/registrations").json() if r["id"] not in before]
    assert [(r["dataset"], r["state"]) for r in new] == [(dataset, "applied")]
    return str(new[0]["id"])


def _to_publicity(console: Console, app_id: str) -> None:
    with console.api("admin") as api:
        for step, body in (
            ("accept", {"verdict": "accept"}),
            ("review", {"verdict": "approve", "comment": "classification checked"}),
        ):
            answer = api.post(f"/v1/registrations/{app_id}/{step}", json=body)
            assert answer.status_code == 200, answer.text


def test_objection_resolution_and_withdrawal_from_the_console(console: Console) -> None:
    app_id = _apply(console, "health.outpatient_visits")
    _to_publicity(console, app_id)
    with console.session("op-bank") as web:
        listed = web.get("/console/registrations")
        assert listed.status_code == 200
        section = listed.text.split(f"<code>{app_id}</code>", 1)[1].split("</section>", 1)[0]
        assert f'action="/console/registrations/{app_id}/object"' in section
        assert "/withdraw" not in section and "/resolve" not in section
        filed = web.post(
            f"/console/registrations/{app_id}/object",
            data={"csrf": csrf_of(listed.text), "text": f"the district codes {XSS} look wrong"},
        )
        assert filed.status_code == 303, filed.text
        assert filed.headers["location"] == "/console/registrations"
        # An operator cannot withdraw the bureau's application: the procedure refuses it.
        theirs = web.post(
            f"/console/registrations/{app_id}/withdraw",
            data={"csrf": csrf_of(listed.text), "comment": "not mine"},
        )
        assert theirs.status_code in (403, 404), theirs.text
        assert re.search(r'class="rule">registration\.[a-z_]+<', theirs.text), theirs.text
    with console.session("admin") as web:
        page = web.get("/console/admin/registrations")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and XSS not in page.text
        objection = re.search(r'id="resolve-(ob_[0-9a-f]{16})"', page.text)
        assert objection, "the admin's page offers no resolution form"
        early = web.post(
            f"/console/admin/registrations/{app_id}/issue", data={"csrf": csrf_of(page.text)}
        )
        assert early.status_code in (403, 409)
        resolved = web.post(
            f"/console/registrations/{app_id}/resolve",
            data={
                "csrf": csrf_of(page.text),
                "objection": objection.group(1),
                "verdict": "dismiss",
                "comment": "the codes follow the national standard",
            },
        )
        assert resolved.status_code == 303, resolved.text
    with console.api("admin") as api:
        shown = api.get(f"/v1/registrations/{app_id}").json()
    assert [o["status"] for o in shown["objections"]] != ["open"]
    assert shown["open_objections"] == 0
    assert shown["state"] == "publicity"
    # The bureau withdraws it from its page (the admin's step forms are not offered there).
    with console.session("bureau-health") as web:
        page = web.get("/console/bureau/registrations")
        section = page.text.split(f"<code>{app_id}</code>", 1)[1].split("</section>", 1)[0]
        assert f'action="/console/registrations/{app_id}/withdraw"' in section
        assert "/resolve" not in section and "/console/admin/" not in section
        gone = web.post(
            f"/console/registrations/{app_id}/withdraw",
            data={"csrf": csrf_of(page.text), "comment": "a newer extract follows"},
        )
        assert gone.status_code == 303, gone.text
    with console.api("bureau-health") as api:
        assert api.get(f"/v1/registrations/{app_id}").json()["state"] == "withdrawn"


def test_a_refused_application_names_its_rule_and_echoes_nothing(console: Console) -> None:
    with console.session("bureau-health") as web:
        page = web.get("/console/bureau/registrations")
        refused = web.post(
            "/console/registrations",
            data={
                "csrf": csrf_of(page.text),
                "classification": f"[dataset]\nid = 'x'\ntitle = '{XSS}'",
                "path": "../../etc/passwd",
                "update_frequency": "monthly",
            },
        )
        assert 400 <= refused.status_code < 500, refused.text
        assert re.search(r'class="rule">[a-z_]+\.[a-z_]+<', refused.text), refused.text
        assert XSS not in refused.text and "/etc/passwd" not in refused.text
    with console.session("auditor") as web:  # not a bureau: the procedure refuses
        page = web.get("/console/registrations")
        refused = web.post(
            "/console/registrations",
            data={
                "csrf": csrf_of(page.text),
                "classification": (ROOT / "examples" / "visits.toml").read_text(),
                "path": "visits.csv",
                "update_frequency": "monthly",
            },
        )
        assert refused.status_code == 403, refused.text


def _grant(console: Console, operator: str, code: str) -> str:
    with console.api("bureau-health") as api:
        made = api.post(
            "/v1/grants",
            json={
                "dataset": "health.claims",
                "operator": operator,
                "purpose_code": code,
                "purpose_text": "district totals",
                "valid_until": "2027-06-30T00:00:00Z",
                "groupable": ["gender"],
            },
        )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def test_release_mode_and_revocation_from_the_grant_page(console: Console) -> None:
    grant_id = _grant(console, "op-bank", "console-g2-mode")
    with console.session("bureau-health") as web:
        page = web.get(f"/console/bureau/grants/{grant_id}")
        assert 'id="release-mode"' in page.text and 'id="revoke"' in page.text
        fields = {"mode": "reviewed", "reason": "exact counts for a pilot"}
        assert (
            web.post(f"/console/bureau/grants/{grant_id}/release-mode", data=fields).status_code
            == 403
        )
        changed = web.post(
            f"/console/bureau/grants/{grant_id}/release-mode",
            data={"csrf": csrf_of(page.text), **fields},
        )
        assert changed.status_code == 303, changed.text
        with console.api("bureau-health") as api:
            assert api.get(f"/v1/grants/{grant_id}").json()["grant"]["release_mode"] == "reviewed"
        # Back to dp with a budget; the form's values go through the API's model.
        bad = web.post(
            f"/console/bureau/grants/{grant_id}/release-mode",
            data={"csrf": csrf_of(page.text), "mode": "loud", "reason": "x"},
        )
        assert bad.status_code == 400 and "api.schema" in bad.text and "loud" not in bad.text
        page = web.get(f"/console/bureau/grants/{grant_id}")
        revoked = web.post(
            f"/console/bureau/grants/{grant_id}/revoke",
            data={"csrf": csrf_of(page.text), "reason": "the pilot ended"},
        )
        assert revoked.status_code == 303, revoked.text
        with console.api("bureau-health") as api:
            assert api.get(f"/v1/grants/{grant_id}").json()["grant"]["status"] == "revoked"
        assert 'id="revoke"' not in web.get(f"/console/bureau/grants/{grant_id}").text
    # Another bureau's console cannot touch it (the administration refuses by domain).
    with console.session("op-bank") as web:
        page = web.get("/console/operator")
        refused = web.post(
            f"/console/bureau/grants/{grant_id}/resume",
            data={"csrf": csrf_of(page.text), "reason": "x"},
        )
        assert refused.status_code == 403 and "console.role" in refused.text
