"""The server's components, built once per process, and the dependencies routes share.

:class:`Services` holds one :class:`ServerPlatform` (whose enclave is a
:class:`~sandbox.shared_enclave.SharedEnclave`), the query service, the job
store, runner and desk, the run-time settings and the rate limiter.  Routes get
the authenticated :class:`~policies.Actor` from :func:`current_actor` (the
bearer token is the only source of identity and role) and the request's id and
client address from :func:`request_meta`.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from policies import Actor, Administration
from sandbox.errors import AuthenticationError, RateLimited
from sandbox.job_desk import JobDesk
from sandbox.job_runner import JobRunner
from sandbox.jobs import JobStore
from sandbox.platform import Platform
from sandbox.runtime_settings import RuntimeSettings
from sandbox.service import QueryService
from sandbox.settings import Settings
from sandbox.shared_enclave import SharedEnclave

from .limits import RateLimiter

__all__ = ["ActorDep", "Meta", "MetaDep", "ServerPlatform", "Services", "current_actor"]


class ServerPlatform(Platform):
    """A platform whose enclave is shared with other server processes and reports progress."""

    def __init__(self, settings: Settings, *, progress_cursors: int) -> None:
        super().__init__(settings)
        self.progress_cursors = progress_cursors

    @cached_property
    def enclave(self) -> SharedEnclave:
        return SharedEnclave.for_server(self.settings, progress_cursors=self.progress_cursors)


class Services:
    """Everything one server process needs, opened lazily, started and stopped by the app."""

    def __init__(self, settings: Settings) -> None:
        self.base_settings = settings
        self.platform = ServerPlatform(settings, progress_cursors=settings.job_workers + 2)
        self.limiter = RateLimiter()

    @cached_property
    def runtime(self) -> RuntimeSettings:
        return RuntimeSettings(self.platform.engine, self.base_settings)

    def settings(self) -> Settings:
        """The settings in force now (the admin's run-time changes included)."""
        current = self.runtime.current()
        if current is not self.platform.settings:
            self.platform.settings = current  # the query service reads k_floor from here
        return current

    @cached_property
    def service(self) -> QueryService:
        return QueryService(self.platform)

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self.platform.engine)

    @cached_property
    def runner(self) -> JobRunner:
        return JobRunner(
            self.platform,
            self.service,
            self.store,
            workers=self.base_settings.job_workers,
            result_ttl_s=lambda: self.settings().result_ttl_s,
        )

    @cached_property
    def desk(self) -> JobDesk:
        return JobDesk(self.platform, self.service, self.store, self.runner, self.settings)

    def administration(self) -> Administration:
        return Administration(self.platform.authority, k_floor=self.settings().k_floor)

    def start(self) -> None:
        self.settings()
        self.runner.start()

    def stop(self) -> None:
        if "runner" in self.__dict__ and self.runner.runner_id is not None:
            self.runner.stop()
        self.platform.close()


@dataclass(frozen=True)
class Meta:
    """Who asks from where: the request id (also in ``X-Request-ID``) and client address."""

    request_id: str
    client: str | None


def request_meta(request: Request) -> Meta:
    rid = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    return Meta(rid, request.client.host if request.client else None)


MetaDep = Annotated[Meta, Depends(request_meta)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token issued by the admin: `Authorization: Bearer sbx_…`.",
)


def current_actor(
    request: Request,
    meta: MetaDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Actor:
    """Authenticate the bearer token (audited when refused), then apply the rate limit."""
    services: Services = request.app.state.services
    limits = services.settings()
    authority = services.platform.authority
    address = f"addr:{meta.client}"
    token = credentials.credentials if credentials is not None else ""
    try:
        services.limiter.blocked(address, limits.rate_limit_per_minute, "failed sign-ins")
    except RateLimited as exc:
        _record_limited(services, "anonymous", "-", exc, meta)
        raise
    try:
        actor = authority.authenticate(token, request_id=meta.request_id, client=meta.client)
    except AuthenticationError:
        services.limiter.take(address, limits.rate_limit_per_minute)
        raise
    key = actor.token_id or actor.name
    try:
        services.limiter.check(key, limits.rate_limit_per_minute, "this token")
    except RateLimited as exc:
        _record_limited(services, actor.name, actor.role.value, exc, meta)
        raise
    request.state.actor = actor
    return actor


def _record_limited(services: Services, name: str, role: str, exc: RateLimited, meta: Meta) -> None:
    refused = getattr(exc, "refused", 1)
    if refused == 1 or refused % 100 == 0:
        services.platform.record(
            actor=name,
            role=role,
            action="api.rate_limit",
            target="platform",
            decision="deny",
            rule=exc.rule or "api.rate_limit",
            request_id=meta.request_id,
            client=meta.client,
            details={"reason": exc.message, "refused_in_a_row": refused, "pid": os.getpid()},
        )


ActorDep = Annotated[Actor, Depends(current_actor)]


def services_of(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(services_of)]


def prepare_home(settings: Settings) -> None:
    """Create every control-plane table and seed the policy once, before workers start."""
    services = Services(settings)
    try:
        _ = services.store, services.runtime, services.platform.authority, services.platform.audit
    finally:
        services.platform.close()


def serve_app(
    settings: Settings, *, host: str | None, port: int | None, workers: int | None
) -> None:
    """``sandbox serve``: one process, or ``workers`` uvicorn processes sharing the home.

    Worker processes rebuild the settings from the environment, so the home and the
    process count are exported first; each process runs ``cores / workers`` job threads
    unless ``SANDBOX_JOB_WORKERS`` says otherwise.
    """
    import sys

    import uvicorn

    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    prepare_home(settings)
    print(f"Sandbox API at http://{host}:{port}  (docs: http://{host}:{port}/docs)", flush=True)
    sys.stdout.flush()
    if workers == 1:
        from server import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
        return
    os.environ["SANDBOX_HOME"] = str(settings.home)
    os.environ["SANDBOX_WORKERS"] = str(workers)
    if not os.environ.get("SANDBOX_JOB_WORKERS"):
        os.environ["SANDBOX_JOB_WORKERS"] = str(max(1, (os.cpu_count() or 1) // workers))
    uvicorn.run(
        "server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )
