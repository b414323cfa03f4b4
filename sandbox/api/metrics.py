"""Prometheus metrics at ``GET /metrics`` (prometheus-client).

Two kinds of figures (docs/monitoring.md, "Metrics"):

- *shared*: read from the audit store and the control plane at scrape time by a
  custom collector (:mod:`sandbox.monitoring.metrics`), so every process and every
  host reports the same totals: audit entries by action and decision, refusals by
  rule, ε spent per dataset, alerts not resolved by severity, jobs by state;
- *per process*: HTTP requests and the audit append latency, kept by
  prometheus-client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set
  (``sandbox serve`` sets it to ``<home>/run/prometheus`` and empties it at start), so
  a scrape answered by any worker sums every worker of the host; without it (one
  process, tests) the process's own.

Who may read: the admin and auditors with their token; with ``metrics_loopback_open`` a
client on a loopback address without one.  Anyone else: ``metrics.not_permitted``.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from policies import Role
from sandbox.core.errors import Forbidden
from sandbox.jobs.states import JobState
from sandbox.monitoring.metrics import SharedFigures, TrailTally, shared_figures

from .context import Services, bearer, current_actor, request_meta
from .errors import ERROR_RESPONSES

__all__ = ["SharedCollector", "install_metrics", "router"]

router = APIRouter(tags=["monitoring"])

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_READERS = (Role.ADMIN, Role.AUDITOR)

# Per-process metrics: one set per process (create_app may run several times in tests).
_PROCESS = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter(
    "sandbox_http_requests",
    "HTTP requests answered by this host's server processes, by route template and status.",
    ["method", "route", "status"],
    registry=_PROCESS,
)
AUDIT_APPEND = Histogram(
    "sandbox_audit_append_seconds",
    "Time to append audit entries until durable (one append or one batch), per call.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=_PROCESS,
)


class SharedCollector(Collector):
    """Families of the shared figures, read when collected."""

    def __init__(self, read: Callable[[], SharedFigures]) -> None:
        self._read = read

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: the read happens per scrape

    def collect(self) -> list[Metric]:
        started = time.perf_counter()
        figures = self._read()
        entries = CounterMetricFamily(
            "sandbox_audit_entries",
            "Audit entries in the shared trail, by action and decision.",
            labels=["action", "decision"],
        )
        for (action, decision), n in sorted(figures.trail.entries.items()):
            entries.add_metric([action, decision], n)
        refusals = CounterMetricFamily(
            "sandbox_refusals",
            "Refusals (deny entries) in the shared trail, by action and rule.",
            labels=["action", "rule"],
        )
        for (action, rule), n in sorted(figures.trail.refusals.items()):
            refusals.add_metric([action, rule], n)
        epsilon = GaugeMetricFamily(
            "sandbox_epsilon_spent",
            "Privacy budget (epsilon) spent so far, summed over the dataset's grants.",
            labels=["dataset"],
        )
        for dataset, spent in sorted(figures.epsilon_spent.items()):
            epsilon.add_metric([dataset], spent)
        alerts = GaugeMetricFamily(
            "sandbox_alerts",
            "Alerts not resolved, by severity and state.",
            labels=["severity", "state"],
        )
        for (severity, state), n in sorted(figures.alerts.items()):
            alerts.add_metric([severity, state], n)
        jobs = GaugeMetricFamily(
            "sandbox_jobs", "Jobs by state (the queue: state=queued).", labels=["state"]
        )
        for state, n in figures.jobs.items():
            jobs.add_metric([state], n)
        size = GaugeMetricFamily("sandbox_audit_size", "Entries in the shared audit trail.")
        size.add_metric([], figures.trail.next_seq)
        took = GaugeMetricFamily(
            "sandbox_metrics_read_seconds", "Time this scrape took to read the shared figures."
        )
        took.add_metric([], time.perf_counter() - started)
        return [entries, refusals, epsilon, alerts, jobs, size, took]


def _process_exposition() -> bytes:
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.path.isdir(path):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(_PROCESS)


class CountRequests:
    """ASGI middleware (innermost, so the router's matched route is on the scope): count
    each HTTP request by method, route template (never the raw path) and status.

    Counted before the response's last body message is sent, so a client that has its
    answer finds it counted by its next scrape (counting after the app returned raced
    a scrape answered by the other worker); a request that never finishes a response is
    counted when the app returns or raises."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]
        counted = [False]

        def count() -> None:
            if counted[0]:
                return
            counted[0] = True
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            method = method if method in ("GET", "POST", "PUT", "DELETE", "PATCH") else "other"
            HTTP_REQUESTS.labels(method, route, str(status[0])).inc()

        async def watched(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                count()
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            count()


def _loopback(client: str | None) -> bool:
    try:
        return client is not None and ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


def install_metrics(app: FastAPI, services: Services) -> None:
    """The ``/metrics`` route, the request counter and the audit append timer on ``app``."""
    from starlette.middleware import Middleware

    trail = services.platform.audit
    # The trail's own hook: one observation per append (wrapping both append and
    # append_many observed an append twice, since append calls append_many).
    trail.append_observers.append(AUDIT_APPEND.observe)
    states = tuple(state.value for state in JobState)
    tallies: list[TrailTally] = []  # made at the first scrape: creating the app opens nothing

    def figures() -> SharedFigures:
        if not tallies:
            tallies.append(TrailTally(trail.store, services.platform.engine))
        return shared_figures(tallies[0], services.platform.engine, states)

    app.state.metrics = SharedCollector(figures)
    app.user_middleware.append(Middleware(CountRequests))
    app.include_router(router, responses=ERROR_RESPONSES)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}}, "description": "Prometheus text."}},
)
def metrics(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Response:
    """Prometheus metrics (admin or auditor token; or loopback if `metrics_loopback_open`)."""
    services: Services = request.app.state.services
    meta = request_meta(request)
    if not (services.base_settings.metrics_loopback_open and _loopback(meta.client)):
        actor = current_actor(request, meta, credentials)
        if actor.role not in _READERS:
            services.platform.record(
                actor=actor.name,
                role=actor.role.value,
                action="metrics.read",
                target="platform",
                decision="deny",
                rule="metrics.not_permitted",
                request_id=meta.request_id,
                client=meta.client,
                details={
                    "reason": "metrics are for the admin and auditors",
                    **actor.audit_details(),
                },
            )
            raise Forbidden(
                "Metrics are read by the admin and auditors; your role cannot read them.",
                rule="metrics.not_permitted",
            )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(request.app.state.metrics)
    body = _process_exposition() + generate_latest(registry)
    return Response(content=body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
