"""POST /v1/datasets/{id}/bounds-proposal: the owning bureau's DP proposal over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.api.app import create_app
from sandbox.core.settings import Settings
from tests.api.conftest import in_thread
from tests.conftest import build_deployment

PATH = "/v1/datasets/health.claims/bounds-proposal"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, dict]]:
    home = tmp_path_factory.mktemp("bounds-api") / "home"
    platform, tokens = build_deployment(home)
    platform.close()
    application = create_app(Settings(home=home, threads=2, job_workers=1))
    with in_thread(application, "bounds") as client:
        yield client, tokens


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
