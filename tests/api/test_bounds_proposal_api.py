"""POST /v1/datasets/{id}/bounds-proposal: the owning bureau's DP proposal over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from sandbox.api.app import create_app
from sandbox.core.settings import Settings
from tests.api.conftest import free_port
from tests.conftest import build_deployment

PATH = "/v1/datasets/health.claims/bounds-proposal"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, dict]]:
    home = tmp_path_factory.mktemp("bounds-api") / "home"
    platform, tokens = build_deployment(home)
    platform.close()
    application = create_app(Settings(home=home, threads=2, job_workers=1))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(application, port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, name="uvicorn-bounds", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=fresh) as client:
            yield client, tokens
    finally:
        server.should_exit = True
        thread.join(30)


def _auth(tokens: dict, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


def test_the_bureau_gets_a_proposal_and_each_one_spends(api) -> None:
    client, tokens = api
    first = client.post(PATH, json={"epsilon": 0.5}, headers=_auth(tokens, "bureau-health"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["dataset"] == "health.claims" and body["epsilon"] == 0.5
    assert body["contribution"]["max_rows_per_entity"] >= 1
    assert "[contribution]" in body["toml"]
    assert body["owner_epsilon_spent"] == pytest.approx(0.5)
    second = client.post(PATH, json={"epsilon": 0.5}, headers=_auth(tokens, "bureau-health"))
    assert second.json()["owner_epsilon_spent"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("who", "body", "status"),
    [
        ("op-insurer", {}, 403),  # as for PUT .../classification: only its bureau
        ("bureau-market", {}, 403),
        ("bureau-health", {"epsilon": 0}, 422),
        ("bureau-health", {"percentile": 1.5}, 422),
    ],
)
def test_refusals(api, who: str, body: dict, status: int) -> None:
    client, tokens = api
    response = client.post(PATH, json=body, headers=_auth(tokens, who))
    assert response.status_code == status, response.text
