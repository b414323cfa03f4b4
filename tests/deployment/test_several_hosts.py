"""Several API hosts on one PostgreSQL: what a second host can do, and what survives a crash.

Two hosts are simulated as two processes with their own home directories
(``tests/deployment/hosts.py``): host A made by ``sandbox demo``, host B given a copy
of A's platform files as an operator would copy them; both run ``sandbox serve`` on
their own loopback port against one PostgreSQL (control plane and audit store) and
one shared warehouse directory.  The job runners are the servers' own (there is no
standalone runner command: ``sandbox serve`` runs one ``JobRunner`` per process,
``sandbox/services.py``).  Everything is driven through the installed command and
HTTP, as in docs/deployment.md, Several hosts.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import signal
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.blackbox.conftest import _free_port
from tests.connectors.helpers import CLASSIFICATION, visits_table, write
from tests.deployment.hosts import (
    Deployment,
    Host,
    copy_enclave,
    make_deployment,
    request,
    sandbox_cmd,
    serving,
)
from tests.pgserver import PgServer
from tests.sandbox.engines.spark_setup import require_spark

pytestmark = pytest.mark.postgres

OPERATOR = "op-insurer"  # a dp grant: each query spends the ε it asks for, out of 10
EPSILON = 0.001  # so the load below never exhausts the budget
SPARK_DATASET = "health.outpatient"
QUERY = "SELECT district, count(*) AS {name} FROM health.claims GROUP BY district"


@pytest.fixture(scope="module")
def deployment(
    pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    # Each host's Spark runs in its own server process (local mode, one core each).
    made = make_deployment(
        tmp_path_factory.mktemp("hosts"), pg_server, SANDBOX_SPARK_MASTER="local[1]"
    )
    with serving(made) as running:
        yield running


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _submit(url: str, token: str, name: str, *, timeout: float = 30) -> tuple[int, dict]:
    body = {"sql": QUERY.format(name=name), "epsilon": EPSILON, "format": "json"}
    return request(url, "POST", "/v1/jobs?wait=true&timeout=20", token, body, timeout=timeout)


def _entry_hashes(export: Path) -> dict[str, dict]:
    """Each exported entry by its chain hash: SHA-256 of the previous hash and the entry's
    canonical line (docs/audit.md), checked against the next entry's ``prev``."""
    lines = (export / "entries.jsonl").read_text(encoding="utf-8").splitlines()
    found: dict[str, dict] = {}
    entries = [json.loads(line) for line in lines]
    for i, (line, entry) in enumerate(zip(lines, entries, strict=True)):
        digest = hashlib.sha256(bytes.fromhex(entry["prev"]) + line.encode()).hexdigest()
        if i + 1 < len(entries):
            assert entries[i + 1]["prev"] == digest
        found[digest] = entry
    return found


def _export_and_verify(host: Host, keys: Path, out: Path) -> dict[str, dict]:
    """``sandbox audit export`` on ``host``'s console, ``sandbox audit verify`` with the
    trusted public keys ``keys``; the export's entries by hash."""
    exported = host.run("audit", "export", "--out", str(out))
    assert exported.code == 0, str(exported)
    trusted = out.parent / f"{out.name}-trusted-keys"
    trusted.mkdir()
    for pub in keys.glob("*.pub"):
        shutil.copy2(pub, trusted / pub.name)
    verified = sandbox_cmd("audit", "verify", str(out), "--keys", str(trusted), env=host.env)
    assert verified.code == 0 and verified.out.startswith("OK:"), str(verified)
    return _entry_hashes(out)


def test_both_hosts_serve_one_catalog_with_a_job_runner_each(deployment: Deployment) -> None:
    a, b = deployment.hosts
    token = deployment.tokens[OPERATOR]
    listed = [request(h.url, "GET", "/v1/datasets", token) for h in (a, b)]
    assert listed[0][0] == listed[1][0] == 200
    assert [d["id"] for d in listed[0][1]] == [d["id"] for d in listed[1][1]]
    assert "health.claims" in [d["id"] for d in listed[0][1]]
    for host in (a, b):
        done = sandbox_cmd(
            "query",
            "--url",
            host.url,
            "--token",
            token,
            "--format",
            "json",
            QUERY.format(name=f"n_{host.name.replace('-', '_')}"),
            env=host.env,
        )
        assert done.code == 0, str(done)
        assert json.loads(done.out)["meta"]["epsilon_spent"] > 0  # run, not a cached repeat
    # One job runner per server process, registered in the shared control plane.
    with psycopg.connect(_libpq(deployment.control_url)) as conn:
        rows = conn.execute("SELECT pid FROM job_runners WHERE stopped_at IS NULL").fetchall()
    assert sorted(pid for (pid,) in rows) == sorted(h.proc.pid for h in (a, b) if h.proc)


