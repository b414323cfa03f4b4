"""Revisions of a registered dataset over HTTP (issue 17 part 1, the short form): a
tightening takes effect at once; a loosening is refused on the direct route with
``registration.procedure`` and goes through accept, review, a shorter publicity with an
objection resolved, then issue; old certificates keep verifying."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from audit.keys import load_public_keys
from sandbox.enclave.certificates import verify_certificate
from tests.api.test_governance import VISITS, Api, _apply_body, served_api

REVIEW = {"verdict": "approve", "comment": "checked against the schema"}
TIGHTER = VISITS.replace('[columns.district]\nlevel = "L1"', '[columns.district]\nlevel = "L2"')
LOOSER = VISITS.replace("bounds = [0, 5000]", "bounds = [0, 6000]")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with served_api(tmp_path_factory, "revisions") as served:
        yield served


def _columns(api: Api) -> dict[str, Any]:
    found = api.ok("bureau-health", "GET", "/v1/datasets")
    (visits,) = [d for d in found if d["id"] == "health.visits"]
    return {"version": visits["version"], **visits["columns"]}


def _registered(api: Api) -> dict[str, Any]:
    rid = api.ok("bureau-health", "POST", "/v1/registrations", json=_apply_body(api.upload()))["id"]
    api.ok("admin", "POST", f"/v1/registrations/{rid}/accept", json={})
    api.ok("admin", "POST", f"/v1/registrations/{rid}/review", json=REVIEW)
    api.clock.now += timedelta(days=8)
    return api.ok("admin", "POST", f"/v1/registrations/{rid}/issue")["certificate"]  # type: ignore[no-any-return]


def test_revisions_tighten_at_once_and_loosen_through_the_procedure(api: Api) -> None:
    first = _registered(api)
    put = "/v1/datasets/health.visits/classification"

    # A tightening (district L1 -> L2) takes effect at once on the direct route.
    tightened = api.ok("bureau-health", "PUT", put, json={"classification": TIGHTER})
    assert tightened["dataset"]["version"] == 2
    assert _columns(api)["district"]["level"] == "L2"

    # A loosening (back to L1; bounds widened) is refused there, naming the rule and the
    # fields, and audited.
    response = api.call("bureau-health", "PUT", put, json={"classification": LOOSER})
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["rule"] == "registration.procedure"
    assert "column district: level lowered" in body["message"]
    assert "column cost: bounds widened or added" in body["message"]
    assert "POST /v1/registrations" in body["message"]
    denied = [e for e in api.entries("dataset.classify") if e.decision == "deny"]
    assert [e.rule for e in denied] == ["registration.procedure"]
    assert _columns(api)["version"] == 2

    # The bureau applies for it as a revision (no file: the rows as loaded).
    body = {"classification": LOOSER, "update_frequency": "monthly"}
    app = api.ok("bureau-health", "POST", "/v1/registrations", json=body)
    rid = app["id"]
    assert (app["form"], app["state"]) == ("revision", "applied")
    api.refused(
        "bureau-health",
        "POST",
        f"/v1/registrations/{rid}/accept",
        403,
        "registration.role",
        json={},
    )
    api.ok("admin", "POST", f"/v1/registrations/{rid}/accept", json={})
    app = api.ok("admin", "POST", f"/v1/registrations/{rid}/review", json=REVIEW)
    assert app["state"] == "publicity"
    window = datetime.fromisoformat(app["publicity_until"]) - datetime.fromisoformat(
        app["publicity_from"]
    )
    assert window == timedelta(days=api.services.platform.settings.revision_publicity_days)
    assert window < timedelta(days=api.services.platform.settings.registration_publicity_days)

    # Anyone with an account objects; the certificate waits for the period and the answer.
    app = api.ok(
        "op-bank", "POST", f"/v1/registrations/{rid}/objections", json={"text": "why wider?"}
    )
    (objection,) = [o["id"] for o in app["objections"]]
    issue = f"/v1/registrations/{rid}/issue"
    api.refused("admin", "POST", issue, 409, "registration.publicity_not_over")
    api.clock.now += timedelta(days=3)
    api.refused("admin", "POST", issue, 409, "registration.objection_unresolved")
    resolve = {"objection": objection, "verdict": "dismiss", "comment": "amounts up to 6000 occur"}
    api.ok("admin", "POST", f"/v1/registrations/{rid}/resolve", json=resolve)
    issued = api.ok("admin", "POST", issue)
    assert issued["application"]["state"] == "issued"

    # In force, with the procedure's record in the new certificate; the old ones verify.
    keys = load_public_keys(api.services.platform.settings.keys_dir)
    cert = verify_certificate(issued["certificate"], keys)
    assert cert["version"] == 3
    assert cert["procedure"]["application"] == rid
    assert cert["procedure"]["publicity"] is not None
    assert verify_certificate(first, keys)["version"] == 1
    assert verify_certificate(tightened["certificate"], keys)["version"] == 2
    columns = _columns(api)
    assert columns["version"] == 3 and columns["district"]["level"] == "L1"
    # A revision without a file or a listing keeps the price terms last issued.
    catalog = api.ok("op-bank", "GET", "/v1/catalog/health.visits")
    assert catalog["price_terms"]["price_per_query_fen"] == 300
    steps = {e.rule for e in api.entries("registration.issue") if e.decision == "allow"}
    assert "registration.transition" in steps

    # A tightening applied through the procedure takes the short form: no publicity.
    body = {"classification": TIGHTER, "update_frequency": "monthly"}
    app = api.ok("bureau-health", "POST", "/v1/registrations", json=body)
    assert app["form"] == "short"
    api.ok("admin", "POST", f"/v1/registrations/{app['id']}/accept", json={})
    reviewed = api.ok("admin", "POST", f"/v1/registrations/{app['id']}/review", json=REVIEW)
    assert reviewed["state"] == "reviewed" and reviewed["publicity_until"] is None
    api.ok("admin", "POST", f"/v1/registrations/{app['id']}/issue")
    assert _columns(api)["district"]["level"] == "L2"


def test_a_revision_without_a_file_needs_a_registered_dataset(api: Api) -> None:
    body = {"classification": VISITS.replace("health.visits", "health.nothing"),
            "update_frequency": "monthly"}  # fmt: skip
    api.refused("bureau-health", "POST", "/v1/registrations", 400, "registration.source", json=body)
