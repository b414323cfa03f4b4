"""The HTTP load generator shared by ``bench/http_load.py`` and ``tests/security/test_load.py``.

Concurrent clients (threads, one ``httpx.Client`` each) pick operations from a weighted
mix until a deadline; an operation may issue several requests (a large job: submit, poll
to completion, fetch the result), each recorded as a :class:`Sample` with its latency and
the number of audit entries the server records for it under the documented rule
(``docs/api.md``, "What is recorded").  The benchmark prints the figures; the test
asserts on the same samples, so the load logic exists once; so does the load
deployment both serve (:func:`load_deployment`) and the count of the risk monitor's own
entries the audit check sets aside (:func:`monitor_entries`).
"""

from __future__ import annotations

import itertools
import random
import re
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from sandbox.platform import Platform

__all__ = [
    "EXPLAIN",
    "LOAD_EPSILON",
    "QUERY",
    "LoadResult",
    "MixEntry",
    "Sample",
    "Session",
    "async_job",
    "audit_size",
    "expected_entries",
    "explain",
    "load_deployment",
    "monitor_entries",
    "percentile",
    "run_load",
    "small_query",
    "standard_mix",
    "sync_query",
    "warm_up",
]

EXPLAIN = "SELECT industry, count(*) AS n FROM market.enterprises GROUP BY 1"
QUERY = "SELECT industry, count(*) AS n FROM market.enterprises WHERE founded > {} GROUP BY 1"


def small_query(n: int) -> str:
    """The small query, a different text for each ``n`` reading the same rows for all: its
    filter stays below every founding year (the demo's firms are founded 1990 to 2025),
    so a run's numbers (``run_load``'s ``first``, ``WARM_UP_N``) never empty its result."""
    return QUERY.format(1989 - n)


TERMINAL = frozenset({"succeeded", "awaiting_review", "refused", "failed", "cancelled", "expired"})
_UNAUDITED_READS = re.compile(r"/v1/jobs(/[^/]+)?|/v1/me|/v1/settings|/v1/audit/keys|/health")


def expected_entries(method: str, path: str, status: int) -> int:
    """Audit entries the server records for one request, per docs/api.md "What is recorded".

    Reading one's own job status or job list (and ``/v1/me``, ``/v1/settings``,
    ``/v1/audit/keys``, ``/health``) records nothing when allowed; everything else this
    generator sends (explains, submissions accepted or refused, result fetches) records
    exactly one entry: an accepted job's entry is written when the job ends.  A per-token
    rate-limit refusal (``429`` on any route) is recorded only for the first of a streak,
    so it cannot be counted from one response: callers raise the limit out of the way.
    """
    if status == 0:
        return 0  # never reached the server (or we cannot know): reported as a transport error
    if method == "GET" and status < 400 and _UNAUDITED_READS.fullmatch(path):
        return 0
    return 1


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by rank, as the benchmarks have always reported it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass(frozen=True)
class Sample:
    """One HTTP request: what it was, how it ended, how long it took, what it should audit."""

    kind: str
    method: str
    path: str
    status: int  # 0: transport error (no response)
    seconds: float
    entries: int
    body: Any = None  # the parsed JSON body of an error (4xx/5xx), else None
    error: str = ""


