"""What every answer carries and how the server answers abuse, over a real server: nosniff
everywhere and no-store on the API; 413 for any body over its limit, chunked or not; 408
for a stalled body; header size and idle connections bounded; "not yours" answered as
"does not exist" (the real rule audited)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import pytest

from sandbox.client import SandboxClient
from sandbox.core.errors import SandboxError
from tests.api.conftest import LiveServer, deployment, register

BY_STATION = "SELECT board_station, count(*) AS n FROM transport.trips GROUP BY 1"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("responses") / "home"
    env = {"SANDBOX_KEEP_ALIVE_TIMEOUT_S": "1", "SANDBOX_MAX_HEADER_BYTES": "8192"}
    server = LiveServer(home, deployment(home), env=env).start()
    try:
        yield server
    finally:
        server.stop()


def auth(live: LiveServer, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.tokens[who]}"}


def raw(live: LiveServer, data: bytes, *, then_wait: float = 0.0) -> bytes:
    """Send ``data`` on a fresh connection, optionally wait, and read what comes back."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(data)
        if then_wait:
            time.sleep(then_wait)
        chunks = []
        try:
            while chunk := sock.recv(65536):  # the server closes after these answers
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def test_every_answer_is_nosniff_and_api_answers_are_not_stored(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=60) as http:
        answers = {
            "health": http.get("/health"),
            "unknown route": http.get("/nowhere"),
            "unauthenticated": http.get("/v1/me"),
            "me": http.get("/v1/me", headers=auth(live, "op-planner")),
            "own token": http.post(
                "/v1/me/tokens", json={"days": 1}, headers=auth(live, "auditor")
            ),
            "enrolment": http.post(
                "/v1/admin/accounts/auditor/enrolments", json={}, headers=auth(live, "admin")
            ),
        }
        code = answers["enrolment"].json()["code"]
        made = {"code": code, "token_sha256": "ab" * 32}  # a token the holder made
        answers["redeemed"] = http.post("/v1/enrol", json=made)
        job = http.post(
            "/v1/jobs",
            params={"wait": "true"},
            json={"sql": BY_STATION},
            headers=auth(live, "op-planner"),
        ).json()
        answers["job with its rows"] = http.get(
            f"/v1/jobs/{job['id']}", headers=auth(live, "op-planner")
        )
        for fmt in ("json", "csv", "parquet", "arrow"):
            answers[f"result {fmt}"] = http.get(
                f"/v1/jobs/{job['id']}/result",
                params={"format": fmt},
                headers=auth(live, "op-planner"),
            )
        answers["receipt"] = http.get(
            f"/v1/jobs/{job['id']}/receipt", headers=auth(live, "op-planner")
        )
    for what, response in answers.items():
        assert response.headers["x-content-type-options"] == "nosniff", what
    for what in ("own token", "enrolment", "redeemed", "receipt", "job with its rows", "me"):
        assert answers[what].status_code < 300, (what, answers[what].text)
        assert answers[what].headers["cache-control"] == "no-store", what
    for fmt in ("json", "csv", "parquet", "arrow"):
        assert answers[f"result {fmt}"].headers["cache-control"] == "no-store"
    assert answers["unauthenticated"].headers["cache-control"] == "no-store"
    assert "no-store" not in answers["health"].headers.get("cache-control", "")


def test_a_body_over_the_limit_is_413_chunked_or_not(live: LiveServer) -> None:
    big = b'{"sql": "' + b"x" * (1_100_000) + b'"}'

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    with httpx.Client(base_url=live.url, timeout=60, headers=auth(live, "op-planner")) as http:
        announced = http.post(
            "/v1/explain", content=big, headers={"Content-Type": "application/json"}
        )
        streamed = http.post(
            "/v1/explain", content=chunked(), headers={"Content-Type": "application/json"}
        )
    for response in (announced, streamed):
        assert response.status_code == 413, response.text
        assert response.json() == {
            "code": "request_too_large",
            "message": "the request body is larger than 1048576 bytes",
            "rule": "api.body_size",
        }
        assert response.headers["x-content-type-options"] == "nosniff"
    with SandboxClient(live.url, live.tokens["admin"]) as admin:
        admin.update_settings(max_upload_bytes=64 * 1024)
    try:
        with httpx.Client(
            base_url=live.url, timeout=60, headers=auth(live, "bureau-health")
        ) as http:
            upload = http.post(
                "/v1/uploads",
                params={"domain": "health", "filename": "big.csv"},
                content=(b"a,b\n" + b"1,2\n" * 10_000 for _ in range(4)),
            )
        assert upload.status_code == 413 and upload.json()["rule"] == "api.body_size"
    finally:
        with SandboxClient(live.url, live.tokens["admin"]) as admin:
            admin.update_settings(max_upload_bytes=1 << 30)


def test_a_stalled_body_is_408(live: LiveServer) -> None:
    with SandboxClient(live.url, live.tokens["admin"]) as admin:
        admin.update_settings(body_read_timeout_s=1)
    time.sleep(1.2)  # every server process applies it within a second
    try:
        head = (
            "POST /v1/explain HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {live.tokens['op-planner']}\r\n"
            "Content-Length: 1000\r\n\r\n"
        ).encode()
        answer = raw(live, head + b'{"sql": "SELE', then_wait=2.5)
    finally:
        with SandboxClient(live.url, live.tokens["admin"]) as admin:
            admin.update_settings(body_read_timeout_s=30)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"rule":"api.body_timeout"' in answer


