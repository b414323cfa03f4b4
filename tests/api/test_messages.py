"""Error messages a user can act on: what is wrong, where, and never the value sent."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import LiveServer

SECRET = "confidential-4711"


def post(server: LiveServer, path: str, who: str = "op-bank", **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.tokens[who]}"}
    return httpx.post(f"{server.url}{path}", headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def test_a_missing_field_is_named_with_the_problem(server: LiveServer) -> None:
    answer = post(server, "/v1/explain", json={"sqll": "SELECT 1"})
    assert answer.status_code == 422
    body = answer.json()
    assert (body["code"], body["rule"]) == ("invalid_request", "api.schema")
    assert "body.sql: Field required" in body["message"]


def test_a_bad_value_is_described_not_echoed(server: LiveServer) -> None:
    answer = post(server, "/v1/reviews/job_x", "bureau-health", json={"verdict": SECRET})
    assert answer.status_code == 422
    message = answer.json()["message"]
    assert "body.verdict: Input should be 'approve' or 'reject'" in message
    assert SECRET not in answer.text


def test_a_query_parameter_out_of_range_names_the_bound(server: LiveServer) -> None:
    answer = httpx.get(
        f"{server.url}/v1/audit/entries?limit=99999",
        headers={"Authorization": f"Bearer {server.tokens['auditor']}"},
    )
    assert answer.status_code == 422
    assert "query.limit: Input should be less than or equal to 10000" in answer.json()["message"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"sql": ', "body: not valid JSON"),
        (b"", "body: a JSON body is required"),
    ],
)
def test_a_body_that_is_not_json_says_so(server: LiveServer, content: bytes, expected: str) -> None:
    answer = httpx.post(
        f"{server.url}/v1/explain",
        content=content,
        headers={
            "Authorization": f"Bearer {server.tokens['op-bank']}",
            "Content-Type": "application/json",
        },
    )
    assert answer.status_code == 422
    assert expected in answer.json()["message"], answer.json()


@pytest.mark.parametrize("header", [None, "Basic b3AtYmFuazpzZWNyZXQ=", "Bearer"])
def test_no_bearer_token_says_the_header_is_missing(server: LiveServer, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    answer = httpx.get(f"{server.url}/v1/me", headers=headers, timeout=30)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    body = answer.json()
    assert (body["code"], body["rule"]) == ("unauthenticated", "auth.token_missing")
    assert "Authorization: Bearer <token>" in body["message"]
    assert "unknown token" not in body["message"]


def test_an_unknown_token_is_still_called_unknown(server: LiveServer) -> None:
    answer = httpx.get(f"{server.url}/v1/me", headers={"Authorization": "Bearer sbx_x"}, timeout=30)
    assert answer.status_code == 401 and answer.json()["rule"] == "auth.token_unknown"