def test_a_job_submitted_on_one_host_is_followed_and_fetched_on_the_other(
    deployment: Deployment, tmp_path: Path
) -> None:
    a, b = deployment.hosts
    token = deployment.tokens[OPERATOR]
    sql = "SELECT diagnosis_code, count(*) AS n FROM health.claims GROUP BY diagnosis_code"
    submitted = sandbox_cmd(
        "job", "submit", "--url", a.url, "--token", token, "--epsilon", "0.01", sql, env=a.env
    )
    assert submitted.code == 0, str(submitted)
    job_id = submitted.out.split()[0]
    assert job_id.startswith("job_")
    waited = sandbox_cmd("job", "wait", "--url", b.url, "--token", token, job_id, env=b.env)
    assert waited.code == 0, str(waited)
    receipt = tmp_path / "receipt.json"
    result = sandbox_cmd(
        "job",
        "result",
        "--url",
        b.url,
        "--token",
        token,
        "--format",
        "json",
        "--receipt",
        str(receipt),
        job_id,
        env=b.env,
    )
    assert result.code == 0, str(result)
    assert json.loads(receipt.read_text())["receipt"]["request_id"] == job_id
    # The receipt B handed out is signed with the platform key both hosts hold.
    public = tmp_path / "platform.pub"
    key_id = json.loads(receipt.read_text())["key_id"]
    shutil.copy2(a.home / "keys" / f"{key_id}.pub", public)
    checked = sandbox_cmd("receipt", "verify", str(receipt), "--public-key", str(public), env=b.env)
    assert checked.code == 0, str(checked)
    # A's own view of the job is the same record.
    status, job = request(a.url, "GET", f"/v1/jobs/{job_id}", token)
    assert status == 200 and job["state"] == "succeeded"


def test_a_duckdb_dataset_registered_on_one_host_reaches_another_only_as_a_file_copy(
    deployment: Deployment, tmp_path: Path
) -> None:
    a, b = deployment.hosts
    toml = tmp_path / "visits.toml"
    toml.write_text(CLASSIFICATION)
    source = write(visits_table(40), tmp_path / "visits.csv", "csv")
    registered = a.run("dataset", "register", str(toml), "--source", str(source))
    assert registered.code == 0, str(registered)
    # The catalog is shared, the enclave file is not: B no longer passes its start-up check.
    b.stop()
    refused = b.run("serve", "--port", str(_free_port()), timeout=60)
    assert refused.code == 2, str(refused)
    assert "lacks dataset health.visits" in refused.err and "startup.enclave" in refused.err
    # The operator's step: copy the enclave file from A (while no registration runs).
    copy_enclave(a.home, b.home)
    b.start()
    status, body = request(b.url, "GET", "/health", deployment.tokens[OPERATOR])
    assert status == 200 and body["datasets"] == 5


@pytest.mark.slow  # two JVMs start (15 s idle, 64 s on a loaded machine): make test-long
def test_a_spark_dataset_registered_on_one_host_is_queried_through_both(
    deployment: Deployment, tmp_path: Path
) -> None:
    """The warehouse is shared: a dataset registered with ``--engine spark`` on A is read
    by each host's own Spark (``spark_master=local[1]`` per host here; a real cluster's
    master is out of reach of a test: every host would name the same ``spark://``)."""
    require_spark()
    a, b = deployment.hosts
    toml = tmp_path / "outpatient.toml"
    toml.write_text(CLASSIFICATION.replace('id = "health.visits"', f'id = "{SPARK_DATASET}"'))
    source = write(visits_table(40), tmp_path / "outpatient.csv", "csv")
    registered = a.run(
        "dataset", "register", str(toml), "--source", str(source), "--engine", "spark"
    )
    assert registered.code == 0, str(registered)
    domain, _, table = SPARK_DATASET.partition(".")
    assert list((deployment.warehouse / domain / table / "v1").glob("part-*.parquet"))
    issued = a.run(
        "grant", "issue", SPARK_DATASET, OPERATOR,
        "--purpose", "several-hosts", "--purpose-text", "the several-hosts test",
        "--valid-until", "2099-12-31", "--k", "10",
        "--epsilon-total", "10", "--epsilon-per-query", "1",
        "--token", deployment.tokens["bureau-health"],
    )  # fmt: skip
    assert issued.code == 0, str(issued)
    token = deployment.tokens[OPERATOR]
    sql = f"SELECT count(*) AS n FROM {SPARK_DATASET}"
    for host in (a, b):
        done = sandbox_cmd(
            "query", "--url", host.url, "--token", token, "--format", "json",
            "--epsilon", "0.5", sql.replace(" AS n", f" AS n_{host.name[-1]}"),
            env=host.env, timeout=240,
        )  # fmt: skip
        assert done.code == 0, str(done)
        answer = json.loads(done.out)
        assert answer["meta"]["datasets"] == [SPARK_DATASET]
        # (its one row may be withheld: 40 people under ε 0.5 can fall below the
        # release threshold; the answer itself is what this test needs)
        assert answer["meta"]["epsilon_spent"] == 0.5
    # Each host's console shows it in the warehouse (registration left no enclave copy).
    for host in (a, b):
        shown = host.run("dataset", "show", SPARK_DATASET)
        assert shown.code == 0 and "engine: spark (the Parquet warehouse, v1)" in shown.out


