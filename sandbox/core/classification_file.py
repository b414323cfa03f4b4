"""The classification file's vocabulary and structure: levels, roles, and pydantic models.

:mod:`sandbox.core.classification` reads a file with these models and builds its
:class:`~sandbox.core.classification.DatasetSpec`.  One model per section
(``[dataset]``, ``[columns.NAME]``, ``[contribution]``); every rule that concerns one key is a
validator of that key, so its problem is reported with the key's path
(``columns.amount.bounds``).  ``strict``: nothing is coerced (``title = 5`` is
refused, not read as ``"5"``); ``extra="forbid"``: a key the loader does not know
is an error, not ignored; a problem never quotes the value that caused it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError

from sandbox.core.generalization import Generalization

__all__ = [
    "COLUMN_REF",
    "DATASET_ID",
    "DEFAULT_UPDATE_FREQUENCY",
    "MAX_CONTRIBUTION",
    "TRUNCATE_UNITS",
    "UPDATE_FREQUENCIES",
    "ColumnEntry",
    "DatasetEntry",
    "Generalization",
    "Level",
    "Role",
    "TruncateUnit",
    "reasons",
    "section",
]

DATASET_ID = re.compile(r"^([a-z][a-z0-9_]{0,62})\.([a-z][a-z0-9_]{0,62})$")
COLUMN_REF = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
TruncateUnit = Literal["year", "quarter", "month", "week", "day", "hour", "minute"]
TRUNCATE_UNITS: tuple[str, ...] = get_args(TruncateUnit)
UpdateFrequency = Literal["daily", "weekly", "monthly", "quarterly", "yearly"]
UPDATE_FREQUENCIES: tuple[str, ...] = get_args(UpdateFrequency)
#: How often a dataset is declared to be updated when its file does not say (quality's
#: timeliness measures a version's age against it).
DEFAULT_UPDATE_FREQUENCY = "yearly"
#: Largest contribution bound a file may declare: a typo (``10000`` for ``10``) would
#: scale every noise by it, and ``propose-bounds`` never suggests more.
MAX_CONTRIBUTION = 1000


class Level(enum.IntEnum):
    """Classification level: L1 public, L2 internal, L3 sensitive, L4 core (never released)."""

    L1 = 1
    L2 = 2
    L3 = 3
    L4 = 4

    @classmethod
    def parse(cls, text: str) -> Level:
        return cls[text.upper()]


class Role(enum.StrEnum):
    IDENTIFIER = "identifier"
    QUASI = "quasi"
    SENSITIVE = "sensitive"
    DIMENSION = "dimension"
    MEASURE = "measure"


_FILE = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)
_Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]

_GENERALIZE_SHAPE = (
    "generalize is one of {band = N}, {truncate = UNIT}, {prefix = N}, "
    "each with exact_only = true or false besides"
)
_GENERALIZE_VALUE = (
    "generalize must be band = positive number, truncate = one of "
    f"{list(TRUNCATE_UNITS)}, or prefix = positive integer (exact_only: true or false)"
)


def _level(value: Any) -> Level:
    if isinstance(value, str) and value.upper() in Level.__members__:
        return Level.parse(value)
    raise PydanticCustomError("level", "level must be one of L1, L2, L3, L4")


def _role(value: Any) -> Role:
    if isinstance(value, str) and value in {r.value for r in Role}:
        return Role(value)
    raise PydanticCustomError("role", f"role must be one of {[r.value for r in Role]}")


def _bounds(value: Any, handler: ValidatorFunctionWrapHandler) -> tuple[float, float] | None:
    """Two finite numbers, low < high.

    TOML has ``inf`` and ``nan``: an infinite bound clamps nothing and makes the noise
    scale infinite, so it is refused here, not discovered by the disclosure math.  Equal
    bounds are refused too: they clamp every value to one constant, which is a measure
    in name only (and almost always a typo).
    """
    if value is None:
        return None
    shape = PydanticCustomError("bounds", "bounds must be two numbers [low, high]")
    if not isinstance(value, list | tuple):
        raise shape
    try:
        low, high = handler(value)
    except ValidationError as exc:
        if any(e["type"] == "finite_number" for e in exc.errors()):
            raise PydanticCustomError(
                "bounds_finite", "bounds must be finite numbers (inf, -inf and nan are refused)"
            ) from None
        raise shape from None
    if not low < high:
        raise PydanticCustomError("bounds_order", "bounds need low < high")
    return (float(low), float(high))


class _Measure(BaseModel):
    """``measure = { bounds = [low, high] }``: a second, aggregated use of a column."""

    model_config = _FILE

    bounds: Annotated[
        Annotated[tuple[_Finite, _Finite], Strict(False)] | None, WrapValidator(_bounds)
    ] = Field(default=None, validate_default=True)


_MEASURE_SHAPE = "measure is a table {bounds = [low, high]}"


def _measure_use(value: Any) -> tuple[float, float] | None:
    """A measure use's clamping bounds; ``None`` when the key is absent."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"bounds"}:
        raise PydanticCustomError("measure", _MEASURE_SHAPE)
    try:
        bounds = _Measure.model_validate(value).bounds
    except ValidationError as exc:
        reason = exc.errors(include_url=False, include_input=False)[0]["msg"]
        raise PydanticCustomError("measure", "{reason}", {"reason": reason}) from None
    if bounds is None:
        raise PydanticCustomError("measure", _MEASURE_SHAPE)
    return bounds


