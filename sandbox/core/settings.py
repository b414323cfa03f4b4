# Over 400 lines: one declaration per setting, in one frozen class that the docs table comes from.
"""Platform settings: one frozen object, built from the environment by an injectable loader.

Each setting is declared once, as a field of :class:`Settings`: its name (the
environment variable is ``SANDBOX_`` + the name in capitals), type, default,
bounds, help text and whether the admin may change it at run time.  Everything
else is derived from that declaration: :func:`load_settings` (the environment),
:class:`~sandbox.core.runtime_settings.RuntimeSettings` (the admin's run-time
changes), the API's ``SettingsIn``/``SettingsOut`` and the table in
``docs/settings.md`` (``python -m sandbox.core.settings`` prints it; a test checks
the file holds exactly that).  So a bound is the same wherever a value comes from.

Nothing reads ``os.environ`` elsewhere: the CLI and the server receive a
:class:`Settings` and pass it down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import annotated_types as at
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as validated_dataclass
from pydantic.fields import FieldInfo

from sandbox.core.errors import InvalidInput

__all__ = [
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "SettingSpec",
    "Settings",
    "load_settings",
    "settings_table",
]

ENV_PREFIX = "SANDBOX_"
_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def setting(
    default: Any,
    *,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    runtime: bool = False,
    public: bool = False,
    default_text: str | None = None,
) -> Any:
    """Declare one setting (a field of :class:`Settings`).

    ``runtime``: the admin may change it while the platform runs (it is then also
    ``public``: shown to every account by ``GET /v1/settings``).  ``default_text``:
    how the docs show a default computed at start (the number of cores, a path
    under the home).
    """
    extra: dict[str, Any] = {"runtime": runtime, "public": public or runtime}
    if default_text is not None:
        extra["default_text"] = default_text
    return Field(default, ge=ge, gt=gt, le=le, lt=lt, description=help, json_schema_extra=extra)


_CORES = max(1, os.cpu_count() or 1)


@validated_dataclass(frozen=True, kw_only=True, config=_CONFIG)
class Settings:
    """Every tunable of a deployment.  Paths derive from ``home`` unless overridden."""

    home: Path = setting(
        Path("sandbox-home"),
        help="Deployment home, relative to the working directory: `enclave.duckdb`, "
        "`control.db`, `audit.db`, `keys/`, `certificates/`, `staging/`, `imports/`. "
        "Created with mode 0700. The CLI's `--home` overrides it.",
    )
    control_db_url: str = setting(
        "",
        help="SQLAlchemy URL of the control-plane database (catalog, accounts, grants, "
        "ledgers, jobs). `postgresql+psycopg://user@host/db` for deployments with several "
        "API servers.",
        default_text="`sqlite:///HOME/control.db`",
    )
    audit_db_url: str = setting(
        "",
        help="SQLAlchemy URL of the audit store (may be the same PostgreSQL database as the "
        "control plane).",
        default_text="`sqlite:///HOME/audit.db`",
    )
    encrypt_at_rest: bool = setting(
        True,
        help="`sandbox init` creates an encrypted home: the enclave file, held results and "
        "cached releases are encrypted under data keys in "
        "`HOME/datakeys.json`, wrapped by the master key (docs/operations.md, encryption). "
        "A home that has `datakeys.json` is always opened encrypted.",
    )
    master_key_file: str = setting(
        "",
        help="The master key file (base64, mode 0600 or stricter; a looser mode is refused). "
        "Keep it out of the home's backups.",
        default_text="`HOME.master.key` (beside the home, not in it)",
    )
    master_key_env: str = setting(
        "",
        help="Name of an environment variable holding the master key (base64); when set it "
        "is used instead of `master_key_file`.",
    )
    memory_limit: str = setting("2GB", help="DuckDB `memory_limit` of the enclave connections.")
    threads: int = setting(
        _CORES,
        ge=1,
        help="DuckDB `threads` of the enclave connections.",
        default_text="number of cores",
    )
    query_timeout_s: float = setting(
        30.0,
        gt=0,
        public=True,
        help="A query still running after this many seconds is interrupted "
        "(`query_timeout`, rule `enclave.limits`).",
    )
    warehouse: str = setting(
        "",
        help="Directory of the Parquet warehouse that holds datasets registered with "
        "`--engine spark` (mode 0700; only the engine's service account reads it). Several "
        "hosts share one (a shared file system) with one Spark master.",
        default_text="`HOME/warehouse`",
    )
    spark_master: str = setting(
        "local[2]",
        help="Spark master URL for datasets registered with `--engine spark` "
        "(`local[N]` runs Spark in the server's own JVM; `spark://host:7077` a cluster). "
        "Needs the `[spark]` extra and a Java 17 runtime.",
    )
    max_result_rows: int = setting(
        10_000,
        ge=1,
        public=True,
        help="A result with more rows is refused (`result_too_large`), never truncated.",
    )
    max_rows_read: int = setting(
        200_000_000,
        ge=1,
        runtime=True,
        help="Rows one query may read, estimated before it runs: each dataset's row count "
        "times the times the expanded query scans it (CTE references and UNION ALL "
        "branches multiply; `guard.cost`). Also what the rows quota is charged.",
    )
    max_dataset_reads: int = setting(
        64,
        ge=1,
        runtime=True,
        help="Times one query may scan one dataset once its CTE references are expanded "
        "(`guard.cost`).",
    )
    max_expanded_nodes: int = setting(
        50_000,
        ge=1000,
        runtime=True,
        help="Syntax nodes of a query once each CTE reference is expanded: bounds the "
        "guard's own analysis time before it starts (`guard.too_complex`).",
    )
    max_string_copies: int = setting(
        64,
        ge=2,
        runtime=True,
        help="Column values one string expression may concatenate, counted through CTEs "
        "(`guard.cost`): a string doubled level by level is refused before DuckDB plans it.",
    )
    plan_cache_size: int = setting(
        1024,
        ge=0,
        help="Analysed queries (parsed, costed, checked and rewritten) kept per process, "
        "keyed by the SQL and everything its analysis reads (grants, classification, "
        "disclosure parameters, policy version); 0 turns the cache off.",
    )
    job_workers_per_operator: int = setting(
        0,
        ge=0,
        public=True,
        help="Jobs of one operator that run at once in one server process; 0: one less "
        "than `job_workers` (at least 1), so one operator never holds every worker.",
    )
    held_job_workers: int = setting(
        1,
        ge=1,
        public=True,
        help="Jobs bound for review (their results wait for a bureau) that run at once in "
        "one server process, on workers of their own beside `job_workers`: how long one "
        "runs moves nothing its operator sees (sandbox/jobs/held_view.py).",
    )
    k_floor: int = setting(
        10,
        ge=2,
        runtime=True,
        help="Platform floor of the minimum group size k: no grant may set a lower k. "
        "At least 2: a group of one is never released.",
    )
    dp_max_rows_per_entity: int = setting(
        2,
        ge=1,
        help="With a privacy budget, rows one entity may contribute to one group (C); more "
        "are dropped before aggregation. Sensitivities scale with it (`docs/disclosure.md`). "
        "The default for a dataset whose classification declares no `[contribution]`.",
    )
    dp_max_groups_per_entity: int = setting(
        3,
        ge=1,
        help="With a privacy budget, groups one entity may contribute to (G); chosen by a "
        "hash of the group keys. The default for a dataset whose classification declares "
        "no `[contribution]`.",
    )
    default_bounds_epsilon: float = setting(
        0.2,
        ge=0,
        le=10,
        help="ε of each DP quantile drawn once per dataset whose classification declares no "
        "`[contribution]` (outside the verified one-row case), at its first query with a "
        "privacy budget: rows per entity t (a second quantile where t reaches C·G, up to "
        "`default_bounds_max_rows`), so queries run at C = T = t; then, where a test at a "
        "quarter of this ε finds enough entities (600 at 0.2), one quantile per groupable "
        "column without a declared `values_per_entity`, which set G and each query's G "
        '(`docs/disclosure.md`, "Bounds drawn from the data"). All recorded in the audit trail '
        "as the owner's, before the data is read. 0: the platform default applies as is.",
    )
    default_bounds_max_rows: int = setting(
        100,
        ge=1,
        le=1000,
        help="The most rows per entity that draw may set T to where entities hold more rows "
        "than the default keeps (C·G): a second DP quantile (spending `default_bounds_epsilon` "
        "again) draws t from C·G up to this, and a drawn t above C·G runs the dataset's "
        "queries at C = T = t with the default G, instead of dropping every row beyond C·G "
        '(`docs/disclosure.md`, "Bounds drawn from the data"). A stored draw keeps its t '
        "when this is lowered later. Set at or below C·G, a draw only ever lowers the default.",
    )
    bounds_epsilon: float = setting(
        0.1,
        gt=0,
        le=10,
        help="ε the bureau spends, by default, on one `sandbox dataset propose-bounds`: "
        "split among the DP quantiles it draws (`docs/classification.md`); recorded in "
        "the audit trail.",
    )
    bounds_percentile: float = setting(
        0.95,
        gt=0.5,
        lt=1,
        help="The share of entities whose rows (C) and groups (G) `propose-bounds` aims to "
        "keep whole. Not 0.99: at the default ε the top 1% of a 50,000-entity dataset is "
        "too few for the DP quantile to tell the largest count from any larger candidate.",
    )
    bounds_value_percentile: float = setting(
        0.99,
        gt=0.5,
        lt=1,
        help="The quantile (and its complement) of a measure's values `propose-bounds` "
        "proposes as its clamping bounds.",
    )
    dp_delta: float = setting(
        1e-6,
        gt=0,
        lt=1,
        help="With a privacy budget, per query: a query's release is (ε, δ)-DP. Pays for "
        "partition selection (a group is released if its noisy entity count reaches "
        "`max(k, τ)`, τ from δ) and, when the Gaussian is chosen, half of it for the zCDP "
        "conversion (`docs/disclosure.md`).",
    )
    dp_default_epsilon_total: float = setting(
        10.0,
        gt=0,
        help="Privacy budget ε a `dp` grant gets when its bureau issues it without one "
        "(recorded in the grant's terms; `docs/policy.md`).",
    )
    dp_default_epsilon_per_query: float = setting(
        1.0,
        gt=0,
        help="ε per query a `dp` grant gets when issued without one (at most its total).",
    )
    host: str = setting(
        "127.0.0.1",
        help="Address `sandbox serve` binds to. Put a TLS reverse proxy in front for "
        "anything but loopback.",
    )
    port: int = setting(8000, ge=1, le=65_535, help="Port `sandbox serve` listens on.")
    audit_sign_every_n: int = setting(
        1000, ge=1, help="Sign a Merkle tree head after this many new audit entries."
    )
    audit_sign_every_s: float = setting(
        60.0, gt=0, help="Sign a tree head at least this often (seconds) while entries arrive."
    )
    audit_origin: str = setting(
        "",
        help="The audit log's origin: the first line of its C2SP checkpoints and their key name, "
        "which witnesses follow (docs/audit.md, checkpoints). Set it once, before witnesses "
        "start, to a schema-less URL without spaces or `+`.",
        default_text="`<host name>/sandbox-audit`, written to `HOME/checkpoints/ORIGIN` at "
        "first use",
    )
    # -- the HTTP service (docs/api.md, docs/deployment.md) --
    workers: int = setting(
        1,
        ge=1,
        public=True,
        help="Server processes `sandbox serve` runs (uvicorn workers). Each opens the "
        "enclave read-only; see `docs/deployment.md`.",
    )
    job_workers: int = setting(
        _CORES,
        ge=1,
        public=True,
        help="Analysis jobs that run at once in one server process; further jobs wait in "
        "the queue (`docs/api.md`).",
        default_text="number of cores (÷ `workers` under `sandbox serve --workers`)",
    )
    http_threads: int = setting(
        max(4, 2 * _CORES),
        ge=1,
        help="Threads one server process runs blocking request work on (authentication, "
        "DuckDB, SQLite); further requests wait on the event loop. A synchronous job's "
        "wait holds none (`docs/architecture.md`, Performance).",
        default_text="twice the number of cores, at least 4",
    )
    result_ttl_s: float = setting(
        86_400.0,
        gt=0,
        runtime=True,
        help="A job's result, released or held for review, is deleted this many seconds "
        "after it was computed (held for review: after the job was submitted, so when it "
        "expires tells nothing of its run; sandbox/jobs/held_view.py); the job becomes "
        "`expired`.",
    )
    rate_limit_per_minute: int = setting(
        1_200,
        ge=1,
        runtime=True,
        help="Requests one token may make per minute; beyond it `rate_limited` (429) with "
        "`Retry-After`. Counted per server process.",
    )
    max_body_bytes: int = setting(
        1_048_576,
        ge=1024,
        runtime=True,
        help="Largest request body (`request_too_large`, 413), uploads excepted.",
    )
    max_upload_bytes: int = setting(
        1_073_741_824,
        ge=1024,
        runtime=True,
        help="Largest dataset upload a bureau may send.",
    )
    max_sql_length: int = setting(
        20_000,
        ge=100,
        le=1_000_000,
        runtime=True,
        help="Longest SQL text, on every path: explain, jobs, `sandbox query` "
        "(`guard.sql_length`).",
    )
    max_jobs_per_operator: int = setting(
        8,
        ge=1,
        runtime=True,
        help="Jobs one operator may have `queued` or `running` at once (`jobs.concurrency`, 429).",
    )
    review_timing_hidden: bool = setting(
        True,
        help="A job whose result waits for a bureau's review shows its operator "
        "`awaiting_review` from submission until it ends, with no start, end, expiry, "
        "progress or CPU time, never runs inline nor is waited for, and is cancelled at "
        "once (sandbox/jobs/held_view.py): how long an exact run took is data the review "
        "has not passed (an outside attack read a membership bit from it). Off: such jobs "
        "show their run as others do, and leak that to their operator.",
    )
    sync_inline_rows: int = setting(
        1_000_000,
        ge=0,
        runtime=True,
        help="A job submitted with `wait=true` whose query reads at most this many rows "
        "(its cost bound, `max_rows_read`) runs at once in the request's thread (bounded "
        "by `http_threads`) instead of waiting in the queue behind larger jobs; 0: never.",
    )
    sync_wait_s: float = setting(
        10.0,
        gt=0,
        le=300,
        runtime=True,
        help="Longest a job submission with `wait=true` waits before answering 202 with "
        "the job's state.",
    )
    # -- abuse limits of the HTTP service (docs/deployment.md lists them with the proxy's) --
    sign_in_failures_per_minute: int = setting(
        30,
        ge=1,
        runtime=True,
        help="Failed sign-ins (unknown, expired or revoked tokens, bad enrolment codes) "
        "one client address, and one presented credential, may make per minute; beyond "
        "it `rate_limited` (429). Valid tokens are never held back by it.",
    )
    failure_audit_window_s: float = setting(
        60.0,
        ge=1,
        le=3600,
        help="Refusals of unknown tokens and codes are recorded as one audit entry per "
        "client address and window of this many seconds, with their count (the first "
        "at once); a window's entry is written when it closes, or at shutdown.",
    )
    trusted_proxies: str = setting(
        "",
        help="Comma-separated addresses or networks (`10.0.0.5`, `10.0.0.0/24`) of reverse "
        "proxies whose `X-Forwarded-For` names the client. Empty: the header is ignored "
        "and the peer address is the client.",
    )
    keep_alive_timeout_s: float = setting(
        5.0,
        gt=0,
        le=300,
        help="An idle keep-alive connection is closed after this many seconds (uvicorn "
        "`timeout_keep_alive`).",
    )
    max_header_bytes: int = setting(
        16_384,
        ge=1024,
        le=1_048_576,
        help="Largest request line and headers: beyond it `headers_too_large` (431); "
        "uvicorn's h11 stops buffering an unfinished header block past it too "
        "(`h11_max_incomplete_event_size`).",
    )
    body_read_timeout_s: float = setting(
        30.0,
        gt=0,
        le=3600,
        runtime=True,
        help="A request body that sends nothing for this many seconds is refused "
        "(`request_timeout`, 408).",
    )
    max_staging_bytes_per_account: int = setting(
        4 << 30,
        ge=1024,
        runtime=True,
        help="Bytes of unregistered uploads one account may hold in staging at once "
        "(`staging_quota`, 413).",
    )
    max_staging_bytes: int = setting(
        16 << 30,
        ge=1024,
        runtime=True,
        help="Bytes of unregistered uploads all accounts together may hold in staging "
        "(`staging_full`, 507).",
    )
    upload_ttl_s: float = setting(
        86_400.0,
        gt=0,
        runtime=True,
        help="An upload not registered within this many seconds is deleted.",
    )
    registration_publicity_days: float = setting(
        7.0,
        gt=0,
        help="Publicity period (公示期) of a registration application, in days: objections "
        "may be filed until it ends, and the certificate is issued only after it "
        "(docs/governance.md).",
    )
    revision_publicity_days: float = setting(
        2.0,
        gt=0,
        help="Publicity period of a revision that loosens a registered dataset's "
        "classification (a level lowered, a column added, bounds widened...), in days; a "
        "purely tightening revision takes effect at once (docs/governance.md).",
    )
    staging_sweep_s: float = setting(
        600.0,
        gt=0,
        help="How often the server deletes expired uploads (also once at start).",
    )
    # -- ingestion: the confined child that parses a source (docs/deployment.md) --
    ingest_memory_bytes: int = setting(
        4 << 30,
        ge=256 << 20,
        help="Address space of the child process that parses an uploaded or imported "
        "source (`RLIMIT_AS`; with a delegated cgroup v2 also `memory.max`). pyarrow "
        "reserves about 0.7 GB of it; JSON needs about 3 times its text size.",
    )
    ingest_cpu_s: int = setting(
        600, ge=1, help="CPU seconds of the parsing child, all threads (`RLIMIT_CPU`)."
    )
    ingest_timeout_s: float = setting(
        600.0, gt=0, help="Wall-clock seconds before the server kills the parsing child."
    )
    ingest_max_output_bytes: int = setting(
        8 << 30,
        ge=1 << 20,
        help="Largest converted table the parsing child may write under "
        "`staging/work/` (`RLIMIT_FSIZE`).",
    )
    ingest_max_bytes: int = setting(
        1 << 30,
        ge=1024,
        help="Size of a source after decompression: CSV or JSON text (a `.gz`, `.zst`, "
        "`.bz2` or `.lz4` file counts decompressed), or decoded Parquet or Arrow columns.",
    )
    ingest_max_rows: int = setting(
        50_000_000, ge=1, help="Rows of one source (Parquet: read from its footer first)."
    )
    ingest_max_depth: int = setting(
        64,
        ge=1,
        le=1000,
        help="Nesting of a JSON value, or of a Parquet or Arrow column type.",
    )
    ingest_max_line_bytes: int = setting(
        1 << 20, ge=1024, help="Longest line of CSV or JSON-lines text (without its newline)."
    )
    ingest_concurrency: int = setting(
        2,
        ge=1,
        help="Sources parsed at once on this host, by all server processes together; "
        "a further registration waits its turn up to `ingest_timeout_s` (then 503 "
        "`enclave_busy`, rule `ingest.busy`). Bounds parsing memory at this many times "
        "`ingest_memory_bytes`.",
    )

    monitor_enabled: bool = setting(
        True,
        help="Run the risk detectors on every query decision (docs/monitoring.md); off, no "
        "alert is raised and no response policy acts.",
    )
    monitor_probe_window_s: float = setting(
        600.0, gt=0, help="Refusal bursts (detector `probing`) are counted in this window."
    )
    monitor_probe_rule_warning: int = setting(
        8, ge=2, help="Refusals by one rule within the window that raise a `warning`."
    )
    monitor_probe_total_high: int = setting(
        20, ge=2, help="Refusals by any rules within the window that raise a `high` alert."
    )
    monitor_repeat_warning: int = setting(
        10,
        ge=2,
        help="Variants of one query that differ only in constants, within ten minutes, that "
        "raise a `warning` (detector `repeated`).",
    )
    monitor_repeat_high: int = setting(
        20, ge=2, help="As `monitor_repeat_warning`, for a `high` alert."
    )
    monitor_volume_floor_per_hour: int = setting(
        300,
        ge=1,
        help="Queries per hour below which no volume spike is raised, whatever the baseline.",
    )
    monitor_volume_factor: float = setting(
        3.0,
        gt=1,
        help="A spike is an hour with more than this many times the operator's busiest hour "
        "of the previous 7 days.",
    )
    monitor_burn_factor: float = setting(
        4.0,
        gt=1,
        help="Budget burn: ε spent (at least a quarter of the grant's) faster than this many "
        "times the share of the grant's validity elapsed.",
    )
    monitor_suppress_queries: int = setting(
        25,
        ge=2,
        help="Queries with small groups suppressed within an hour that raise a `warning`.",
    )
    monitor_work_hours: str = setting(
        "00-24",
        help="Working hours (local, `HH-HH`, e.g. `07-22`); a query outside them is an `info` "
        "alert. The default, all day, raises none.",
    )
    monitor_utc_offset_hours: float = setting(
        8.0, ge=-12, le=14, help="The deployment's local time zone, for working hours."
    )
    metrics_loopback_open: bool = setting(
        False,
        help="`GET /metrics` answers a client on a loopback address (127.0.0.0/8, ::1) "
        "without a token (a Prometheus on the same host); otherwise an admin or auditor "
        "token is needed (docs/monitoring.md).",
    )

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
    def warehouse_dir(self) -> Path:
        """The governed Parquet warehouse of datasets registered with ``--engine spark``."""
        return Path(self.warehouse).resolve() if self.warehouse else self.home / "warehouse"

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


# -- what the declaration says, for the loaders, the API models and the docs ------------------


@dataclass(frozen=True)
class SettingSpec:
    """One setting as :class:`Settings` declares it (read from the field, never restated)."""

    name: str
    type: type
    default: Any
    help: str
    ge: float | None
    gt: float | None
    le: float | None
    lt: float | None
    runtime: bool
    public: bool
    default_text: str | None
    adapter: TypeAdapter[Any] = field(repr=False, compare=False)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def bounds(self) -> dict[str, float]:
        """The declared bounds as ``Field`` keywords (``ge``, ``gt``, ``le``, ``lt``)."""
        limits = {"ge": self.ge, "gt": self.gt, "le": self.le, "lt": self.lt}
        return {key: value for key, value in limits.items() if value is not None}

    def validate(self, value: Any) -> Any:
        """``value`` (text from the environment, or JSON) as this setting's type, in bounds.

        Raises ``ValueError`` with a one-line reason.
        """
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            reasons = {_reason(error["msg"]) for error in exc.errors()}
            raise ValueError("; ".join(sorted(reasons))) from None


def _reason(message: str) -> str:
    return re.sub(r"^Input should be\b", "must be", message)


def _spec(name: str) -> SettingSpec:
    info: FieldInfo = Settings.__pydantic_fields__[name]  # type: ignore[attr-defined]
    extra = info.json_schema_extra
    assert isinstance(extra, dict), f"{name} is not declared with setting()"
    bounds: dict[str, Any] = {}
    for constraint in info.metadata:
        if isinstance(constraint, at.Ge | at.Gt | at.Le | at.Lt):
            key = type(constraint).__name__.lower()
            bounds[key] = getattr(constraint, key)
    annotation = info.annotation
    assert isinstance(annotation, type)
    # The field's own type and constraints: a value checked here is one Settings accepts.
    form: Any = Annotated[(annotation, *info.metadata)] if info.metadata else annotation
    return SettingSpec(
        name=name,
        type=annotation,
        default=info.default,
        help=info.description or "",
        ge=bounds.get("ge"),
        gt=bounds.get("gt"),
        le=bounds.get("le"),
        lt=bounds.get("lt"),
        runtime=bool(extra["runtime"]),
        public=bool(extra["public"]),
        default_text=text if isinstance(text := extra.get("default_text"), str) else None,
        adapter=TypeAdapter(form, config=_CONFIG),
    )


SETTINGS: tuple[SettingSpec, ...] = tuple(_spec(f.name) for f in fields(Settings))
"""Every setting, in declaration order."""

SETTINGS_BY_NAME: Mapping[str, SettingSpec] = MappingProxyType({s.name: s for s in SETTINGS})


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from ``environ`` (default ``os.environ``), then explicit overrides.

    Every value is checked against its declaration; all problems are reported at once,
    each naming the environment variable (or the override) it came from.
    """
    env = os.environ if environ is None else environ
    given = {name: value for name, value in overrides.items() if value is not None}
    unknown = set(given) - set(SETTINGS_BY_NAME)
    if unknown:
        raise InvalidInput(f"unknown settings: {sorted(unknown)}", rule="settings.unknown")
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in SETTINGS:
        raw = env.get(spec.env)
        if raw is None or raw == "":
            continue
        try:
            values[spec.name] = spec.validate(raw)
        except ValueError as exc:
            problems.append(f"setting {spec.env} is not valid: {exc} (got {raw!r})")
    for name, value in given.items():
        try:
            values[name] = SETTINGS_BY_NAME[name].validate(value)
        except ValueError as exc:
            problems.append(f"setting {name} is not valid: {exc} (got {value!r})")
    if problems:
        raise InvalidInput("; ".join(problems), rule="settings.parse")
    return Settings(**values)


# -- the documentation ---------------------------------------------------------------------


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{value:g}").replace("e+", "e")


def _default_cell(spec: SettingSpec) -> str:
    if spec.default_text is not None:
        return spec.default_text
    value = spec.default
    shown = _number(value) if isinstance(value, int | float) else str(value)
    return f"`{shown}`"


def _bounds_cell(spec: SettingSpec) -> str:
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    return ", ".join(f"{signs[key]} {_number(value)}" for key, value in spec.bounds.items())


def settings_table() -> str:
    """The Markdown table of every setting (what ``docs/settings.md`` shows)."""
    lines = [
        "| setting | environment variable | default | bounds | run time | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for spec in SETTINGS:
        cells = (
            f"`{spec.name}`",
            f"`{spec.env}`",
            _default_cell(spec),
            _bounds_cell(spec),
            "yes" if spec.runtime else "",
            spec.help.replace("|", "\\|"),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
