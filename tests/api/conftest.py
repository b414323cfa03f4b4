"""A real server for end-to-end tests: `sandbox serve` in a subprocess on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uvicorn

from sandbox.client import SandboxClient
from sandbox.core.errors import SandboxError
from tests.conftest import build_deployment

LAB_EVENTS = """
[dataset]
id = "lab.events"
title = "Synthetic events (a test bureau's dataset)"
entity_key = "id"

[columns.id]
level = "L3"
role = "identifier"

[columns.key]
level = "L2"
role = "identifier"
joinable = ["lab.pairs.key"]

[columns.bucket]
level = "L1"
role = "dimension"

[columns.value]
level = "L2"
role = "measure"
bounds = [0, 100]
"""

LAB_PAIRS = """
[dataset]
id = "lab.pairs"
title = "Synthetic pairs"
entity_key = "id"

[columns.id]
level = "L3"
role = "identifier"

[columns.key]
level = "L2"
role = "identifier"
joinable = ["lab.events.key"]

[columns.bucket]
level = "L1"
role = "dimension"
"""

SLOW_JOIN = (
    "SELECT e.bucket, count(*) AS n FROM lab.events e JOIN lab.pairs p ON e.key = p.key "
    "WHERE e.bucket <> p.bucket GROUP BY 1"
)
"""Billions of joined pairs, filtered across both sides (DuckDB cannot pre-aggregate it)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lab_files(directory: Path, rows: int = 100_000) -> tuple[Path, Path]:
    """Two Parquet files whose join on ``key`` (2 values) is slow: rows² / 2 pairs."""
    ids = pa.array([f"p{i:07d}" for i in range(rows)])
    keys = pa.array([f"k{i % 2}" for i in range(rows)])
    buckets = pa.array([f"b{i % 4}" for i in range(rows)])
    events = directory / "events.parquet"
    pairs = directory / "pairs.parquet"
    values = pa.array([float(i % 100) for i in range(rows)])
    pq.write_table(pa.table({"id": ids, "key": keys, "bucket": buckets, "value": values}), events)
    pq.write_table(pa.table({"id": ids, "key": keys, "bucket": buckets}), pairs)
    return events, pairs


