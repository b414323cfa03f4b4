"""The components one server process (or one CLI command) needs, built lazily, with no HTTP in them.

:class:`Services` holds one :class:`ServerPlatform` (whose enclave is a
:class:`~sandbox.enclave.shared.SharedEnclave`), the query service, the job
store, runner and desk, the run-time settings and the rate limiter.  The API
keeps one in ``app.state``; ``sandbox job`` builds one for local jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cached_property

from policies import Administration
from sandbox.core.runtime_settings import RuntimeSettings
from sandbox.core.settings import Settings
from sandbox.enclave.shared import SharedEnclave
from sandbox.enclave.staging import Staging
from sandbox.jobs.desk import JobDesk
from sandbox.jobs.runner import JobRunner
from sandbox.jobs.store import JobStore
from sandbox.monitoring import Monitor
from sandbox.platform import Platform
from sandbox.query.service import QueryService
from sandbox.ratelimit import FailureTally, RateLimiter

__all__ = ["ServerPlatform", "Services", "prepare_home"]

log = logging.getLogger("sandbox.services")


class ServerPlatform(Platform):
    """A platform whose enclave is shared with other server processes and reports progress."""

    def __init__(self, settings: Settings, *, progress_cursors: int) -> None:
        super().__init__(settings)
        self.progress_cursors = progress_cursors

    @cached_property
    def enclave(self) -> SharedEnclave:
        return SharedEnclave.for_server(
            self.settings, progress_cursors=self.progress_cursors, encryption_key=self.enclave_key()
        )


class Services:
    """Everything one server process needs, opened lazily, started and stopped by the app."""

    def __init__(self, settings: Settings) -> None:
        self.base_settings = settings
        self.platform = ServerPlatform(
            settings, progress_cursors=settings.job_workers + settings.held_job_workers + 2
        )
        self.limiter = RateLimiter()
        self.failures = FailureTally(
            self.platform.record, window_s=lambda: self.base_settings.failure_audit_window_s
        )
        """Refusals of unknown tokens and codes, recorded per address and window."""
        self._stopping = threading.Event()
        self._housekeeper: threading.Thread | None = None

    @cached_property
    def staging(self) -> Staging:
        """Unregistered uploads, with their quotas."""
        return Staging(self.base_settings.staging_dir / "uploads", self.settings)

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
        service = QueryService(self.platform)
        service.observer = self.monitor.observe
        return service

    @cached_property
    def monitor(self) -> Monitor:
        """The risk detectors over this process's query decisions (docs/monitoring.md)."""
        return Monitor(self.platform, self.settings)

    @cached_property
    def store(self) -> JobStore:
        return JobStore(
            self.platform.engine, self.platform.data_keys, writer=self.platform.control_writer
        )

    @cached_property
    def runner(self) -> JobRunner:
        return JobRunner(
            self.platform,
            self.service,
            self.store,
            workers=self.base_settings.job_workers,
            result_ttl_s=lambda: self.settings().result_ttl_s,
            per_operator=self.base_settings.job_workers_per_operator,
            held_workers=self.base_settings.held_job_workers,
        )

    @cached_property
    def desk(self) -> JobDesk:
        return JobDesk(self.platform, self.service, self.store, self.runner, self.settings)

    def administration(self) -> Administration:
        settings = self.settings()
        budget = (settings.dp_default_epsilon_total, settings.dp_default_epsilon_per_query)
        return Administration(
            self.platform.authority, k_floor=settings.k_floor, default_budget=budget
        )

    def start(self) -> None:
        self.settings()
        self.platform.authority.failures = self.failures
        self.staging.sweep()
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name="housekeeping", daemon=True
        )
        self._housekeeper.start()
        self.runner.start()
        self.monitor.start()

    def _housekeeping(self, every_s: float = 2.0) -> None:
        """Record closed failure windows every few seconds; sweep staging on its schedule."""
        swept = time.monotonic()
        while not self._stopping.wait(every_s):
            try:
                self.failures.flush()
                if time.monotonic() - swept >= self.base_settings.staging_sweep_s:
                    swept = time.monotonic()
                    self.staging.sweep()
            except Exception:  # logged; the next round tries again
                log.exception("housekeeping failed")

    def stop(self) -> None:
        self._stopping.set()
        if "monitor" in self.__dict__:
            self.monitor.stop()
        if self._housekeeper is not None:
            self._housekeeper.join(10)
        if "runner" in self.__dict__ and self.runner.runner_id is not None:
            self.runner.stop()
        try:
            self.failures.flush(everything=True)  # the open windows, before the trail closes
        finally:
            self.platform.close()


def prepare_home(settings: Settings) -> None:
    """Create every control-plane table and seed the policy once, before workers start."""
    services = Services(settings)
    try:
        _ = services.store, services.runtime, services.platform.authority, services.platform.audit
    finally:
        services.platform.close()
