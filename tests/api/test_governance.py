"""Issue 17 parts 1 and 2 end to end over HTTP: the registration procedure, the catalog and
grant applications, each role doing its own part and each refusal named.

A real uvicorn server runs the app in a thread; the procedures' clock is the test's
(``app.state.clock``), so the publicity period passes without sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from audit import EntryFilter
from audit.keys import load_public_keys
from sandbox.api.app import create_app
from sandbox.core.settings import Settings
from sandbox.enclave.certificates import verify_certificate
from sandbox.services import Services
from tests.api.conftest import in_thread
from tests.conftest import build_deployment

VISITS = """
[dataset]
id = "health.visits"
title = "Clinic visits (门诊)"
description = "One row per visit."
entity_key = "person_id"

[columns.person_id]
level = "L3"
role = "identifier"

[columns.id_number]
level = "L4"
role = "identifier"

[columns.district]
level = "L1"
role = "dimension"

[columns.cost]
level = "L2"
role = "measure"
bounds = [0, 5000]
"""

CSV = "person_id,id_number,district,cost\n" + "".join(
    f"p{i},1101{i:014d},d{i % 3},{(i * 37) % 900}\n" for i in range(60)
)


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Api:
    client: httpx.Client
    services: Services
    tokens: dict[str, str]
    clock: Clock

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def ok(self, who: str, method: str, path: str, **kw: Any) -> Any:
        response = self.call(who, method, path, **kw)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def refused(self, who: str, method: str, path: str, status: int, rule: str, **kw: Any) -> None:
        response = self.call(who, method, path, **kw)
        assert response.status_code == status, response.text
        assert response.json()["rule"] == rule, response.text

    def upload(self, who: str = "bureau-health") -> str:
        body = self.ok(
            who,
            "POST",
            "/v1/uploads",
            params={"domain": "health", "filename": "visits.csv"},
            content=CSV.encode(),
            headers={"Content-Type": "application/octet-stream"},
        )
        return str(body["upload_id"])

    def entries(self, action: str) -> list[Any]:
        return self.services.platform.audit.entries(EntryFilter(action=action), limit=10_000)


@contextmanager
def served_api(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Api]:
    """The test deployment (``build_deployment``) in a fresh home, its app served in a
    thread with the test's clock (also for tests/api/test_revisions.py, test_products.py)."""
    home = tmp_path_factory.mktemp(name) / "home"
    platform, tokens = build_deployment(home)
    platform.close()
    application = create_app(Settings(home=home, threads=2, job_workers=1))
    clock = Clock()
    application.state.clock = clock
    with in_thread(application, name) as client:
        yield Api(client, application.state.services, tokens, clock)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with served_api(tmp_path_factory, "governance") as served:
        yield served


def _apply_body(upload_id: str) -> dict[str, Any]:
    return {
        "classification": VISITS,
        "source": {"upload_id": upload_id},
        "update_frequency": "monthly",
        "listing": {
            "public_interest": True,
            "commercial": True,
            "price_per_query_fen": 300,
            "price_per_million_rows_fen": 1000,
            "terms": "research and planning free; commercial at the listed prices",
        },
    }