@dataclass
class Load:
    """Clients that send each query to one host and, when that host cannot be reached,
    retry it on the other (as a client of a load balancer would)."""

    urls: list[str]
    token: str
    acked: list[tuple[str, dict]] = field(default_factory=list)  # (host url, job)
    failovers: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0

    def worker(self) -> None:
        try:
            self._work()
        except Exception as exc:  # surfaced by wait_for, not lost in a thread
            with self.lock:
                self.errors.append(repr(exc))

    def _work(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.sent += 1
                n = self.sent
            order = self.urls[n % 2 :] + self.urls[: n % 2]
            for url in order:
                try:
                    status, job = _submit(url, self.token, f"load_{n}")
                except (urllib.error.URLError, ConnectionError, http.client.HTTPException):
                    with self.lock:
                        self.failovers += 1
                    continue  # this host is gone: the same query on the next
                with self.lock:
                    if status == 200 and job["state"] == "succeeded":
                        self.acked.append((url, job))
                    else:
                        self.errors.append(f"{status} {job}")
                break

    def acked_on(self, url: str) -> int:
        with self.lock:
            return sum(1 for u, _ in self.acked if u == url)

    def wait_for(self, predicate: object, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"load stalled: {self.errors[-3:]}"
            assert not self.errors, self.errors[:3]
            time.sleep(0.05)


def test_a_host_killed_mid_load_leaves_the_other_serving_and_the_trail_whole(
    deployment: Deployment, tmp_path: Path
) -> None:
    a, b = deployment.hosts
    token = deployment.tokens[OPERATOR]
    load = Load([a.url, b.url], token)
    clients = [threading.Thread(target=load.worker, daemon=True) for _ in range(3)]
    for client in clients:
        client.start()
    try:
        load.wait_for(lambda: load.acked_on(a.url) >= 8 and load.acked_on(b.url) >= 8)
        a.stop(signal.SIGKILL)  # mid-load: requests are in flight on A
        killed_at = len(load.acked)
        load.wait_for(lambda: len(load.acked) >= killed_at + 20)
    finally:
        load.stop.set()
        for client in clients:
            client.join(60)
    assert not load.errors, load.errors[:3]
    after = load.acked[killed_at:]
    assert {url for url, _ in after} == {b.url}  # only B answered after the kill
    assert load.failovers >= 1  # a client found A gone and went on to B

    # Jobs that A was running die with it: B's runner fails them (job.interrupted) rather
    # than leaving them running (here within seconds: same host name, so the dead process
    # is seen; on separate machines when A's heartbeat is older than 30 s).
    deadline = time.monotonic() + 30
    while True:
        status, listed = request(b.url, "GET", "/v1/jobs?state=running&state=queued", token)
        assert status == 200
        if not listed["jobs"]:
            break
        assert time.monotonic() < deadline, listed["jobs"]
        time.sleep(0.5)
    status, failed = request(b.url, "GET", "/v1/jobs?state=failed&limit=100", token)
    interrupted = [j["id"] for j in failed["jobs"] if j["rule"] == "job.interrupted"]

    # Every acknowledged answer, from either host, has its entry in the one chain the
    # installed verifier accepts; so has every interruption.
    entries = _export_and_verify(b, a.home / "keys", tmp_path / "export")
    for url, job in load.acked:
        entry = entries.get(job["meta"]["audit_entry_hash"])
        assert entry is not None, f"no audit entry for {job['id']} acknowledged by {url}"
        assert entry["request_id"] == job["id"]
        assert (entry["action"], entry["decision"]) == ("dataset.query", "allow")
    denied = {e["request_id"] for e in entries.values() if e["rule"] == "job.interrupted"}
    assert set(interrupted) <= denied

    # The killed host comes back on its own home and serves again.
    a.start()
    status, job = _submit(a.url, token, "after_restart")
    assert status == 200 and job["state"] == "succeeded", job