class _Generalize(BaseModel):
    model_config = _FILE

    band: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    truncate: TruncateUnit | None = None
    prefix: Annotated[int, Field(gt=0)] | None = None
    exact_only: bool = False


def _generalization(value: Any) -> Generalization | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(set(value) - {"exact_only"}) != 1:
        raise PydanticCustomError("generalize", _GENERALIZE_SHAPE)
    try:
        rule = _Generalize.model_validate(value)
    except ValidationError:
        raise PydanticCustomError("generalize", _GENERALIZE_VALUE) from None
    only = rule.exact_only
    if rule.band is not None:
        return Generalization("band", width=rule.band, exact_only=only)
    if rule.truncate is not None:
        return Generalization("truncate", unit=rule.truncate, exact_only=only)
    assert rule.prefix is not None  # exactly one key, and all three are typed
    return Generalization("prefix", length=rule.prefix, exact_only=only)


def _join_targets(value: Any, handler: ValidatorFunctionWrapHandler) -> tuple[str, ...] | None:
    """One target or a list of them; ``None`` when the key is absent."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        value = tuple(value)
    try:
        return handler(value)  # type: ignore[no-any-return]
    except ValidationError:
        raise PydanticCustomError(
            "joinable", "joinable must be a list of 'domain.table.column'"
        ) from None


class ColumnEntry(BaseModel):
    """``[columns.NAME]``.  Field order matters: later validators see level and role."""

    model_config = _FILE

    level: Annotated[Level, PlainValidator(_level)]
    role: Annotated[Role, PlainValidator(_role)]
    type: str | None = None
    description: str = ""
    bounds: Annotated[
        Annotated[tuple[_Finite, _Finite], Strict(False)] | None, WrapValidator(_bounds)
    ] = Field(default=None, validate_default=True)
    generalize: Annotated[Generalization | None, PlainValidator(_generalization)] = None
    joinable: Annotated[tuple[str, ...] | None, WrapValidator(_join_targets)] = None
    measure: Annotated[tuple[float, float] | None, PlainValidator(_measure_use)] = None
    #: The declared domain of a column's values (quality's validity counts values outside).
    values: (
        Annotated[
            tuple[Annotated[str, Strict(), Field(max_length=200)], ...],
            Strict(False),
            Field(min_length=1, max_length=1000),
        ]
        | None
    ) = None
    #: At most this many distinct values of the column per entity (a person's sex: 1): a
    #: query grouped by such columns caps each entity to fewer groups than the dataset's G.
    values_per_entity: Annotated[int, Strict(), Field(ge=1, le=MAX_CONTRIBUTION)] | None = None

    @field_validator("bounds")
    @classmethod
    def _bounds_for_measures(
        cls, value: tuple[float, float] | None, info: ValidationInfo
    ) -> tuple[float, float] | None:
        role = info.data.get("role")
        if value is None and role is Role.MEASURE:
            raise PydanticCustomError(
                "bounds_missing", "a measure needs clamping bounds = [low, high]"
            )
        if value is not None and role not in (None, Role.MEASURE):
            raise PydanticCustomError("bounds_role", "bounds apply to measures only")
        return value

    @field_validator("generalize")
    @classmethod
    def _generalize_quasi(
        cls, value: Generalization | None, info: ValidationInfo
    ) -> Generalization | None:
        if value is not None and info.data.get("role") not in (None, Role.QUASI):
            raise PydanticCustomError(
                "generalize_role", "generalize applies to quasi-identifiers only"
            )
        return value

    @field_validator("measure")
    @classmethod
    def _measure_use_role(
        cls, value: tuple[float, float] | None, info: ValidationInfo
    ) -> tuple[float, float] | None:
        """A second use, aggregated: for columns whose own role is not already a measure.

        ``age`` grouped in bands and averaged: ``role = "quasi"``, ``generalize``, and
        ``measure = { bounds = [0, 120] }``.  A measure declares ``bounds`` itself; an
        identifier is never aggregated.
        """
        role = info.data.get("role")
        if value is not None and role is Role.MEASURE:
            raise PydanticCustomError(
                "measure_role", "a measure column declares bounds = [low, high] directly"
            )
        if value is not None and role is Role.IDENTIFIER:
            raise PydanticCustomError("measure_role", "an identifier cannot have a measure use")
        return value

    @field_validator("joinable")
    @classmethod
    def _join_keys(
        cls, value: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        if value is None:
            return None
        problems = [] if value else ["declared joinable without a target column"]
        problems += [
            f"join target '{t}' is not 'domain.table.column'"
            for t in value
            if not COLUMN_REF.fullmatch(t)
        ]
        if value and info.data.get("level") is Level.L4:
            problems.append("an L4 column can never be a join key")
        if value and info.data.get("role") not in (None, Role.IDENTIFIER, Role.DIMENSION):
            problems.append("only identifier or dimension columns can be join keys")
        if problems:
            raise PydanticCustomError("joinable", "; ".join(problems))
        return value


class DatasetEntry(BaseModel):
    """``[dataset]``; the entity key is checked against the columns (validation context)."""

    model_config = _FILE

    id: str = Field(default="", validate_default=True)
    title: str | None = None
    description: str = ""
    entity_key: str = Field(default="", validate_default=True)
    update_frequency: UpdateFrequency | None = None
    one_row_per_entity: bool = False  # declared: quality counts duplicate entity keys
    entity_key_generated: bool = False  # no key in the source: rows numbered, one entity each

    @field_validator("id")
    @classmethod
    def _dataset_id(cls, value: str) -> str:
        if not DATASET_ID.fullmatch(value):
            raise PydanticCustomError(
                "dataset_id", "id must be 'domain.table' (lower-case identifiers)"
            )
        return value

    @field_validator("entity_key")
    @classmethod
    def _entity_key(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            raise PydanticCustomError(
                "entity_key", "entity_key is required (or entity_key_generated = true)"
            )
        # Lower-cased column name -> its role (None: declared, but its own entry is invalid).
        roles: Mapping[str, Role | None] = (info.context or {}).get("roles", {})
        if value.lower() not in roles:
            raise PydanticCustomError(
                "entity_key", f"entity_key '{value}' is not a classified column"
            )
        if roles[value.lower()] not in (None, Role.IDENTIFIER):
            raise PydanticCustomError(
                "entity_key", f"entity_key '{value}' must have role 'identifier'"
            )
        return value


Section = TypeVar("Section", bound=BaseModel)


def section(
    model: type[Section],
    raw: Any,
    path: str,
    problems: list[str],
    context: Mapping[str, Any] | None = None,
) -> Section | None:
    """The section, or ``None`` with its problems appended as ``path.key: reason``."""
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        problems.extend(reasons(exc, path))
        return None


def reasons(exc: ValidationError, path: str) -> list[str]:
    """One line per problem: the key's path and the reason, never the offending value."""
    lines: list[str] = []
    unknown: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join([path, *(str(part) for part in error["loc"])])
        kind = error["type"]
        if kind == "extra_forbidden":
            parent, _, key = where.rpartition(".")
            unknown.setdefault(parent, []).append(key)
        elif kind == "missing":
            lines.append(f"{where}: is required")
        elif kind in ("model_type", "dict_type"):
            lines.append(f"{where}: must be a table")
        elif kind == "string_type":
            lines.append(f"{where}: must be a string")
        else:
            lines.append(f"{where}: {error['msg']}")
    unknown_keys = [f"{parent}: unknown keys {sorted(keys)}" for parent, keys in unknown.items()]
    return unknown_keys + lines
