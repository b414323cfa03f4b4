# Over 400 lines: every route's request and response models, the OpenAPI document's one source.
"""Request and response models: what the OpenAPI document promises, route by route."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from sandbox.core.settings import SETTINGS, SETTINGS_BY_NAME, SettingSpec

__all__ = [
    "AccountIn",
    "AccountOut",
    "AuditEntries",
    "DatasetOut",
    "ExplainOut",
    "FreezeIn",
    "GrantIn",
    "GrantNarrowIn",
    "GrantOut",
    "GrantShown",
    "JobIn",
    "JobList",
    "JobOut",
    "LicenceIn",
    "Me",
    "Reason",
    "RegisterIn",
    "RegistrationOut",
    "ResultRows",
    "ReviewIn",
    "ReviewOut",
    "SettingsIn",
    "SettingsOut",
    "TokenIn",
    "TokenIssued",
    "TokenOut",
    "UploadOut",
    "UsageOut",
]

Format = Literal["json", "csv", "parquet", "arrow"]
Json = dict[str, Any]
_SQL_CAP = SETTINGS_BY_NAME["max_sql_length"].le
assert _SQL_CAP is not None, "max_sql_length is declared with an upper bound"
#: Hard cap of the schema: the largest ``max_sql_length`` may be (the limit in force applies).
MAX_SQL = int(_SQL_CAP)


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Me(BaseModel):
    name: str
    role: str
    organisation: str
    domains: list[str]
    token_id: str | None


# -- queries and jobs ----------------------------------------------------------------------


class QueryIn(In):
    sql: str = Field(min_length=1, max_length=MAX_SQL, description="One SELECT.")
    purpose: str | None = Field(
        default=None, max_length=63, description="Purpose code; picks the grant when several."
    )


class ExplainIn(QueryIn):
    epsilon: float | None = Field(
        default=None,
        gt=0,
        description="The ε this query would spend, up to the grant's per-query maximum "
        "(default: that maximum); refused above it (budget.epsilon_per_query).",
    )


class JobIn(ExplainIn):
    format: Format = Field(default="json", description="Preferred result format.")


class ExplainOut(BaseModel):
    accepted: bool
    rule: str | None = None
    message: str | None = None
    datasets: list[str] | None = None
    columns: list[str] | None = None
    entity_of: str | None = Field(
        default=None,
        description="The table whose entities the release counts: the dataset the query "
        "reads first, or a per-entity table as <dataset>_per_<key> (docs/guard.md, "
        "Per-entity tables).",
    )
    k: int | None = None
    epsilon: float | None = None
    epsilon_remaining: float | None = None
    accuracy: dict[str, Json] | None = Field(
        default=None,
        description="Per output: the 95% half-width of its noise (docs/disclosure.md, "
        "Accuracy), known before any ε is spent.",
    )
    contribution: dict[str, int | None] | None = Field(
        default=None,
        description="C and G the query runs under: the datasets' [contribution], narrowed "
        "by the grants, and T (max_total_rows_per_entity) where it binds, else null "
        "(docs/disclosure.md).",
    )
    thresholds: list[Json] | None = Field(
        default=None,
        description="Under a privacy budget, for a query whose WHERE or group key compares "
        "with a total (x > (SELECT avg(x) FROM t)): each such total's accuracy, as "
        "accuracy states an output's; it is released first (docs/guard.md, Totals).",
    )
    review_required: bool | None = None
    grants: list[Json] | None = None
    normalized_sql: str | None = None
    reads: dict[str, int] | None = None
    rows_read: int | None = None


class ResultRows(BaseModel):
    columns: list[str]
    rows: list[Json]


class JobOut(BaseModel):
    id: str
    operator: str
    state: Literal[
        "queued",
        "running",
        "awaiting_review",
        "succeeded",
        "failed",
        "refused",
        "cancelled",
        "expired",
    ]
    sql: str
    purpose: str | None
    format: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str | None
    progress: float = Field(description="0 to 1; DuckDB's estimate while the query runs.")
    cancel_requested: bool
    rule: str | None
    message: str | None
    datasets: list[str]
    review_datasets: list[str]
    reviews: list[Json]
    meta: Json | None
    result: ResultRows | None = Field(
        default=None, description="The released rows, when submitted with wait=true."
    )


class JobList(BaseModel):
    jobs: list[JobOut]
    limit: int
    offset: int


class ReviewIn(In):
    verdict: Literal["approve", "reject"]
    reason: str = Field(min_length=1, max_length=2000)


class HeldFailureOut(BaseModel):
    rule: str
    message: str


class ReviewOut(BaseModel):
    job: JobOut
    result: ResultRows
    failed: HeldFailureOut | None = Field(
        default=None,
        description="The run failed on the data, or the job (bound for review) was refused "
        "or failed before it read any (no rows): approval tells the operator this.",
    )


# -- datasets ------------------------------------------------------------------------------


class DatasetOut(BaseModel):
    id: str
    domain: str
    title: str
    description: str
    entity_key: str
    row_count: int
    version: int
    frozen: bool
    columns: dict[str, Json] = Field(description="Classification per column (never values).")
    source: Json | None = Field(default=None, description="Provenance (bureaus and auditors).")
    grants: list[str] | None = Field(default=None, description="Your grants on it (operators).")


class UploadOut(BaseModel):
    upload_id: str
    bytes: int
    sha256: str


class SourceIn(In):
    upload_id: str | None = Field(default=None, description="From POST /v1/uploads.")
    path: str | None = Field(
        default=None, description="A file under the home's imports/ directory (relative)."
    )
    format: Literal["csv", "parquet", "json", "arrow"] | None = None


class RegisterIn(In):
    classification: str = Field(min_length=1, max_length=200_000, description="TOML text.")
    source: SourceIn


class ClassifyIn(In):
    classification: str = Field(min_length=1, max_length=200_000, description="TOML text.")


class BoundsProposalIn(In):
    epsilon: float | None = Field(
        default=None, gt=0, le=10, description="Owner-side ε to spend (recorded)."
    )
    percentile: float | None = Field(
        default=None, gt=0.5, lt=1, description="Share of entities C and G keep whole."
    )
    value_percentile: float | None = Field(
        default=None, gt=0.5, lt=1, description="Quantile proposed as clamping bounds."
    )


class BoundsProposalOut(BaseModel):
    dataset: str
    epsilon: float
    percentile: float
    value_percentile: float
    contribution: dict[str, int]
    groupings: list[str] = Field(
        description="The columns whose per-entity distinct values G's one quantile reads."
    )
    bounds: dict[str, list[float]]
    owner_epsilon_spent: float
    toml: str


class RegistrationOut(BaseModel):
    dataset: DatasetOut
    replaced: bool
    certificate: Json


# -- grants --------------------------------------------------------------------------------


class GrantIn(In):
    dataset: str = Field(max_length=130)
    operator: str = Field(max_length=63)
    purpose_code: str = Field(max_length=63)
    purpose_text: str = Field(max_length=2000)
    valid_from: datetime | None = None
    valid_until: datetime
    max_level: Literal["L1", "L2", "L3"] = "L2"
    columns: list[str] | None = None
    groupable: list[str] = []
    k: int | None = Field(default=None, ge=1)
    epsilon_total: float | None = Field(default=None, gt=0)
    epsilon_per_query: float | None = Field(default=None, gt=0)
    queries_per_day: int | None = Field(default=None, ge=1)
    rows_per_day: int | None = Field(default=None, ge=1)
    release_mode: Literal["dp", "reviewed"] | None = Field(
        default=None,
        description="dp (the default): every released number noised under the budget "
        "(epsilon_total, or the platform's default); reviewed: exact values, each release "
        "held for the owning bureau's review.",
    )
    review_required: bool = Field(
        default=False, description="Deprecated: true means release_mode 'reviewed'."
    )
    dominance_n: Literal[1, 2] = 2
    dominance_p: float | None = Field(default=0.9, gt=0, le=1)
    round_digits: int | None = Field(default=2, ge=-9, le=9)
    max_rows_per_entity: int | None = Field(
        default=None, ge=1, le=1000, description="C below the dataset's [contribution]."
    )
    max_groups_per_entity: int | None = Field(
        default=None, ge=1, le=1000, description="G below the dataset's [contribution]."
    )
    use: Literal["public_interest", "commercial"] = "public_interest"
    price_per_query_fen: int = Field(default=0, ge=0)
    price_per_million_rows_fen: int = Field(default=0, ge=0)
    reason: str = Field(default="", max_length=2000)


class GrantNarrowIn(In):
    valid_until: datetime | None = None
    max_level: Literal["L1", "L2", "L3"] | None = None
    columns: list[str] | None = None
    groupable: list[str] | None = None
    k: int | None = Field(default=None, ge=1)
    epsilon_total: float | None = Field(default=None, gt=0)
    epsilon_per_query: float | None = Field(default=None, gt=0)
    queries_per_day: int | None = Field(default=None, ge=1)
    rows_per_day: int | None = Field(default=None, ge=1)
    dominance_n: Literal[1, 2] | None = None
    dominance_p: float | None = Field(default=None, gt=0, le=1)
    round_digits: int | None = Field(default=None, ge=-9, le=9)
    max_rows_per_entity: int | None = Field(default=None, ge=1, le=1000)
    max_groups_per_entity: int | None = Field(default=None, ge=1, le=1000)
    reason: str = Field(default="", max_length=2000)


class Reason(In):
    reason: str = Field(default="", max_length=2000)


class ReleaseModeIn(In):
    mode: Literal["dp", "reviewed"]
    epsilon_total: float | None = Field(default=None, gt=0)
    epsilon_per_query: float | None = Field(default=None, gt=0)
    reason: str = Field(min_length=1, max_length=2000)


class GrantUsage(BaseModel):
    day: str
    queries_today: int
    rows_scanned_today: int
    queries_remaining: int | None
    rows_remaining: int | None
    epsilon_spent: float | None
    epsilon_remaining: float | None


class GrantOut(BaseModel):
    id: str
    dataset: str
    operator: str
    issued_by: str
    status: str
    version: int
    created_at: str
    updated_at: str
    purpose: Json
    valid_from: str
    valid_until: str
    max_level: str
    columns: list[str] | None
    groupable: list[str]
    k: int
    epsilon_total: float | None
    epsilon_per_query: float | None
    queries_per_day: int | None
    rows_per_day: int | None
    release_mode: Literal["dp", "reviewed"]
    review_required: bool
    dominance_n: int
    dominance_p: float | None
    round_digits: int | None
    max_rows_per_entity: int | None = None
    max_groups_per_entity: int | None = None
    tariff: Json
    usage: GrantUsage | None = None


class GrantShown(BaseModel):
    grant: GrantOut
    history: list[Json]


class UsageOut(BaseModel):
    day: str = Field(description="The UTC day, or the month for monthly totals.")
    operator: str
    grant: str
    dataset: str
    purpose: str
    use: str
    queries: int
    joined_queries: int
    rows_scanned: int
    cpu_ms: int
    epsilon_spent: float
    query_fee_fen: int
    row_fee_fen: int
    charge_fen: int


# -- audit ---------------------------------------------------------------------------------


class AuditEntries(BaseModel):
    entries: list[Json]
    offset: int
    limit: int


# -- admin ---------------------------------------------------------------------------------


class LicenceIn(In):
    number: str | None = Field(default=None, max_length=100)
    valid_until: datetime | None = None
    status: Literal["active", "suspended", "withdrawn"] | None = None


class AccountIn(In):
    name: str = Field(max_length=63)
    role: Literal["operator", "bureau", "auditor", "admin"]
    organisation: str = Field(min_length=1, max_length=200)
    domains: list[str] = []
    licence: LicenceIn | None = None


class AccountOut(BaseModel):
    name: str
    role: str
    organisation: str
    domains: list[str]
    status: str
    frozen: bool
    created_at: str
    licence: Json | None = None


class TokenIn(In):
    days: float = Field(default=90, gt=0, le=366)
    label: str = Field(default="", max_length=200)


class TokenIssued(BaseModel):
    id: str
    account: str
    token: str = Field(description="Shown once; stored only as its SHA-256.")
    expires_at: str


class TokenOut(BaseModel):
    id: str
    account: str
    label: str
    created_at: str
    expires_at: str
    revoked: bool


class FreezeIn(In):
    dataset: str | None = Field(default=None, max_length=130)
    operator: str | None = Field(default=None, max_length=63)
    reason: str = Field(default="", max_length=2000)


def _setting_field(spec: SettingSpec, *, optional: bool) -> Any:
    """A model field for ``spec``: its type, help and (for input) its declared bounds."""
    if not optional:
        return (spec.type, Field(description=spec.help))
    field = Field(
        default=None,
        description=spec.help,
        ge=spec.ge,
        gt=spec.gt,
        le=spec.le,
        lt=spec.lt,
        allow_inf_nan=False if spec.type is float else None,
    )
    return (spec.type | None, field)


if TYPE_CHECKING:  # the fields are generated from the settings' declaration below

    class SettingsOut(BaseModel): ...

    class SettingsIn(In): ...

else:
    SettingsOut = create_model(
        "SettingsOut",
        __doc__="The k floor and the limits in force, with the admin's run-time overrides.",
        **{spec.name: _setting_field(spec, optional=False) for spec in SETTINGS if spec.public},
        overrides=(Json, Field(description="The admin's run-time changes in force.")),
    )
    SettingsIn = create_model(
        "SettingsIn",
        __base__=In,
        __doc__="Run-time changes: only the settings declared `runtime`, within their bounds.",
        **{spec.name: _setting_field(spec, optional=True) for spec in SETTINGS if spec.runtime},
    )