def test_registration_procedure_full_form(api: Api) -> None:
    body = _apply_body(api.upload())
    # Who may apply: a bureau, in its own domain only.
    api.refused("op-bank", "POST", "/v1/registrations", 403, "role.not_permitted", json=body)
    api.refused("bureau-market", "POST", "/v1/registrations", 403, "domain.outside", json=body)
    bad = {**body, "classification": VISITS.replace('level = "L1"', 'level = "L9"')}
    response = api.call("bureau-health", "POST", "/v1/registrations", json=bad)
    assert response.status_code == 422, response.text
    refusals = {e.rule for e in api.entries("registration.apply") if e.decision == "deny"}
    assert response.json()["rule"] in refusals
    app = api.ok("bureau-health", "POST", "/v1/registrations", json=body)
    assert (app["state"], app["form"], app["dataset"]) == ("applied", "full", "health.visits")
    rid = app["id"]
    again = _apply_body(api.upload())
    api.refused(
        "bureau-health", "POST", "/v1/registrations", 409, "registration.pending", json=again
    )
    # Acceptance (受理): the admin's, once.
    api.refused(
        "bureau-health",
        "POST",
        f"/v1/registrations/{rid}/accept",
        403,
        "registration.role",
        json={},
    )
    api.refused("admin", "POST", f"/v1/registrations/{rid}/issue", 409, "registration.state")
    app = api.ok("admin", "POST", f"/v1/registrations/{rid}/accept", json={})
    assert (app["state"], app["accepted_by"]) == ("accepted", "admin")
    api.refused(
        "admin", "POST", f"/v1/registrations/{rid}/accept", 409, "registration.state", json={}
    )
    # Not listed publicly before review: an operator does not see it.
    api.refused("op-bank", "GET", f"/v1/registrations/{rid}", 404, "registration.unknown")
    # Review (审查) with a comment: publicity (公示) starts.
    review = {"verdict": "approve", "comment": "classification matches the source"}
    app = api.ok("admin", "POST", f"/v1/registrations/{rid}/review", json=review)
    assert app["state"] == "publicity" and app["review_comment"] == review["comment"]
    until = datetime.fromisoformat(app["publicity_until"])
    assert until - datetime.fromisoformat(app["publicity_from"]) == timedelta(days=7)
    api.refused(
        "admin", "POST", f"/v1/registrations/{rid}/issue", 409, "registration.publicity_not_over"
    )
    # Anyone with an account sees it and may object while it runs.
    listed = api.ok("op-insurer", "GET", "/v1/registrations", params={"state": "publicity"})
    assert [a["id"] for a in listed] == [rid]
    objection = api.ok(
        "op-insurer",
        "POST",
        f"/v1/registrations/{rid}/objections",
        json={"text": "cost has no unit"},
    )["objections"]
    assert [o["status"] for o in objection] == ["open"]
    ob_id = objection[0]["id"]
    api.refused(
        "op-insurer",
        "POST",
        f"/v1/registrations/{rid}/objections",
        409,
        "registration.objection_open",
        json={"text": "and again"},
    )
    # Another operator reads the count, not the grounds.
    seen = api.ok("op-bank", "GET", f"/v1/registrations/{rid}")
    assert seen["open_objections"] == 1 and seen["objections"] == []
    # The public listing shows no file and no declared bound; the bureau sees both.
    assert seen["source"] is None and "bounds" not in str(seen["classification"])
    own = api.ok("bureau-health", "GET", f"/v1/registrations/{rid}")
    assert own["source"]["bytes"] == len(CSV) and "bounds" in str(own["classification"])
    uploads = api.services.platform.settings.staging_dir / "uploads"
    assert not (uploads / f"{body['source']['upload_id']}.upload.json").exists()
    api.clock.now = until + timedelta(seconds=1)
    api.refused(
        "op-bank",
        "POST",
        f"/v1/registrations/{rid}/objections",
        409,
        "registration.publicity_over",
        json={"text": "late"},
    )
    api.refused(
        "admin", "POST", f"/v1/registrations/{rid}/issue", 409, "registration.objection_unresolved"
    )
    resolve = {"objection": ob_id, "verdict": "dismiss", "comment": "units are in the description"}
    api.refused(
        "bureau-health",
        "POST",
        f"/v1/registrations/{rid}/resolve",
        403,
        "registration.role",
        json=resolve,
    )
    app = api.ok("admin", "POST", f"/v1/registrations/{rid}/resolve", json=resolve)
    assert app["state"] == "publicity" and app["objections"][0]["status"] == "dismissed"
    # Certificate (凭证发放): the admin's, with the procedure's record.
    api.refused("bureau-health", "POST", f"/v1/registrations/{rid}/issue", 403, "registration.role")
    issued = api.ok("admin", "POST", f"/v1/registrations/{rid}/issue")
    assert issued["application"]["state"] == "issued"
    keys = load_public_keys(api.services.platform.settings.keys_dir)
    cert = verify_certificate(issued["certificate"], keys)
    procedure = cert["procedure"]
    assert procedure["application"] == rid
    assert (procedure["accepted_by"], procedure["reviewed_by"]) == ("admin", "admin")
    assert procedure["publicity"] == {
        "from": app["publicity_from"],
        "until": app["publicity_until"],
    }
    assert (
        cert["row_count"] == 60
        and cert["source"]["sha256"] == issued["application"]["source"]["sha256"]
    )
    # Every step is in the audit trail, the refusals with their rules.
    steps = {e.action: e for e in api.entries("registration.issue")}
    assert steps["registration.issue"].decision in ("allow", "deny")
    rules = {(e.decision, e.rule) for e in api.entries("registration.issue")}
    assert ("deny", "registration.publicity_not_over") in rules
    assert ("deny", "registration.objection_unresolved") in rules
    assert ("allow", "registration.transition") in rules
    for action in (
        "registration.apply",
        "registration.accept",
        "registration.review",
        "registration.object",
        "registration.resolve",
    ):
        assert any(e.decision == "allow" for e in api.entries(action)), action
    # Reads are recorded too; a refused one with its real rule.
    reads = {(e.actor, e.decision, e.rule) for e in api.entries("registration.read")}
    assert ("op-bank", "deny", "registration.not_listed") in reads
    assert ("op-insurer", "allow", "allow.read") in reads
    # The catalog shows it with what the procedure declared, and never a value or bound.
    entry = api.ok("op-bank", "GET", "/v1/catalog/health.visits")
    assert entry["update_frequency"] == "monthly"
    assert entry["price_terms"]["price_per_query_fen"] == 300
    # Its quality report was computed when the certificate was issued (issue 17 part 4).
    assert entry["quality"]["version"] == 1 and 0 <= entry["quality"]["score"] <= 100
    assert {c["name"]: (c["level"], c["role"]) for c in entry["columns"]}["id_number"] == (
        "L4",
        "identifier",
    )
    text = str(entry)
    assert "5000" not in text and "bounds" not in text and "p1" not in text

    # Re-registration of the same classification: the short form, no publicity.
    app = api.ok("bureau-health", "POST", "/v1/registrations", json=_apply_body(api.upload()))
    rid2 = app["id"]
    assert app["form"] == "short"
    api.ok("admin", "POST", f"/v1/registrations/{rid2}/accept", json={})
    app = api.ok("admin", "POST", f"/v1/registrations/{rid2}/review", json=review)
    assert app["state"] == "reviewed" and app["publicity_until"] is None
    api.refused(
        "op-bank",
        "POST",
        f"/v1/registrations/{rid2}/objections",
        404,
        "registration.unknown",
        json={"text": "x"},
    )
    issued = api.ok("admin", "POST", f"/v1/registrations/{rid2}/issue")
    assert issued["certificate"]["certificate"]["version"] == 2
    assert issued["certificate"]["certificate"]["procedure"]["publicity"] is None


