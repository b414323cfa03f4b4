"""The governance procedures against `sandbox serve` in its own process (a black box over HTTP).

The publicity period cannot be moved in another process, so this run stops at it: an
upheld objection rejects the application.  The grant an application leads to is then
used: the operator's query on it is accepted by the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import LiveServer, served
from tests.api.test_governance import CSV, VISITS


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with served(tmp_path_factory.mktemp("gov-live")) as server:
        yield server


def call(live: LiveServer, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {live.tokens[who]}", **kw.pop("headers", {})}
    return httpx.request(method, live.url + path, headers=headers, timeout=60, **kw)


def ok(live: LiveServer, who: str, method: str, path: str, **kw: Any) -> Any:
    response = call(live, who, method, path, **kw)
    assert response.status_code in (200, 201), response.text
    return response.json()


def refused(live: LiveServer, who: str, method: str, path: str, rule: str, **kw: Any) -> int:
    response = call(live, who, method, path, **kw)
    assert response.status_code >= 400 and response.json()["rule"] == rule, response.text
    return response.status_code


def test_registration_up_to_an_upheld_objection(live: LiveServer) -> None:
    upload = ok(
        live,
        "bureau-health",
        "POST",
        "/v1/uploads",
        params={"domain": "health", "filename": "visits.csv"},
        content=CSV.encode(),
        headers={"Content-Type": "application/octet-stream"},
    )["upload_id"]
    body = {
        "classification": VISITS,
        "source": {"upload_id": upload},
        "update_frequency": "daily",
    }
    rid = ok(live, "bureau-health", "POST", "/v1/registrations", json=body)["id"]
    assert (
        refused(
            live, "auditor", "POST", f"/v1/registrations/{rid}/accept", "registration.role", json={}
        )
        == 403
    )
    ok(live, "admin", "POST", f"/v1/registrations/{rid}/accept", json={})
    review = {"verdict": "approve", "comment": "matches"}
    ok(live, "admin", "POST", f"/v1/registrations/{rid}/review", json=review)
    assert (
        refused(
            live,
            "admin",
            "POST",
            f"/v1/registrations/{rid}/issue",
            "registration.publicity_not_over",
        )
        == 409
    )
    filed = ok(live, "op-bank", "POST", f"/v1/registrations/{rid}/objections", json={"text": "no"})
    ob_id = filed["objections"][0]["id"]
    resolve = {"objection": ob_id, "verdict": "uphold", "comment": "upheld: describe the costs"}
    assert (
        ok(live, "admin", "POST", f"/v1/registrations/{rid}/resolve", json=resolve)["state"]
        == "rejected"
    )
    # The kept file is gone with the rejected application.
    assert not (Path(live.home) / "staging" / "registrations" / rid).exists()
    # The auditor reads the whole record, and the trail has each step.
    seen = ok(live, "auditor", "GET", f"/v1/registrations/{rid}")
    assert [s["step"] for s in seen["steps"]] == ["apply", "accept", "approve", "object", "uphold"]
    entries = ok(
        live,
        "auditor",
        "GET",
        "/v1/audit/entries",
        params={"target": f"registration:{rid}", "limit": 50},
    )["entries"]
    assert {(e["action"], e["decision"]) for e in entries} >= {
        ("registration.accept", "deny"),
        ("registration.issue", "deny"),
        ("registration.resolve", "allow"),
    }


def test_a_granted_application_is_usable(live: LiveServer) -> None:
    ask = {
        "dataset": "transport.trips",
        "purpose_code": "bus-planning",
        "purpose_text": "trips per station",
        "columns": ["board_station"],
        "duration_days": 30,
        "use": "public_interest",
        "release_mode": "reviewed",
    }
    sql = {"sql": "SELECT board_station, count(*) AS trips FROM transport.trips GROUP BY 1"}
    before = ok(live, "op-bank", "POST", "/v1/explain", json=sql)
    assert (before["accepted"], before["rule"]) == (False, "dataset.unknown")
    aid = ok(live, "op-bank", "POST", "/v1/grant-applications", json=ask)["id"]
    assert (
        refused(
            live,
            "bureau-health",
            "POST",
            f"/v1/grant-applications/{aid}/approve",
            "application.unknown",
            json={},
        )
        == 404
    )
    app = ok(live, "bureau-transport", "POST", f"/v1/grant-applications/{aid}/approve", json={})
    assert app["state"] == "approved" and app["grant"].startswith("gr_")
    explained = ok(live, "op-bank", "POST", "/v1/explain", json=sql)
    assert explained["accepted"] is True, explained