class Session:
    """One client thread's connection, recording every request it makes."""

    def __init__(self, client: httpx.Client, tokens: Mapping[str, str], sink: list[Sample]):
        self.client = client
        self.tokens = tokens
        self.sink = sink
        self.jobs: list[dict[str, Any]] = []

    def request(
        self, kind: str, who: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        t0 = time.perf_counter()
        try:
            response = self.client.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            self.sink.append(
                Sample(kind, method, path, 0, time.perf_counter() - t0, 0, error=repr(exc))
            )
            return None
        elapsed = time.perf_counter() - t0
        body = None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
        self.sink.append(
            Sample(
                kind,
                method,
                path,
                response.status_code,
                elapsed,
                expected_entries(method, path, response.status_code),
                body,
            )
        )
        return response

    def follow(
        self, kind: str, who: str, job: dict[str, Any], poll_s: float, limit_s: float
    ) -> dict[str, Any] | None:
        """Poll a job until it ends (each poll a sample of ``kind``); None if it never did."""
        deadline = time.monotonic() + limit_s
        while job.get("state") not in TERMINAL:
            if time.monotonic() > deadline:
                self.sink.append(
                    Sample(kind, "GET", f"/v1/jobs/{job['id']}", 0, 0.0, 0, error="job never ended")
                )
                return None
            time.sleep(poll_s)
            response = self.request(kind, who, "GET", f"/v1/jobs/{job['id']}")
            if response is None or response.status_code != 200:
                return None
            job = response.json()
        self.jobs.append(job)
        return job


Operation = Callable[[Session, int], None]
"""One unit of client work: given the session and a unique number, issue its requests."""


def explain(kind: str, who: str, sql: Callable[[int], str]) -> Operation:
    """``POST /v1/explain`` (one entry: the verdict is recorded either way)."""

    def op(session: Session, n: int) -> None:
        session.request(kind, who, "POST", "/v1/explain", json={"sql": sql(n)})

    return op


def sync_query(
    kind: str, who: str, sql: Callable[[int], str], poll_s: float = 0.2, limit_s: float = 300
) -> Operation:
    """``POST /v1/jobs?wait=true``; a 202 (not done within the wait) is polled to the end."""

    def op(session: Session, n: int) -> None:
        response = session.request(
            kind, who, "POST", "/v1/jobs", params={"wait": "true"}, json={"sql": sql(n)}
        )
        if response is not None and response.status_code in (200, 202):
            session.follow(f"{kind} poll", who, response.json(), poll_s, limit_s)

    return op


def async_job(
    kind: str, who: str, sql: Callable[[int], str], poll_s: float = 0.25, limit_s: float = 300
) -> Operation:
    """Submit, poll to completion, fetch the result as JSON: ``KIND submit/poll/result``."""

    def op(session: Session, n: int) -> None:
        response = session.request(f"{kind} submit", who, "POST", "/v1/jobs", json={"sql": sql(n)})
        if response is None or response.status_code != 202:
            return
        job = session.follow(f"{kind} poll", who, response.json(), poll_s, limit_s)
        if job is not None and job["state"] == "succeeded":
            session.request(
                f"{kind} result",
                who,
                "GET",
                f"/v1/jobs/{job['id']}/result",
                params={"format": "json"},
            )

    return op


@dataclass(frozen=True)
class MixEntry:
    """An operation, its weight in the mix, and at most how many may run at once (0: any)."""

    weight: float
    op: Operation
    limit: int = 0


@dataclass
class LoadResult:
    samples: list[Sample]
    wall: float
    clients: int
    jobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def expected_entries(self) -> int:
        return sum(s.entries for s in self.samples)

    def kinds(self) -> dict[str, list[Sample]]:
        by: dict[str, list[Sample]] = {}
        for sample in self.samples:
            by.setdefault(sample.kind, []).append(sample)
        return dict(sorted(by.items()))

    def stats(self) -> dict[str, dict[str, float]]:
        """Per kind (and ``all``): requests, req/s, p50 and p99 ms, errors (status >= 400 or 0)."""
        out: dict[str, dict[str, float]] = {}
        groups = {**self.kinds(), "all": self.samples}
        for kind, samples in groups.items():
            ms = [s.seconds * 1000 for s in samples]
            out[kind] = {
                "requests": len(samples),
                "rps": len(samples) / self.wall if self.wall else 0.0,
                "p50_ms": statistics.median(ms) if ms else 0.0,
                "p99_ms": percentile(ms, 0.99) if ms else 0.0,
                "errors": sum(1 for s in samples if s.status >= 400 or s.status == 0),
            }
        return out

    def lines(self, names: Mapping[str, str] | None = None) -> list[str]:
        """One line per kind, then ``all``, in the benchmark's long-standing format."""
        rows = []
        for kind, st in self.stats().items():
            label = (names or {}).get(kind, kind)
            rows.append(
                f"{label:<16} {int(st['requests']):>6} requests  {st['rps']:>7.1f} req/s  "
                f"p50 {st['p50_ms']:>6.1f} ms  p99 {st['p99_ms']:>6.1f} ms  "
                f"errors {int(st['errors'])}"
            )
        return rows


def run_load(
    url: str,
    tokens: Mapping[str, str],
    mix: Sequence[MixEntry],
    *,
    clients: int,
    seconds: float,
    seed: int = 7,
    transport: Callable[[], httpx.BaseTransport] | None = None,
    timeout: float = 120,
    first: int = 0,
) -> LoadResult:
    """``clients`` threads pick operations from ``mix`` until ``seconds`` have passed.

    Operations are numbered from ``first``: runs against one server that must not repeat
    each other's queries (a repeat is answered from the release cache) pass distinct ranges.

    An operation started before the deadline runs to its end (a job is followed until it
    finishes), so every audit entry the load causes has been written when this returns.
    ``transport`` makes each client's own transport (a client closes its transport when
    it is done, so they cannot share one).
    """
    samples: list[Sample] = []
    jobs: list[dict[str, Any]] = []
    counter = itertools.count(first)
    gates = [threading.BoundedSemaphore(e.limit) if e.limit else None for e in mix]
    stop = time.perf_counter() + seconds
    crashed: list[BaseException] = []

    def pick(rng: random.Random) -> int:
        while True:
            i = rng.choices(range(len(mix)), weights=[e.weight for e in mix])[0]
            gate = gates[i]
            if gate is None or gate.acquire(blocking=False):
                return i

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        mine: list[Sample] = []
        try:
            with httpx.Client(
                base_url=url, timeout=timeout, transport=transport() if transport else None
            ) as client:
                session = Session(client, tokens, mine)
                while time.perf_counter() < stop:
                    i = pick(rng)
                    try:
                        mix[i].op(session, next(counter))
                    finally:
                        if gates[i] is not None:
                            gates[i].release()  # type: ignore[union-attr]
                jobs.extend(session.jobs)
        except BaseException as exc:
            crashed.append(exc)
        finally:
            samples.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if crashed:
        raise RuntimeError(f"{len(crashed)} load client(s) crashed") from crashed[0]
    return LoadResult(samples, wall, clients, jobs)


#: The numbers warm-up operations get: far above any a measured run reaches, so a warm-up
#: query never puts in the release cache a query the run then asks.
WARM_UP_N = 1_000_000_000


def warm_up(
    url: str, tokens: Mapping[str, str], mix: Sequence[MixEntry], *, timeout: float = 120
) -> None:
    """Each unlimited operation of ``mix`` once, before a measured run (samples discarded).

    A server builds some of its state on first use (FastAPI resolves its routers on the
    first request that reaches them; the services open lazily): about 0.3 s on this
    machine, which a run of a few seconds would otherwise count in its p99.  Operations
    with a limit (large jobs) are left out: they take seconds and warm nothing more.
    Call it before counting the audit trail: its entries are not the run's.
    """
    with httpx.Client(base_url=url, timeout=timeout) as client:
        session = Session(client, tokens, [])
        for i, entry in enumerate(mix):
            if not entry.limit:
                entry.op(session, WARM_UP_N + i)


def standard_mix(
    operators: Sequence[str] = ("op-bank", "op-planner", "op-insurer"),
) -> list[MixEntry]:
    """The issue's mix on the demo deployment: mostly explains and small queries, a few jobs.

    Explains as every operator; small synchronous queries as the bank (market.enterprises,
    a moving filter so the release cache never answers) and the planner (transport.trips);
    cached repeats of one query; a few guard refusals (grouping by an identifier column:
    422 ``guard.identifier``); and a few large asynchronous jobs (enterprises x social
    insurance by industry and month, claims by district x diagnosis, as the bank; trips
    between stations, as the planner), at most one of each at once, each polled to
    completion and its result fetched.  The insurer only explains: its ε budget would run
    out.
    """
    bank, planner, insurer = operators
    distinct = "HAVING count(*) > -{}"  # a no-op that makes each job's query distinct
    join = (
        "SELECT e.industry, s.month, count(DISTINCT e.credit_code) AS firms, "
        "sum(s.wage_total) AS wages FROM market.enterprises e "
        "JOIN hrss.social_insurance s ON s.credit_code = e.credit_code GROUP BY 1, 2 " + distinct
    )
    claims = (
        "SELECT district, diagnosis_code, count(*) AS n, count(DISTINCT person_id) AS people, "
        "avg(claim_amount) AS mean FROM health.claims GROUP BY 1, 2 " + distinct
    )
    trips = (
        "SELECT board_station, alight_station, count(*) AS n, avg(fare) AS fare "
        "FROM transport.trips GROUP BY 1, 2 " + distinct
    )
    return [
        MixEntry(20, explain("explain", bank, lambda n: EXPLAIN)),
        MixEntry(
            5,
            explain(
                "explain",
                insurer,
                lambda n: "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1",
            ),
        ),
        MixEntry(
            5,
            explain(
                "explain",
                planner,
                lambda n: "SELECT board_station, count(*) AS n FROM transport.trips GROUP BY 1",
            ),
        ),
        MixEntry(20, sync_query("query", bank, small_query)),
        MixEntry(
            10,
            sync_query(
                "query",
                planner,
                lambda n: (
                    "SELECT board_station, count(*) AS n, avg(fare) AS fare FROM transport.trips "
                    f"WHERE fare < {2 + n % 1000 / 100:.2f} GROUP BY 1 " + distinct.format(n)
                ),
            ),
        ),
        MixEntry(10, sync_query("query (cached)", bank, lambda n: QUERY.format(1990))),
        MixEntry(
            2,
            sync_query(
                "refused",
                bank,
                lambda n: (
                    "SELECT name, count(*) AS n FROM market.enterprises GROUP BY 1 "
                    f"LIMIT {n % 50 + 1}"
                ),
            ),
        ),
        MixEntry(1, async_job("job", bank, lambda n: join.format(n)), limit=1),
        MixEntry(1, async_job("job", bank, lambda n: claims.format(n)), limit=1),
        MixEntry(1, async_job("job", planner, lambda n: trips.format(n)), limit=1),
    ]


def audit_size(home: Path) -> int:
    """The audit trail's size, read from the store itself (the count adds no entry)."""
    from audit import AuditTrail, KeyRing
    from sandbox.core.settings import Settings

    settings = Settings(home=home)
    trail = AuditTrail.open(settings.audit_db_url, KeyRing(settings.keys_dir))
    try:
        return trail.size()
    finally:
        trail.close()


def monitor_entries(home: Path, *, since: int) -> int:
    """Entries the risk monitor appended (``alert.*``) from seq ``since`` on: they come on
    top of the requests' own, so the audit check subtracts them."""
    from audit import AuditTrail, KeyRing
    from sandbox.core.settings import Settings

    settings = Settings(home=home)
    trail = AuditTrail.open(settings.audit_db_url, KeyRing(settings.keys_dir))
    try:
        entries = trail.entries(offset=since, limit=1_000_000)
    finally:
        trail.close()
    return sum(1 for entry in entries if entry.action.startswith("alert."))


#: ε total of every dp grant in the load deployment: large enough that no run exhausts it.
LOAD_EPSILON = 1_000_000.0


def load_deployment(platform: Platform, scale: float, *, by: str, reason: str) -> dict[str, str]:
    """Make ``platform``'s (new) home the load deployment at ``scale``; the demo tokens.

    The demo's data and accounts (created by the host console ``by``), with grants that
    fit a load run: the demo's ``dp`` grants get a budget that outlasts it (the planner's
    default of 10 would run out in seconds), and the bank's bureaus choose ``dp`` for its
    ``reviewed`` grants (audited, with ``reason``, as a bureau does), so its synchronous
    queries and jobs are noised and released, not held for a review nobody gives here.
    The insurer keeps its demo budget (it only explains).  Used by ``bench/http_load.py``
    and ``tests/security/test_load.py``; the caller opens and closes ``platform``.
    """
    from datetime import UTC, datetime

    from policies import Actor, Administration, ReleaseMode
    from policies.demo import create_demo

    platform.init()
    platform.load_demo_data(scale=scale)
    admin = Administration(
        platform.authority,
        k_floor=platform.settings.k_floor,
        default_budget=(LOAD_EPSILON, 1.0),
    )
    tokens = create_demo(admin, Actor.host(by), now=datetime.now(UTC))
    for bureau in ("bureau-market", "bureau-hrss", "bureau-health"):
        actor = platform.authority.authenticate(tokens[bureau])
        for grant in admin.list_grants(actor):
            if grant.operator == "op-bank" and grant.release_mode is ReleaseMode.REVIEWED:
                admin.set_release_mode(
                    actor,
                    grant.id,
                    ReleaseMode.DP,
                    epsilon_total=LOAD_EPSILON,
                    epsilon_per_query=1.0,
                    reason=reason,
                )
    return dict(tokens)


def small_query_p99(result: LoadResult) -> tuple[int, float]:
    """How many small synchronous queries ran (``query`` and ``query (cached)``), their p99 ms."""
    ms = [s.seconds * 1000 for s in result.samples if s.kind in ("query", "query (cached)")]
    return len(ms), percentile(ms, 0.99) if ms else 0.0


def main() -> None:
    """``python bench/loadgen.py [--clients 50] [--seconds 20] [--scale 0.1]``.

    The load test's mix (:func:`standard_mix`) against ``sandbox serve`` on loopback, on
    the load deployment of ``bench/http_load.py`` (its ``build`` and ``serve``): one line
    per request kind, the audit check, and the small synchronous queries' p99 (issue 15's
    "50 clients, mixed" figure).
    """
    import argparse
    import os
    import signal
    import tempfile

    from http_load import build, serve

    parser = argparse.ArgumentParser(description=(main.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--scale", type=float, default=0.1, help="demo data scale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        home = Path(tmp) / "home"
        tokens = build(home, args.scale)
        proc, url = serve(home, 1)
        try:
            print(
                f"server {url}, {os.cpu_count()} cores, load average "
                f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; the load test's mix, "
                f"{args.clients} clients, {args.seconds:g} s"
            )
            mix = standard_mix()
            warm_up(url, tokens, mix)
            before = audit_size(home)
            result = run_load(url, tokens, mix, clients=args.clients, seconds=args.seconds)
            entries = audit_size(home) - before - monitor_entries(home, since=before)
            for line in result.lines():
                print(line)
            verdict = "==" if entries == result.expected_entries else "!="
            print(f"audit entries {entries} {verdict} expected")
            count, p99 = small_query_p99(result)
            print(f"small queries p99 {p99:.1f} ms ({count} requests: query, query (cached))")
            failed = sorted({s.status for s in result.samples if s.status >= 400 or s.status == 0})
            if failed:
                print(f"error statuses: {failed}")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
