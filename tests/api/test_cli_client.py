"""`sandbox query --url`, `sandbox job ...` remote and local, and the client's error mapping."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from sandbox.cli.main import main
from sandbox.client import ConnectionFailed, SandboxClient, error_from_response
from sandbox.core.errors import QueryRefused, RateLimited, SandboxError

BY_DISTRICT = "SELECT district, count(*) AS n FROM health.claims GROUP BY 1"


class Run:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = code, stdout, stderr


@pytest.fixture
def sandbox(capsys: pytest.CaptureFixture[str]):
    """`sandbox ARGS...` in this process (as `main` runs it): exit status, stdout, stderr."""

    def run(*args: str) -> Run:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def approved(server, job: dict) -> dict:
    """op-bank's grants are reviewed: the health bureau approves a held job."""
    if job["state"] != "awaiting_review":
        return job
    with server.client("bureau-health") as bureau:
        return bureau.approve(job["id"], "district counts")


def test_query_and_jobs_over_http(server, sandbox, tmp_path: Path) -> None:
    token = server.tokens["op-bank"]
    held = sandbox("query", "--url", server.url, "--token", token, BY_DISTRICT)
    assert held.returncode == 2 and "rule: job.review" in held.stderr, held.stderr
    job = held.stderr.split("job ", 1)[1].split()[0]
    assert approved(server, {"id": job, "state": "awaiting_review"})["state"] == "succeeded"
    table = sandbox("query", "--url", server.url, "--token", token, BY_DISTRICT)  # released
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["district", "n"]
    assert "audit entry " in table.stderr
    refused = sandbox(
        "query", "--url", server.url, "--token", token, "SELECT name FROM health.claims"
    )
    assert refused.returncode == 2 and "rule: guard." in refused.stderr
    explained = sandbox("query", "--url", server.url, "--token", token, "--explain", BY_DISTRICT)
    assert json.loads(explained.stdout)["accepted"] is True

    submitted = sandbox(
        "job", "submit", "--url", server.url, "--token", token, BY_DISTRICT, "--wait"
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id, state = submitted.stdout.split()[:2]
    assert state == "succeeded"
    status = json.loads(
        sandbox("job", "status", job_id, "--url", server.url, "--token", token).stdout
    )
    assert status["id"] == job_id
    out = tmp_path / "r.parquet"
    fetched = sandbox(
        "job",
        "result",
        job_id,
        "--url",
        server.url,
        "--token",
        token,
        "--format",
        "parquet",
        "--out",
        str(out),
        "--receipt",
        str(tmp_path / "receipt.json"),
    )
    assert fetched.returncode == 0, fetched.stderr
    assert pq.read_table(out).column_names == ["district", "n"]
    verified = sandbox(
        "--home", str(server.home), "receipt", "verify", str(tmp_path / "receipt.json")
    )
    assert verified.returncode == 0 and verified.stdout.startswith("valid:")
    csv = sandbox("job", "result", job_id, "--url", server.url, "--token", token, "--format", "csv")
    assert csv.stdout.startswith('"district","n"')
    listed = sandbox("job", "list", "--url", server.url, "--token", token, "--limit", "3")
    assert job_id in listed.stdout
    waited = sandbox("job", "wait", job_id, "--url", server.url, "--token", token)
    assert waited.returncode == 0 and "succeeded" in waited.stdout
    done = sandbox("job", "cancel", job_id, "--url", server.url, "--token", token)
    assert done.returncode == 2 and "job.final" in done.stderr


def test_jobs_on_the_local_home_without_a_server(sandbox, tmp_path: Path) -> None:
    from tests.api.conftest import deployment

    home = tmp_path / "home"
    tokens = deployment(home)
    base = ["--home", str(home), "job"]
    queued = sandbox(
        *base,
        "submit",
        "--token",
        tokens["op-planner"],
        "SELECT board_station, count(*) AS n FROM transport.trips GROUP BY 1",
    )
    assert queued.returncode == 0, queued.stderr
    job_id, state = queued.stdout.split()[:2]
    assert state == "queued"  # for the home's server; `wait` runs it here
    waited = sandbox(*base, "wait", job_id, "--token", tokens["op-planner"])
    assert waited.returncode == 0 and "succeeded" in waited.stdout, waited.stderr
    shown = sandbox(*base, "result", job_id, "--token", tokens["op-planner"], "--format", "json")
    assert json.loads(shown.stdout)["columns"] == ["board_station", "n"]
    other = sandbox(*base, "status", job_id, "--token", tokens["op-bank"])
    # Another operator's job answers as a missing one (owner.mismatch is audited).
    assert other.returncode == 2 and f"no job {job_id} (rule: job.unknown)" in other.stderr
    # A job submitted with a token that is revoked before it runs is refused, and audited.
    from datetime import timedelta

    from policies import Actor, Administration
    from sandbox.core.settings import Settings
    from sandbox.platform import Platform

    platform = Platform(Settings(home=home))
    try:
        admin = Administration(platform.authority)
        enrolment = admin.issue_enrolment(
            Actor.host("tests"), "op-planner", token_ttl=timedelta(days=1)
        )
        spare = admin.redeem_enrolment(enrolment.code)
        queued = sandbox(
            *base,
            "submit",
            "--token",
            spare.token,
            "SELECT board_station, count(*) AS n FROM transport.trips GROUP BY 1",
        )
        stolen = queued.stdout.split()[0]
        admin.revoke_token(Actor.host("tests"), spare.id)
        refused = sandbox(*base, "wait", stolen, "--token", tokens["op-planner"])
        assert refused.returncode == 2 and "auth.token_revoked" in refused.stderr
        entry = platform.audit.entries(newest_first=True, limit=1)[0]
        assert (entry.target, entry.rule) == (f"query:{stolen}", "auth.token_revoked")
    finally:
        platform.close()


def test_client_maps_every_error_to_its_class() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs":
            return httpx.Response(
                429,
                json={"code": "rate_limited", "message": "slow down", "rule": "api.rate_limit"},
                headers={"Retry-After": "7"},
            )
        if request.url.path == "/v1/explain":
            return httpx.Response(
                422, json={"code": "query_refused", "message": "no", "rule": "guard.syntax"}
            )
        return httpx.Response(418, text="teapot")

    client = SandboxClient("http://sandbox.test", "sbx_x", transport=httpx.MockTransport(respond))
    with pytest.raises(RateLimited) as limited:
        client.jobs()
    assert limited.value.retry_after == 7 and limited.value.rule == "api.rate_limit"
    with pytest.raises(QueryRefused):
        client.explain("SELECT 1")
    with pytest.raises(SandboxError) as other:
        client.me()
    assert other.value.status == 418 and other.value.code == "http_error"
    assert isinstance(error_from_response(httpx.Response(400, content=b"{}")), SandboxError)
    unreachable = SandboxClient("http://127.0.0.1:9", "sbx_x", timeout=2)
    with pytest.raises(ConnectionFailed):
        unreachable.health()


def test_result_frame_needs_pandas_or_says_so(server) -> None:
    with server.client("op-bank") as bank:
        job = approved(server, bank.submit(BY_DISTRICT, wait=True))
        try:
            import pandas  # noqa: F401
        except ImportError:
            with pytest.raises(SandboxError) as info:
                bank.result_frame(job["id"])
            assert info.value.rule == "client.pandas"
        else:
            assert list(bank.result_frame(job["id"]).columns) == ["district", "n"]
        chunks = b"".join(bank.stream_result(job["id"], "csv"))
        assert io.BytesIO(chunks).read().startswith(b'"district","n"')