def test_an_upheld_objection_rejects_and_withdrawal_is_the_bureaus(api: Api) -> None:
    toml = VISITS.replace("health.visits", "health.visits_b")
    body = {**_apply_body(api.upload()), "classification": toml}
    rid = api.ok("bureau-health", "POST", "/v1/registrations", json=body)["id"]
    api.refused(
        "admin",
        "POST",
        f"/v1/registrations/{rid}/accept",
        400,
        "registration.comment",
        json={"verdict": "refuse"},
    )
    api.ok("admin", "POST", f"/v1/registrations/{rid}/accept", json={})
    api.ok(
        "admin",
        "POST",
        f"/v1/registrations/{rid}/review",
        json={"verdict": "approve", "comment": "ok"},
    )
    ob = api.ok(
        "auditor",
        "POST",
        f"/v1/registrations/{rid}/objections",
        json={"text": "duplicates health.visits"},
    )
    ob_id = ob["objections"][0]["id"]
    # Another bureau sees the public listing but may not withdraw it.
    api.refused(
        "bureau-market",
        "POST",
        f"/v1/registrations/{rid}/withdraw",
        403,
        "registration.domain",
        json={},
    )
    app = api.ok(
        "admin",
        "POST",
        f"/v1/registrations/{rid}/resolve",
        json={"objection": ob_id, "verdict": "uphold", "comment": "a duplicate of health.visits"},
    )
    assert app["state"] == "rejected"
    api.refused("admin", "POST", f"/v1/registrations/{rid}/issue", 409, "registration.state")
    # Withdrawal: only the applying bureau.
    toml = VISITS.replace("health.visits", "health.visits_c")
    rid = api.ok(
        "bureau-health",
        "POST",
        "/v1/registrations",
        json={**_apply_body(api.upload()), "classification": toml},
    )["id"]
    api.refused(
        "admin", "POST", f"/v1/registrations/{rid}/withdraw", 403, "registration.role", json={}
    )
    assert (
        api.ok("bureau-health", "POST", f"/v1/registrations/{rid}/withdraw", json={})["state"]
        == "withdrawn"
    )