class LiveServer:
    """`sandbox serve` on a home, started, stopped, killed and restarted by the test."""

    def __init__(self, home: Path, tokens: dict[str, str], env: dict[str, str] | None = None):
        self.home = home
        self.tokens = tokens
        self.env = dict(os.environ, SANDBOX_HOME=str(home), **(env or {}))
        self.env.pop("SANDBOX_URL", None)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.workers = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, workers: int = 1) -> LiveServer:
        self.port = free_port()
        self.workers = workers
        log = open(self.home.parent / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox.cli",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        log.close()
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"server did not start: {self.log()[-2000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        path = self.home.parent / f"server-{self.port}.log"
        return path.read_text() if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs."""
        self.stop(signal.SIGKILL)

    def client(self, who: str) -> SandboxClient:
        return SandboxClient(self.url, self.tokens[who], timeout=60)


UNLIMITED = {"SANDBOX_RATE_LIMIT_PER_MINUTE": "1000000"}
"""A server environment for fuzzing: no rate limit in the way."""

SCHEMATHESIS_CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)


def run_schemathesis(
    live: LiveServer,
    who: str,
    *,
    examples: int,
    cwd: Path,
    mode: str = "positive",
    phases: str = "examples,fuzzing",
    seed: int = 20261124,
    timeout: float = 300,
) -> str:
    """The schemathesis CLI against ``live``'s OpenAPI document as ``who``; asserts it passed.

    A test dependency (``pip install -e '.[test]'``), never skipped: a missing install
    must fail the suite, not hide the fuzzing.
    """
    import schemathesis  # noqa: F401  - fail here, clearly, if it is not installed

    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{live.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {live.tokens[who]}",
        "--checks",
        SCHEMATHESIS_CHECKS,
        "--max-examples",
        str(examples),
        "--phases",
        phases,
        "--mode",
        mode,
        "--seed",
        str(seed),
        "--workers",
        "2",
        "--generation-database",
        "none",
        "--exclude-path",
        "/v1/admin/settings",  # would lower the limits under the other roles' feet
        "--no-color",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout, run.stdout[-2000:]
    return run.stdout


def deployment(home: Path) -> dict[str, str]:
    platform, tokens = build_deployment(home)
    platform.close()
    (home / "demo-tokens.json").write_text(json.dumps(tokens))
    return dict(tokens)


@contextmanager
def served(root: Path, env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    """A demo deployment under ``root`` served for the duration of the block."""
    home = root / "home"
    live = LiveServer(home, deployment(home), env=env)
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A module's own deployment and server (tests may change its state)."""
    env = {"SANDBOX_JOB_WORKERS": "2", **FAST_PUBLICITY}
    with served(tmp_path_factory.mktemp("api"), env) as live:
        yield live


@contextmanager
def in_thread(application: Any, name: str) -> Iterator[httpx.Client]:
    """``application`` served by uvicorn in a thread of the test process (its lifespan and
    job runner included), on a free loopback port; a client on it until the block ends."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(application, port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        # A fresh connection per request: under load a kept-alive one may be closed by the
        # server's keep-alive timeout just as a request goes out (a flake, not a finding).
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=fresh) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)


FAST_PUBLICITY = {
    "SANDBOX_REGISTRATION_PUBLICITY_DAYS": "0.00001",
    "SANDBOX_REVISION_PUBLICITY_DAYS": "0.00001",
}
"""A server environment whose registration publicity period (公示期, a loosening
revision's too) ends within a second,
so a test registers datasets through the whole procedure (``register``)."""


def register(
    live: LiveServer,
    bureau: str,
    classification: str,
    *,
    upload_id: str | None = None,
    path: str | None = None,
    update_frequency: str = "monthly",
) -> dict[str, Any]:
    """Register a dataset as a bureau must: through the registration procedure.

    ``bureau`` applies, the admin accepts, reviews and (after the publicity period of a
    first registration, on a server started with :data:`FAST_PUBLICITY`) issues.
    Returns what ``POST /v1/datasets`` used to: ``dataset`` (as the bureau's
    ``GET /v1/datasets`` shows it), ``replaced`` and ``certificate``.  A refusal of any
    step raises the client's :class:`SandboxError`.
    """
    with live.client(bureau) as applicant, live.client("admin") as admin:
        app = applicant.apply_registration(
            classification, update_frequency=update_frequency, upload_id=upload_id, path=path
        )
        steps = f"/v1/registrations/{app['id']}"
        admin._json("POST", f"{steps}/accept", json={})
        reviewed = admin._json(
            "POST", f"{steps}/review", json={"verdict": "approve", "comment": "test"}
        )
        deadline = time.time() + 60
        while True:
            try:
                out = admin._json("POST", f"{steps}/issue")
                break
            except SandboxError as exc:
                if exc.rule != "registration.publicity_not_over" or time.time() > deadline:
                    raise
                time.sleep(0.2)
        dataset_id = out["certificate"]["certificate"]["dataset"]
        shown = next(d for d in applicant.datasets() if d["id"] == dataset_id)
    return {
        "dataset": shown,
        "replaced": shown["version"] > 1,
        "certificate": out["certificate"],
        "application": out["application"],
        "form": reviewed.get("form"),
    }


def start_lab(root: Path, env: dict[str, str]) -> LiveServer:
    """A started server whose bureau-lab registered the two lab datasets (from uploads)
    and granted them to op-bank, reviewed: a join on a non-entity key is exact and held
    for review (dp joins only on entity keys).  ``env``: the server's settings.

    The lab's slow join is the vehicle of the job mechanics' tests (progress, cancel,
    queueing, inline runs, crashes), which watch a job's run: it is reviewed, and a
    reviewed job hides its run from its operator by default, so the lab shows it
    (``SANDBOX_REVIEW_TIMING_HIDDEN=0`` unless ``env`` says otherwise);
    ``tests/api/test_held_timing.py`` tests the default."""
    from tests.enrolling import enrol

    home = root / "home"
    tokens = deployment(home)
    shown = {"SANDBOX_REVIEW_TIMING_HIDDEN": "0"}
    server = LiveServer(home, tokens, env={**shown, **env, **FAST_PUBLICITY})
    server.start()
    with server.client("admin") as admin:
        admin.create_account(name="bureau-lab", role="bureau", organisation="Lab", domains=["lab"])
    server.tokens["bureau-lab"] = enrol(server.url, server.tokens["admin"], home, "bureau-lab")
    events, pairs = lab_files(root)
    with server.client("bureau-lab") as bureau:
        for toml, path in ((LAB_EVENTS, events), (LAB_PAIRS, pairs)):
            upload = bureau.upload(path, domain="lab")
            register(server, "bureau-lab", toml, upload_id=upload["upload_id"])
            bureau.issue_grant(
                dataset=toml.split('id = "')[1].split('"')[0],
                operator="op-bank",
                purpose_code="lab-tests",
                purpose_text="slow joins",
                valid_until="2030-01-01T00:00:00Z",
                max_level="L2",
                release_mode="reviewed",
            )
    return server


def held_job(store, operator: str = "op-a", sql: str = "SELECT 1") -> str:  # type: ignore[no-untyped-def]
    """A queued job bound for review (held_view), charged ε 0 when submitted; its id."""
    new = store.new(
        operator=operator,
        sql=sql,
        purpose=None,
        fmt="json",
        client=None,
        review_datasets=["health.claims"],
        prepaid=0.0,
    )
    return str(store.create_new(new).id)


def claims_grant_of(admin, bureau, operator: str):  # type: ignore[no-untyped-def]
    """``operator``'s demo grant on health.claims, as bureau-health's ``admin`` lists it."""
    (grant,) = [
        g
        for g in admin.list_grants(bureau, domain="health")
        if g.operator == operator and g.dataset == "health.claims"
    ]
    return grant
