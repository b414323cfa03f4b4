"""The negative-list attack corpus (``attacks/negative_list.jsonl``) against a real server.

Its own deployment: the lists are set over HTTP by the roles that own them (a
prohibited column and dataset, a strictly limited column, an important dataset) before
the corpus runs.  Every line must be refused by explain and by job submission with the
rule it names, the message must name no value, and the trail must record each denial.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import LiveServer, served

CORPUS = Path(__file__).parent / "attacks" / "negative_list.jsonl"
LINES = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines() if line.strip()]
LISTED = (
    ("bureau-health", "/v1/negative-list", "health.claims.claim_amount", "prohibited"),
    ("admin", "/v1/negative-list", "transport.trips", "prohibited"),
    ("admin", "/v1/negative-list", "health.claims.diagnosis_code", "limited"),
    ("bureau-market", "/v1/important-data", "market.enterprises", None),
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with served(tmp_path_factory.mktemp("negative-attacks")) as server:
        for who, path, item, kind in LISTED:
            body: dict[str, Any] = {"item": item, "reason": "attack corpus"}
            if kind is not None:
                body["kind"] = kind
            response = _call(server, who, "POST", path, json=body)
            assert response.status_code == 201, response.text
        yield server


def _call(live: LiveServer, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {live.tokens[who]}"}
    return httpx.request(method, live.url + path, headers=headers, timeout=60, **kw)


@pytest.mark.parametrize("line", LINES, ids=lambda line: line["id"])
def test_refused_with_its_rule(live: LiveServer, line: dict[str, Any]) -> None:
    verdict = _call(live, line["as"], "POST", "/v1/explain", json={"sql": line["sql"]}).json()
    assert (verdict["accepted"], verdict["rule"]) == (False, line["rule"]), verdict
    job = _call(
        live, line["as"], "POST", "/v1/jobs", params={"wait": "true"}, json={"sql": line["sql"]}
    )
    assert job.status_code == 422, job.text
    assert job.json()["rule"] == line["rule"]
    assert set(job.json()) == {"code", "message", "rule"}


def test_every_refusal_is_in_the_trail(live: LiveServer) -> None:
    params = {"action": "dataset.query", "decision": "deny", "limit": 1000}
    entries = _call(live, "auditor", "GET", "/v1/audit/entries", params=params)
    assert entries.status_code == 200, entries.text
    denied = [e for e in entries.json()["entries"] if e["decision"] == "deny"]
    rules = {e["rule"] for e in denied}
    assert {line["rule"] for line in LINES} <= rules
    assert len(denied) >= 2 * len(LINES)