def test_catalog_and_grant_applications(api: Api) -> None:
    listed = api.ok("op-bank", "GET", "/v1/catalog")
    ids = [e["id"] for e in listed]
    assert "health.claims" in ids and "transport.trips" in ids
    claims = next(e for e in listed if e["id"] == "health.claims")
    assert claims["how_to_apply"]["http"] == "POST /v1/grant-applications"
    assert all("bounds" not in c for c in claims["columns"])
    api.refused("op-bank", "GET", "/v1/catalog/health.nothing", 404, "dataset.unknown")
    # A bureau reads its own domains' part (its catalog.read holds there only).
    own = [e["id"] for e in api.ok("bureau-market", "GET", "/v1/catalog")]
    assert own == ["market.enterprises"]
    api.refused("bureau-market", "GET", "/v1/catalog/health.claims", 403, "domain.outside")
    assert len(api.ok("auditor", "GET", "/v1/catalog")) == len(listed)

    ask = {
        "dataset": "health.claims",
        "purpose_code": "chronic-care-planning",
        "purpose_text": "claims by district and diagnosis for planning",
        "columns": ["district", "diagnosis_code", "claim_amount"],
        "groupable": ["diagnosis_code"],
        "duration_days": 90,
        "use": "public_interest",
    }
    api.refused(
        "bureau-health", "POST", "/v1/grant-applications", 403, "application.role", json=ask
    )
    api.refused(
        "op-planner",
        "POST",
        "/v1/grant-applications",
        400,
        "grant.terms",
        json={**ask, "columns": ["district", "id_number"]},
    )
    app = api.ok("op-planner", "POST", "/v1/grant-applications", json=ask)
    aid = app["id"]
    assert app["state"] == "submitted" and app["asked"]["release_mode"] is None
    # Visible to both sides and auditors, to nobody else.
    assert aid in [a["id"] for a in api.ok("bureau-health", "GET", "/v1/grant-applications")]
    assert aid in [a["id"] for a in api.ok("auditor", "GET", "/v1/grant-applications")]
    api.refused("op-bank", "GET", f"/v1/grant-applications/{aid}", 404, "application.unknown")
    # Only the owning bureau decides.
    api.refused(
        "op-planner",
        "POST",
        f"/v1/grant-applications/{aid}/approve",
        403,
        "application.role",
        json={},
    )
    api.refused(
        "bureau-market",
        "POST",
        f"/v1/grant-applications/{aid}/approve",
        404,
        "application.unknown",
        json={},
    )
    amend = {"columns": ["district", "diagnosis_code"], "release_mode": "dp", "k": 20}
    api.refused(
        "bureau-health",
        "POST",
        f"/v1/grant-applications/{aid}/approve",
        400,
        "application.reason",
        json=amend,
    )
    app = api.ok(
        "bureau-health",
        "POST",
        f"/v1/grant-applications/{aid}/approve",
        json={**amend, "reason": "amount is not needed for planning by counts"},
    )
    assert app["state"] == "amended"
    assert app["amendments"]["columns"] == {
        "asked": ["claim_amount", "diagnosis_code", "district"],
        "granted": ["diagnosis_code", "district"],
    }
    grant = api.ok("op-planner", "GET", f"/v1/grants/{app['grant']}")["grant"]
    assert grant["columns"] == ["diagnosis_code", "district"] and grant["k"] == 20
    assert grant["release_mode"] == "dp"
    api.refused(
        "bureau-health",
        "POST",
        f"/v1/grant-applications/{aid}/reject",
        409,
        "application.state",
        json={"reason": "late"},
    )
    # Reject with a reason; withdraw is the applicant's.
    aid2 = api.ok(
        "op-planner", "POST", "/v1/grant-applications", json={**ask, "use": "commercial"}
    )["id"]
    api.refused(
        "bureau-health",
        "POST",
        f"/v1/grant-applications/{aid2}/reject",
        400,
        "application.reason",
        json={},
    )
    app = api.ok(
        "bureau-health",
        "POST",
        f"/v1/grant-applications/{aid2}/reject",
        json={"reason": "commercial use of claims is not offered"},
    )
    assert app["state"] == "rejected" and app["reason"].startswith("commercial")
    seen = api.ok("op-planner", "GET", f"/v1/grant-applications/{aid2}")
    assert [s["step"] for s in seen["steps"]] == ["apply", "reject"]
    aid3 = api.ok("op-planner", "POST", "/v1/grant-applications", json=ask)["id"]
    api.refused(
        "bureau-health",
        "POST",
        f"/v1/grant-applications/{aid3}/withdraw",
        403,
        "application.role",
        json={},
    )
    assert (
        api.ok("op-planner", "POST", f"/v1/grant-applications/{aid3}/withdraw", json={})["state"]
        == "withdrawn"
    )
    # The exchange is in the audit trail, reads included.
    reads = {(e.actor, e.decision, e.rule) for e in api.entries("application.read")}
    assert ("op-bank", "deny", "application.not_own") in reads
    assert ("auditor", "allow", "allow.read") in reads
    for action in ("grant.apply", "grant.approve", "grant.reject", "grant.withdraw_application"):
        assert any(e.decision == "allow" for e in api.entries(action)), action
    assert any(e.rule == "application.domain" for e in api.entries("grant.approve"))


