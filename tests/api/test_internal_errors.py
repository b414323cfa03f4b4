"""A bug on a query path is a clean, audited ``500 internal_error`` carrying the request id.

The application is served by uvicorn in a thread of the test process, over real HTTP
(every middleware and handler of ``create_app``, the job runner started by its
lifespan), so a query-path function can be made to raise what no rule anticipates.
The exception's text carries a value (``47114711``): it must reach neither the answer
nor the audit trail, only the server log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from audit import EntryFilter
from audit.entry import Entry
from sandbox.api.app import create_app
from sandbox.core.errors import AuditUnavailable
from sandbox.core.settings import Settings
from sandbox.services import Services
from tests.api.conftest import in_thread
from tests.conftest import build_deployment

BY_DISTRICT = "SELECT district, count(*) AS n FROM health.claims GROUP BY 1"
SECRET = "47114711"
# Eight digits: four could turn up by chance in a random hex job id (job_c354711018be...).


@dataclass
class App:
    client: httpx.Client
    services: Services
    tokens: dict[str, str]

    def headers(self, who: str, rid: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", "X-Request-ID": rid}

    def entries(self, **filters: Any) -> list[Entry]:
        return self.services.platform.audit.entries(EntryFilter(**filters), limit=10_000)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    home = tmp_path_factory.mktemp("internal") / "home"
    platform, tokens = build_deployment(home)
    platform.close()
    application = create_app(Settings(home=home, threads=2, job_workers=1))
    with in_thread(application, "internal-errors") as client:
        yield App(client, application.state.services, tokens)


def broken(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise RuntimeError(f"value {SECRET} of some row")


def assert_clean_500(response: Any, rid: str) -> None:
    assert response.status_code == 500
    assert response.json() == {
        "code": "internal_error",
        "message": f"internal error (request id {rid}); the details are in the server log",
        "rule": None,
    }
    assert response.headers.get_list("X-Request-ID") == [rid]
    assert SECRET not in response.text


def internal_entry(app: App, rid: str) -> Entry:
    (entry,) = [e for e in app.entries(action="api.internal_error") if e.request_id == rid]
    assert SECRET not in json.dumps(entry.details) and SECRET not in entry.target
    return entry


@pytest.mark.parametrize(
    ("component", "name", "method", "path", "route", "body"),
    [
        ("service", "explain", "POST", "/v1/explain", "/v1/explain", {"sql": BY_DISTRICT}),
        ("service", "check", "POST", "/v1/jobs", "/v1/jobs", {"sql": BY_DISTRICT}),
        ("desk", "get", "GET", "/v1/jobs/j-0123", "/v1/jobs/{job_id}", None),
    ],
    ids=["explain", "job-submission", "job-status"],
)
def test_an_unexpected_error_is_an_audited_500_with_the_request_id(
    app: App,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    component: str,
    name: str,
    method: str,
    path: str,
    route: str,
    body: dict[str, str] | None,
) -> None:
    monkeypatch.setattr(getattr(app.services, component), name, broken)
    rid = f"internal-{name}-0001"
    with caplog.at_level(logging.ERROR, logger="sandbox.api"):
        response = app.client.request(method, path, json=body, headers=app.headers("op-bank", rid))
    assert_clean_500(response, rid)
    entry = internal_entry(app, rid)
    assert (entry.actor, entry.role, entry.decision, entry.rule) == (
        "op-bank",
        "operator",
        "deny",
        "api.internal_error",
    )
    assert entry.target == f"api:{method} {route}"
    # Other fields (the token's attribution) may join; the exception's text never does.
    assert (
        entry.details.items() >= {"method": method, "route": route, "error": "RuntimeError"}.items()
    )
    # The traceback, text included, is in the server log only.
    logged = [
        r
        for r in caplog.records
        if r.name == "sandbox.api" and r.exc_info and r.exc_info[0] is RuntimeError
    ]
    assert logged and rid in logged[0].getMessage()


def test_an_error_before_the_actor_is_known_is_recorded_as_anonymous(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.services.platform.authority, "authenticate", broken)
    rid = "internal-auth-0001"
    response = app.client.get("/v1/me", headers=app.headers("op-bank", rid))
    assert_clean_500(response, rid)
    entry = internal_entry(app, rid)
    assert (entry.actor, entry.role, entry.target) == ("anonymous", "-", "api:GET /v1/me")


@pytest.mark.parametrize(
    "failure",
    [AuditUnavailable("the trail is down", rule="audit.unavailable"), OSError("disk full")],
    ids=["audit-unavailable", "os-error"],
)
def test_when_the_audit_append_fails_too_the_answer_is_still_a_clean_500(
    app: App, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    record = app.services.platform.record

    def failing(**fields: Any) -> Any:
        if fields["action"] == "api.internal_error":
            raise failure
        return record(**fields)

    monkeypatch.setattr(app.services.service, "explain", broken)
    monkeypatch.setattr(app.services.platform, "record", failing)
    rid = f"internal-noaudit-{type(failure).__name__}"
    response = app.client.post(
        "/v1/explain", json={"sql": BY_DISTRICT}, headers=app.headers("op-bank", rid)
    )
    assert_clean_500(response, rid)
    assert not [e for e in app.entries(action="api.internal_error") if e.request_id == rid]


def test_a_job_whose_run_raises_fails_with_job_internal_and_is_audited(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.services.service, "run_job", broken)
    response = app.client.post(
        "/v1/jobs",
        params={"wait": "true", "timeout": "30"},
        json={"sql": BY_DISTRICT},
        # op-insurer's grant is dp: op-bank's reviewed one is never waited for (held_view)
        headers=app.headers("op-insurer", "internal-job-0001"),
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["state"], job["rule"], job["message"]) == (
        "failed",
        "job.internal",
        "internal error",
    )
    assert SECRET not in response.text
    (entry,) = [e for e in app.entries(action="dataset.query") if e.request_id == job["id"]]
    assert (entry.actor, entry.decision, entry.rule) == ("op-insurer", "deny", "job.internal")
    expected = {"reason": "internal error", "job": job["id"], "error": "RuntimeError"}
    assert entry.details.items() >= expected.items()
    assert SECRET not in json.dumps(entry.details)


def test_the_home_is_a_real_deployment(app: App) -> None:
    """The fixture is not a stub: the same app answers a real query when nothing is broken."""
    response = app.client.post(
        "/v1/explain", json={"sql": BY_DISTRICT}, headers=app.headers("op-bank", "fine-0001")
    )
    assert response.status_code == 200 and response.json()["accepted"] is True
    assert Path(app.services.base_settings.home).is_dir()


def test_a_classification_with_infinite_bounds_is_a_422_naming_the_key(app: App) -> None:
    """Issue 11's file over HTTP: refused with the key and the reason, not a 500 later."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "sandbox/enclave/demo/health.claims.toml").read_text("utf-8")
    response = app.client.put(
        "/v1/datasets/health.claims/classification",
        json={"classification": text.replace("bounds = [0, 13000]", "bounds = [0, inf]")},
        headers=app.headers("bureau-health", "classify-inf-0001"),
    )
    assert response.status_code == 422
    assert response.json() == {
        "code": "invalid_classification",
        "message": "api: columns.claim_amount.bounds: bounds must be finite numbers "
        "(inf, -inf and nan are refused)",
        "rule": "classification.invalid",
    }
