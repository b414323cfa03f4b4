"""Settings the admin may change while the platform runs: the k floor and the API limits.

The deployment's :class:`~sandbox.core.settings.Settings` come from the environment
at start.  The settings declared ``runtime`` may be changed at run time
(``PUT /v1/admin/settings``), within the same bounds as in the environment: the
overrides are rows of ``platform_settings`` in the control-plane database, so
every server process and every server host applies them, within ``refresh_s`` of
the change.  Everything else (paths, databases, enclave memory and threads,
timeouts) needs a restart.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sandbox.core.db import metadata
from sandbox.core.errors import InvalidInput
from sandbox.core.settings import SETTINGS, SETTINGS_BY_NAME, Settings
from sandbox.core.timeutil import to_rfc3339

__all__ = ["RUNTIME_SETTINGS", "RuntimeSettings", "platform_settings"]

RUNTIME_SETTINGS: tuple[str, ...] = tuple(spec.name for spec in SETTINGS if spec.runtime)
"""The settings an admin may change at run time (declared ``runtime`` in :class:`Settings`)."""

platform_settings = sa.Table(
    "platform_settings",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False),
)


class RuntimeSettings:
    """The effective settings: the environment's, with the admin's overrides on top."""

    def __init__(self, engine: Engine, base: Settings, *, refresh_s: float = 1.0) -> None:
        self.engine = engine
        self.base = base
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._current = base
        self._read_at = float("-inf")
        metadata.create_all(engine, tables=[platform_settings])

    def overrides(self) -> dict[str, Any]:
        """The stored overrides still within their declared bounds.

        A row out of bounds can only come from a release with looser bounds, or from
        outside the API: it is ignored, and the environment's value stays in force.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(platform_settings)).all()
        found: dict[str, Any] = {}
        for row in rows:
            if row.name in RUNTIME_SETTINGS:
                try:
                    found[row.name] = SETTINGS_BY_NAME[row.name].validate(row.value)
                except ValueError:
                    continue
        return found

    def current(self) -> Settings:
        """The settings in force now (re-read at most every ``refresh_s``)."""
        if time.monotonic() - self._read_at < self.refresh_s:
            return self._current
        with self._lock:
            if time.monotonic() - self._read_at >= self.refresh_s:
                self._current = replace(self.base, **self.overrides())
                self._read_at = time.monotonic()
        return self._current

    @staticmethod
    def validate(changes: dict[str, Any]) -> dict[str, Any]:
        """Check each change against its declared bounds (as at start); every problem at once."""
        problems, parsed = [], {}
        for name, value in changes.items():
            if name not in RUNTIME_SETTINGS:
                problems.append(f"{name} cannot be changed at run time")
                continue
            try:
                parsed[name] = SETTINGS_BY_NAME[name].validate(value)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
        if problems:
            raise InvalidInput("settings: " + "; ".join(problems), rule="settings.invalid")
        return parsed

    def update(self, changes: dict[str, Any], *, by: str) -> Settings:
        """Store validated overrides; they apply on every server within ``refresh_s``."""
        parsed = self.validate(changes)
        now = to_rfc3339(datetime.now(UTC))
        with self.engine.begin() as conn:
            for name, value in parsed.items():
                conn.execute(sa.delete(platform_settings).where(platform_settings.c.name == name))
                conn.execute(
                    sa.insert(platform_settings).values(
                        name=name, value=value, updated_at=now, updated_by=by
                    )
                )
        with self._lock:
            self._read_at = float("-inf")
        return self.current()
