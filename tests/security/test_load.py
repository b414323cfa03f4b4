"""Load: 50 concurrent clients against a real server on loopback (issue 7, assurance).

The mix (``bench/loadgen.py:standard_mix``, shared with ``bench/http_load.py --mix``) is
explains, small synchronous queries (distinct each time, plus cached repeats), a few guard
refusals and a few large asynchronous jobs polled to completion, as three operators.  The
test asserts what must hold under load whatever the machine: no 5xx, no transport error,
the error shape on every 4xx, every job finished and succeeded, no identifier value in
any response, and the audit trail grew by exactly the entries the documented rule expects
(read from the audit store, so counting adds none).  Latencies and rates are printed and
attached as properties, never asserted: they depend on the machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.loadgen import (
    LoadResult,
    audit_size,
    load_deployment,
    monitor_entries,
    run_load,
    standard_mix,
)
from tests.api.conftest import LiveServer
from tests.security.conftest import (
    SERVER_ENV,
    LeakCheck,
    RecordingTransport,
    SecurityServer,
    identifier_values,
)

LOAD_ENV = {
    **SERVER_ENV,
    # Out of the way: 50 clients of three operators, each with jobs in flight.
    "SANDBOX_RATE_LIMIT_PER_MINUTE": "100000000",
    "SANDBOX_MAX_JOBS_PER_OPERATOR": "100000",
    "SANDBOX_QUERY_TIMEOUT_S": "120",
}


@contextmanager
def load_server(home: Path, scale: float) -> Iterator[SecurityServer]:
    """The load deployment (``bench/loadgen.py:load_deployment``) at ``scale`` served for
    real, with the security suite's leak check.

    ``start_security_server`` builds at scale 0.01, too small for a large job to be large;
    this assembles the same pieces at a larger scale.
    """
    from sandbox.core.settings import Settings
    from sandbox.platform import Platform

    platform = Platform(Settings(home=home, threads=2))
    try:
        tokens = load_deployment(
            platform, scale, by="tests", reason="load test: released without review"
        )
        leaks = LeakCheck.of(identifier_values(platform))
    finally:
        platform.close()
    (home / "demo-tokens.json").write_text(json.dumps(tokens))
    live = LiveServer(home, tokens, env=LOAD_ENV)
    live.start()
    try:
        yield SecurityServer(live, leaks)
    finally:
        live.stop()


def report(result: LoadResult, record_property: Any) -> None:
    """Print the figures and attach them to the test (JUnit properties); nothing asserted."""
    print(f"\n{result.clients} clients, {result.wall:.1f} s")
    for line in result.lines():
        print(line)
    for kind, st in result.stats().items():
        for key, value in st.items():
            record_property(f"{kind}.{key}", round(value, 2))


def exercise(server: SecurityServer, clients: int, seconds: float, record_property: Any) -> None:
    home = server.live.home
    transport = server.transport

    def recording() -> httpx.BaseTransport:
        # One connection pool per client; every response lands in the one leak-check list.
        return RecordingTransport(exchanges=transport.exchanges)

    before = audit_size(home)
    result = run_load(
        server.url,
        server.tokens,
        standard_mix(),
        clients=clients,
        seconds=seconds,
        transport=recording,
    )
    grew = audit_size(home) - before
    report(result, record_property)
    record_property("audit.entries", grew)
    record_property("audit.expected", result.expected_entries)
    print(f"audit entries {grew}, expected {result.expected_entries}")

    broken = [s for s in result.samples if s.status == 0]
    assert not broken, f"{len(broken)} transport error(s), e.g. {broken[0]}"
    failed = [s for s in result.samples if s.status >= 500]
    assert not failed, (
        f"{len(failed)} 5xx, e.g. {failed[0].method} {failed[0].path} -> {failed[0].status} "
        f"{failed[0].body}\nserver log:\n{server.live.log()[-3000:]}"
    )
    for sample in result.samples:
        if 400 <= sample.status < 500:
            assert isinstance(sample.body, dict) and set(sample.body) >= {"code", "message", "rule"}
            assert all(isinstance(sample.body[k], str) for k in ("code", "message", "rule"))
            assert sample.status != 429, f"a limit was hit: {sample.body}"
    refused = [s for s in result.samples if s.status >= 400]
    others = [(s.kind, s.status, s.body) for s in refused if s.kind != "refused"]
    assert not others, f"only the guard refusals may fail: {others[:3]}"
    assert {(s.status, s.body["rule"]) for s in refused} <= {(422, "guard.identifier")}

    jobs = result.jobs
    assert jobs and {j["state"] for j in jobs} == {"succeeded"}
    large = result.kinds().get("job result", [])
    assert large, "the mix ran no large job"
    assert all(s.status == 200 for s in large)

    # The risk monitor may open alerts on the load's own patterns (a moving filter is a
    # differencing pattern): its entries are the monitor's, not requests' answers.
    assert grew == result.expected_entries + monitor_entries(home, since=before)
    assert server.assert_no_leaks() == len(result.samples)


def test_fifty_clients_bounded(tmp_path: Path, record_property: Any) -> None:
    """The bounded variant of ``make test``: 50 clients for 8 s on a scale-0.3 deployment."""
    with load_server(tmp_path / "home", scale=0.3) as server:
        exercise(server, clients=50, seconds=8, record_property=record_property)


@pytest.mark.slow
def test_fifty_clients_a_minute(tmp_path: Path, record_property: Any) -> None:
    """The issue's figure: 50 clients for 60 s on a scale-1 deployment (1M claims)."""
    with load_server(tmp_path / "home", scale=1.0) as server:
        exercise(server, clients=50, seconds=60, record_property=record_property)
