"""Platform settings: one frozen object, built from the environment by an injectable loader.

Each setting is declared once in :data:`SETTINGS` with its environment variable,
default and help text; ``docs/settings.md`` documents every one (a test checks).
Nothing reads ``os.environ`` elsewhere: the CLI and the server receive a
:class:`Settings` and pass it down.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sandbox.core.errors import InvalidInput

__all__ = ["SETTINGS", "SettingSpec", "Settings", "load_settings"]


@dataclass(frozen=True)
class SettingSpec:
    name: str
    env: str
    parse: Callable[[str], Any]
    help: str


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError("must be between 0 and 1 (exclusive)")
    return value


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("home", "SANDBOX_HOME", Path, "Deployment home directory (enclave, keys, DBs)."),
    SettingSpec(
        "control_db_url",
        "SANDBOX_CONTROL_DB_URL",
        str,
        "SQLAlchemy URL of the control-plane database; default SQLite file HOME/control.db.",
    ),
    SettingSpec(
        "audit_db_url",
        "SANDBOX_AUDIT_DB_URL",
        str,
        "SQLAlchemy URL of the audit store; default SQLite file HOME/audit.db.",
    ),
    SettingSpec("memory_limit", "SANDBOX_MEMORY_LIMIT", str, "DuckDB memory limit for queries."),
    SettingSpec("threads", "SANDBOX_THREADS", _positive_int, "DuckDB threads for queries."),
    SettingSpec(
        "query_timeout_s",
        "SANDBOX_QUERY_TIMEOUT_S",
        _positive_float,
        "A query running longer than this is interrupted.",
    ),
    SettingSpec(
        "max_result_rows",
        "SANDBOX_MAX_RESULT_ROWS",
        _positive_int,
        "A result with more rows than this is refused.",
    ),
    SettingSpec(
        "k_floor",
        "SANDBOX_K_FLOOR",
        _positive_int,
        "Platform floor of the minimum group size k; no grant may go below it.",
    ),
    SettingSpec(
        "dp_max_rows_per_entity",
        "SANDBOX_DP_MAX_ROWS_PER_ENTITY",
        _positive_int,
        "With a privacy budget: rows one entity may contribute to one group (C).",
    ),
    SettingSpec(
        "dp_max_groups_per_entity",
        "SANDBOX_DP_MAX_GROUPS_PER_ENTITY",
        _positive_int,
        "With a privacy budget: groups one entity may contribute to (G).",
    ),
    SettingSpec(
        "dp_delta",
        "SANDBOX_DP_DELTA",
        _probability,
        "With a privacy budget: per query, the chance that which groups appear gives one "
        "entity away (δ of the noisy release threshold).",
    ),
    SettingSpec("host", "SANDBOX_HOST", str, "Address `sandbox serve` binds to."),
    SettingSpec("port", "SANDBOX_PORT", int, "Port `sandbox serve` listens on."),
    SettingSpec(
        "audit_sign_every_n",
        "SANDBOX_AUDIT_SIGN_EVERY_N",
        _positive_int,
        "Sign a tree head after this many audit entries.",
    ),
    SettingSpec(
        "audit_sign_every_s",
        "SANDBOX_AUDIT_SIGN_EVERY_S",
        _positive_float,
        "Sign a tree head at least this often (seconds) while entries arrive.",
    ),
    # -- the HTTP service (docs/api.md, docs/deployment.md) --
    SettingSpec(
        "workers", "SANDBOX_WORKERS", _positive_int, "Server processes `sandbox serve` runs."
    ),
    SettingSpec(
        "job_workers",
        "SANDBOX_JOB_WORKERS",
        _positive_int,
        "Analysis jobs that run at once in one server process.",
    ),
    SettingSpec(
        "result_ttl_s",
        "SANDBOX_RESULT_TTL_S",
        _positive_float,
        "A job's result (released or held for review) is deleted after this many seconds.",
    ),
    SettingSpec(
        "rate_limit_per_minute",
        "SANDBOX_RATE_LIMIT_PER_MINUTE",
        _positive_int,
        "Requests one token may make per minute (429 with Retry-After beyond).",
    ),
    SettingSpec("max_body_bytes", "SANDBOX_MAX_BODY_BYTES", _positive_int, "Largest request body."),
    SettingSpec(
        "max_upload_bytes",
        "SANDBOX_MAX_UPLOAD_BYTES",
        _positive_int,
        "Largest dataset upload (a bureau's source file).",
    ),
    SettingSpec("max_sql_length", "SANDBOX_MAX_SQL_LENGTH", _positive_int, "Longest SQL text."),
    SettingSpec(
        "max_jobs_per_operator",
        "SANDBOX_MAX_JOBS_PER_OPERATOR",
        _positive_int,
        "Jobs one operator may have queued or running at once.",
    ),
    SettingSpec(
        "sync_wait_s",
        "SANDBOX_SYNC_WAIT_S",
        _positive_float,
        "Longest a `wait=true` job submission waits for the result.",
    ),
)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every tunable of a deployment.  Paths derive from ``home`` unless overridden."""

    home: Path = Path("sandbox-home")
    control_db_url: str = ""
    audit_db_url: str = ""
    memory_limit: str = "2GB"
    threads: int = max(1, os.cpu_count() or 1)
    query_timeout_s: float = 30.0
    max_result_rows: int = 10_000
    k_floor: int = 10
    dp_max_rows_per_entity: int = 2
    dp_max_groups_per_entity: int = 3
    dp_delta: float = 1e-6
    host: str = "127.0.0.1"
    port: int = 8000
    audit_sign_every_n: int = 1000
    audit_sign_every_s: float = 60.0
    workers: int = 1
    job_workers: int = max(1, os.cpu_count() or 1)
    result_ttl_s: float = 86_400.0
    rate_limit_per_minute: int = 1_200
    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 1_073_741_824
    max_sql_length: int = 20_000
    max_jobs_per_operator: int = 8
    sync_wait_s: float = 10.0

    def __post_init__(self) -> None:
        home = Path(self.home).resolve()
        object.__setattr__(self, "home", home)
        if not self.control_db_url:
            object.__setattr__(self, "control_db_url", f"sqlite:///{home / 'control.db'}")
        if not self.audit_db_url:
            object.__setattr__(self, "audit_db_url", f"sqlite:///{home / 'audit.db'}")

    @property
    def enclave_path(self) -> Path:
        return self.home / "enclave.duckdb"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def classification_dir(self) -> Path:
        return self.home / "classification"

    @property
    def certificates_dir(self) -> Path:
        return self.home / "certificates"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def import_dir(self) -> Path:
        return self.home / "imports"

    def with_home(self, home: Path) -> Settings:
        """Same settings under another home (DB URLs re-derived unless set explicitly)."""
        default = Settings(home=self.home)
        changes: dict[str, Any] = {"home": home}
        for name in ("control_db_url", "audit_db_url"):
            if getattr(self, name) == getattr(default, name):
                changes[name] = ""
        return replace(self, **changes)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from ``environ`` (default ``os.environ``), then explicit overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in SETTINGS:
        raw = env.get(spec.env)
        if raw is None or raw == "":
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except ValueError as exc:
            raise InvalidInput(
                f"setting {spec.env} is not valid: {exc}", rule="settings.parse"
            ) from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(Settings)}
    unknown = set(values) - known
    if unknown:
        raise InvalidInput(f"unknown settings: {sorted(unknown)}", rule="settings.unknown")
    return Settings(**values)