def test_an_upload_is_sealed_on_disk_and_recorded_by_its_plain_bytes(api: Api) -> None:
    import hashlib

    from sandbox.core.sealed import MAGIC

    assert api.services.platform.data_keys is not None  # the deployment is encrypted
    staging = api.services.platform.settings.staging_dir
    known = f"1101{7:014d}".encode()  # an id_number of the uploaded CSV
    assert known in CSV.encode()
    upload_id = api.upload()
    (staged,) = [
        p
        for p in (staging / "uploads").glob(f"{upload_id}.*")
        if not p.name.endswith(".upload.json")
    ]
    on_disk = staged.read_bytes()
    assert on_disk.startswith(MAGIC) and known not in on_disk and b"person_id" not in on_disk
    toml = VISITS.replace("health.visits", "health.visits_s")
    body = {**_apply_body(upload_id), "classification": toml}
    app = api.ok("bureau-health", "POST", "/v1/registrations", json=body)
    source = api.ok("bureau-health", "GET", f"/v1/registrations/{app['id']}")["source"]
    assert source["bytes"] == len(CSV.encode())
    assert source["sha256"] == hashlib.sha256(CSV.encode()).hexdigest()
    kept = list((staging / "registrations" / app["id"]).iterdir())
    assert len(kept) == 1 and not staged.exists()
    held = kept[0].read_bytes()
    assert held.startswith(MAGIC) and known not in held
    api.ok("bureau-health", "POST", f"/v1/registrations/{app['id']}/withdraw", json={})


def test_an_upload_named_json_keeps_its_record(api: Api) -> None:
    """``rows.json`` is stored as ``up_<id>.json``: its record is ``up_<id>.upload.json``,
    so the data never overwrites the record (it did when both were ``up_<id>.json``)."""
    rows = "\n".join(f'{{"person_id": "P{i}", "visits": {i % 5}}}' for i in range(30))
    body = api.ok(
        "bureau-health",
        "POST",
        "/v1/uploads",
        params={"domain": "health", "filename": "rows.json"},
        content=rows.encode(),
        headers={"Content-Type": "application/octet-stream"},
    )
    uploads = api.services.platform.settings.staging_dir / "uploads"
    data, record = (
        uploads / f"{body['upload_id']}.json",
        uploads / f"{body['upload_id']}.upload.json",
    )
    assert data.is_file() and record.is_file()
    info = json.loads(record.read_text())
    assert info["file"] == data.name and info["bytes"] == len(rows.encode())
    usage = api.services.staging.usage()
    assert usage.by_owner.get("bureau-health", 0) >= data.stat().st_size  # counted as data
