"""The registration procedure from the admin's console, over HTTP: a bureau applies
(through the API, with an upload), the admin accepts and reviews in the console, the
certificate is refused while publicity runs, and the bureau's page shows every step."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from .conftest import Console, csrf_of

ROOT = Path(__file__).resolve().parents[2]


def _uploaded(bureau: httpx.Client, dataset_id: str) -> tuple[str, str]:
    """The example visits as ``dataset_id``: its classification and its upload's id."""
    toml = (ROOT / "examples" / "visits.toml").read_text()
    toml = toml.replace('id = "health.visits"', f'id = "{dataset_id}"')
    upload = bureau.post(
        "/v1/uploads?domain=health&filename=visits.csv",
        content=(ROOT / "examples" / "visits.csv").read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert upload.status_code == 201, upload.text
    return toml, upload.json()["upload_id"]


def test_the_admin_takes_a_registration_through_its_steps(console: Console) -> None:
    with console.api("bureau-health") as bureau:
        toml, upload_id = _uploaded(bureau, "health.outpatients")
        applied = bureau.post(
            "/v1/registrations",
            json={
                "classification": toml,
                "source": {"upload_id": upload_id},
                "update_frequency": "monthly",
            },
        )
        assert applied.status_code == 201, applied.text
    app_id = applied.json()["id"]
    with console.session("admin") as admin:
        for step, fields, state in (
            ("accept", {"verdict": "accept", "comment": ""}, "accepted"),
            ("review", {"verdict": "approve", "comment": "classification checked"}, "publicity"),
        ):
            page = admin.get("/console/admin/registrations")
            assert f'action="/console/admin/registrations/{app_id}/{step}"' in page.text
            done = admin.post(
                f"/console/admin/registrations/{app_id}/{step}",
                data={"csrf": csrf_of(page.text), **fields},
            )
            assert done.status_code == 303, done.text
            with console.api("admin") as api:
                assert api.get(f"/v1/registrations/{app_id}").json()["state"] == state
        page = admin.get("/console/admin/registrations")
        early = admin.post(
            f"/console/admin/registrations/{app_id}/issue", data={"csrf": csrf_of(page.text)}
        )
        assert early.status_code in (403, 409), early.text
        assert re.search(r'class="rule">registration\.[a-z_]+<', early.text), early.text
    with console.session("bureau-health") as bureau:
        shown = bureau.get("/console/bureau/registrations").text
        section = shown.split(app_id, 1)[1].split("</section>", 1)[0]
        assert "classification checked" in section
        assert "/console/admin/registrations" not in shown  # the admin's forms only


def test_the_bureau_chooses_where_the_rows_live_in_the_form(console: Console) -> None:
    """The console's application form carries the engine (POST /v1/registrations `engine`):
    the application records the choice, and a value outside the two is refused by name."""
    with console.api("bureau-health") as api:
        toml, upload_id = _uploaded(api, "health.inpatients")
    with console.session("bureau-health") as bureau:
        page = bureau.get("/console/bureau/registrations")
        assert 'name="engine"' in page.text and '<option value="spark">' in page.text
        form = {
            "csrf": csrf_of(page.text),
            "classification": toml,
            "upload_id": upload_id,
            "format": "csv",
            "update_frequency": "monthly",
            "public_interest": "on",
        }
        wrong = bureau.post("/console/registrations", data={**form, "engine": "oracle"})
        assert wrong.status_code >= 400 and "oracle" not in wrong.text
        done = bureau.post("/console/registrations", data={**form, "engine": "spark"})
        assert done.status_code == 303, done.text
    with console.api("bureau-health") as api:
        found = [
            a for a in api.get("/v1/registrations").json() if a["dataset"] == "health.inpatients"
        ]
    assert [a["engine"] for a in found] == ["spark"]