def test_headers_and_idle_connections_are_bounded(live: LiveServer) -> None:
    head = "GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: " + "a" * 20_000
    answer = raw(live, (head + "\r\n\r\n").encode())  # complete: the application refuses
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"rule":"api.header_size"' in answer
    # Still arriving and already too large: uvicorn stops buffering and refuses.
    answer = raw(live, (head + "a" * 20_000).encode())
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:200]
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}"):  # the whole answer: headers and JSON body
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        time.sleep(2.5)  # keep-alive timeout 1 s: the server has closed the connection
        sock.settimeout(5)
        assert sock.recv(65536) == b""


def test_not_yours_answers_as_does_not_exist(live: LiveServer) -> None:
    with SandboxClient(live.url, live.tokens["op-bank"]) as bank:
        theirs = bank.submit(
            "SELECT district, count(*) AS n FROM health.claims GROUP BY 1", wait=True
        )
    missing_job = "job_" + "0" * 24
    with httpx.Client(base_url=live.url, timeout=60, headers=auth(live, "op-planner")) as http:
        for suffix in ("", "/result", "/receipt"):
            other = http.get(f"/v1/jobs/{theirs['id']}{suffix}")
            absent = http.get(f"/v1/jobs/{missing_job}{suffix}")
            assert other.status_code == absent.status_code == 404
            assert other.json() == {
                **absent.json(),
                "message": absent.json()["message"].replace(missing_job, theirs["id"]),
            }
        # A dataset the planner holds no grant on answers like one that does not exist.
        granted_not = http.post("/v1/explain", json={"sql": "SELECT count(*) FROM health.claims"})
        nowhere = http.post("/v1/explain", json={"sql": "SELECT count(*) FROM health.nothing"})
        assert granted_not.json() == {
            **nowhere.json(),
            "message": nowhere.json()["message"].replace("health.nothing", "health.claims"),
        }
        assert granted_not.json()["rule"] == "dataset.unknown"
        submitted = http.post("/v1/jobs", json={"sql": "SELECT count(*) FROM health.claims"})
        assert submitted.status_code == 404 and submitted.json()["code"] == "not_found"
    with SandboxClient(live.url, live.tokens["auditor"]) as auditor:
        denied = auditor.audit_entries(actor="op-planner", decision="deny", limit=1000)
    rules = {e["rule"] for e in denied}
    assert {"owner.mismatch", "grant.missing", "dataset.unknown"} <= rules


def test_staging_quotas_per_account_and_in_total(live: LiveServer, tmp_path: Path) -> None:
    with SandboxClient(live.url, live.tokens["admin"]) as admin:
        admin.update_settings(max_staging_bytes_per_account=100_000, max_staging_bytes=100_000)
    time.sleep(1.2)
    try:
        source = tmp_path / "rows.csv"
        source.write_bytes(b"a,b\n" + b"1,2\n" * 15_000)  # 60 kB
        with SandboxClient(live.url, live.tokens["bureau-health"]) as health:
            first = health.upload(source, domain="health")
            assert first["bytes"] == source.stat().st_size
            with pytest.raises(SandboxError) as refused:
                health.upload(source, domain="health")
            assert (refused.value.status, refused.value.code, refused.value.rule) == (
                413,
                "staging_quota",
                "api.staging_quota",
            )
        with SandboxClient(live.url, live.tokens["bureau-market"]) as market:
            with pytest.raises(SandboxError) as full:
                market.upload(source, domain="market")
            assert (full.value.status, full.value.code) == (507, "staging_full")
        uploads = live.home / "staging" / "uploads"
        assert sorted(p.suffix for p in uploads.iterdir()) == [".csv", ".json"]  # refused: gone
    finally:
        with SandboxClient(live.url, live.tokens["admin"]) as admin:
            admin.update_settings(max_staging_bytes_per_account=4 << 30, max_staging_bytes=16 << 30)


def test_another_accounts_upload_answers_as_an_unknown_one(
    live: LiveServer, tmp_path: Path
) -> None:
    source = tmp_path / "rows.csv"
    source.write_bytes(b"a,b\n1,2\n")
    with SandboxClient(live.url, live.tokens["bureau-market"]) as market:
        theirs = market.upload(source, domain="market")["upload_id"]
    demo = resources.files("sandbox.enclave").joinpath("demo")
    classification = demo.joinpath("health.claims.toml").read_text("utf-8")
    answers = {}
    for name, upload_id in (("theirs", theirs), ("unknown", "up_" + "0" * 24)):
        with pytest.raises(SandboxError) as refused:
            register(live, "bureau-health", classification, upload_id=upload_id)
        error = refused.value
        answers[name] = (error.status, error.code, error.rule, error.message)
    assert answers["theirs"] == answers["unknown"]
    assert answers["theirs"][:3] == (404, "not_found", "api.upload")
    with SandboxClient(live.url, live.tokens["auditor"]) as auditor:
        denied = auditor.audit_entries(actor="bureau-health", decision="deny", limit=1000)
    assert [e for e in denied if e["rule"] == "upload.not_yours"], "the real reason is not audited"
