"""Classification (分类分级) of a dataset's columns, declared in a TOML file a bureau reviews.

The file is an allowlist: every column of the table must be classified, every
key must be known, and anything the loader does not understand is an error.
Validation collects every problem and reports them together, naming the
column and the rule, never a data value.  Example::

    [dataset]
    id = "health.claims"
    title = "Medical insurance claims"
    entity_key = "person_id"

    [columns.age]
    level = "L2"
    role = "quasi"
    generalize = { band = 10 }

    [columns.claim_amount]
    level = "L2"
    role = "measure"
    bounds = [0, 200000]
"""

from __future__ import annotations

import enum
import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import rfc8785

from sandbox.core.errors import ClassificationError

__all__ = [
    "ColumnSpec",
    "DatasetSpec",
    "Generalization",
    "Level",
    "Role",
    "parse_classification",
    "parse_dataset_id",
    "validate_against_schema",
]

DATASET_ID = re.compile(r"^([a-z][a-z0-9_]{0,62})\.([a-z][a-z0-9_]{0,62})$")
COLUMN_REF = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
NUMERIC_TYPES = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT"
    r"|FLOAT|DOUBLE|REAL|DECIMAL(\(\d+,\s*\d+\))?)$"
)
TEMPORAL_TYPES = re.compile(r"^(DATE|TIMESTAMP.*|TIME)$")
TRUNCATE_UNITS = ("year", "quarter", "month", "week", "day", "hour", "minute")


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


@dataclass(frozen=True)
class Generalization:
    """How a quasi-identifier must be coarsened before it may be grouped."""

    kind: str  # "band" | "truncate" | "prefix"
    width: float | None = None
    unit: str | None = None
    length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "band":
            return {"band": self.width}
        if self.kind == "truncate":
            return {"truncate": self.unit}
        return {"prefix": self.length}

    def describe(self) -> str:
        if self.kind == "band":
            return f"bands of {self.width:g}"
        if self.kind == "truncate":
            return f"truncated to {self.unit}"
        return f"first {self.length} characters"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    level: Level
    role: Role
    type: str | None = None
    description: str = ""
    bounds: tuple[float, float] | None = None
    generalize: Generalization | None = None
    joinable: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"level": self.level.name, "role": self.role.value}
        if self.type:
            out["type"] = self.type
        if self.description:
            out["description"] = self.description
        if self.bounds is not None:
            out["bounds"] = list(self.bounds)
        if self.generalize is not None:
            out["generalize"] = self.generalize.to_dict()
        if self.joinable:
            out["joinable"] = list(self.joinable)
        return out


@dataclass(frozen=True)
class DatasetSpec:
    id: str
    title: str
    entity_key: str
    columns: tuple[ColumnSpec, ...]
    description: str = ""
    source_name: str = field(default="<classification>", compare=False)

    @property
    def domain(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def table(self) -> str:
        return self.id.split(".", 1)[1]

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name.lower() == name.lower():
                return col
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": {
                "id": self.id,
                "title": self.title,
                "description": self.description,
                "entity_key": self.entity_key,
            },
            "columns": {c.name: c.to_dict() for c in self.columns},
        }

    def sha256(self) -> str:
        """Digest of the classification as declared (canonical JSON), for certificates."""
        return hashlib.sha256(rfc8785.dumps(self.to_dict())).hexdigest()


def parse_dataset_id(text: str) -> tuple[str, str]:
    """Split ``domain.table``; both parts lower-case identifiers."""
    match = DATASET_ID.fullmatch(text or "")
    if not match:
        raise ClassificationError(
            "a dataset id is 'domain.table' in lower-case letters, digits and '_'",
            rule="classification.dataset_id",
        )
    return match.group(1), match.group(2)


_DATASET_KEYS = {"id", "title", "description", "entity_key"}
_COLUMN_KEYS = {"level", "role", "type", "description", "bounds", "generalize", "joinable"}


def parse_classification(
    source: str | Mapping[str, Any], *, source_name: str = "<classification>"
) -> DatasetSpec:
    """Parse and validate a classification document (TOML text or a parsed mapping)."""
    if isinstance(source, str):
        try:
            doc: Mapping[str, Any] = tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise ClassificationError(
                f"{source_name}: not valid TOML ({exc})", rule="classification.syntax"
            ) from None
    else:
        doc = source
    problems: list[str] = []
    unknown_top = set(doc) - {"dataset", "columns"}
    if unknown_top:
        problems.append(f"unknown sections {sorted(unknown_top)}")
    meta = doc.get("dataset")
    if not isinstance(meta, Mapping):
        raise ClassificationError(
            f"{source_name}: missing [dataset] section", rule="classification.structure"
        )
    unknown_meta = set(meta) - _DATASET_KEYS
    if unknown_meta:
        problems.append(f"[dataset]: unknown keys {sorted(unknown_meta)}")
    dataset_id = str(meta.get("id", ""))
    if not DATASET_ID.fullmatch(dataset_id):
        problems.append("[dataset].id must be 'domain.table' (lower-case identifiers)")
    entity_key = str(meta.get("entity_key", ""))
    columns_doc = doc.get("columns")
    if not isinstance(columns_doc, Mapping) or not columns_doc:
        raise ClassificationError(
            f"{source_name}: missing [columns.*] sections", rule="classification.structure"
        )
    columns = []
    for name, raw in columns_doc.items():
        column = _parse_column(str(name), raw, problems)
        if column is not None:
            columns.append(column)
    names = [c.name.lower() for c in columns]
    if len(set(names)) != len(names):
        problems.append("column names must be unique ignoring case")
    if not entity_key:
        problems.append("[dataset].entity_key is required (the column naming a person or firm)")
    elif entity_key.lower() not in names:
        problems.append(f"entity_key '{entity_key}' is not a classified column")
    else:
        key_col = columns[names.index(entity_key.lower())]
        if key_col.role is not Role.IDENTIFIER:
            problems.append(f"entity_key '{entity_key}' must have role 'identifier'")
    if problems:
        raise ClassificationError(
            f"{source_name}: " + "; ".join(problems), rule="classification.invalid"
        )
    return DatasetSpec(
        id=dataset_id,
        title=str(meta.get("title", dataset_id)),
        description=str(meta.get("description", "")),
        entity_key=entity_key,
        columns=tuple(columns),
        source_name=source_name,
    )


def _parse_column(name: str, raw: Any, problems: list[str]) -> ColumnSpec | None:
    where = f"column '{name}'"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a table")
        return None
    unknown = set(raw) - _COLUMN_KEYS
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}")
    try:
        level = Level.parse(str(raw.get("level", "")))
    except KeyError:
        problems.append(f"{where}: level must be one of L1, L2, L3, L4")
        return None
    try:
        role = Role(str(raw.get("role", "")))
    except ValueError:
        problems.append(f"{where}: role must be one of {[r.value for r in Role]}")
        return None
    bounds = _parse_bounds(where, role, raw.get("bounds"), problems)
    generalize = _parse_generalization(where, role, raw.get("generalize"), problems)
    joinable = raw.get("joinable", [])
    if isinstance(joinable, str):
        joinable = [joinable]
    if not isinstance(joinable, list) or not all(isinstance(j, str) for j in joinable):
        problems.append(f"{where}: joinable must be a list of 'domain.table.column'")
        joinable = []
    if "joinable" in raw and not joinable:
        problems.append(f"{where}: declared joinable without a target column")
    for target in joinable:
        if not COLUMN_REF.fullmatch(target):
            problems.append(f"{where}: join target '{target}' is not 'domain.table.column'")
    if joinable and level is Level.L4:
        problems.append(f"{where}: an L4 column can never be a join key")
    if joinable and role not in (Role.IDENTIFIER, Role.DIMENSION):
        problems.append(f"{where}: only identifier or dimension columns can be join keys")
    return ColumnSpec(
        name=name,
        level=level,
        role=role,
        type=str(raw["type"]).upper() if "type" in raw else None,
        description=str(raw.get("description", "")),
        bounds=bounds,
        generalize=generalize,
        joinable=tuple(joinable),
    )


def _parse_bounds(
    where: str, role: Role, raw: Any, problems: list[str]
) -> tuple[float, float] | None:
    if raw is None:
        if role is Role.MEASURE:
            problems.append(f"{where}: a measure needs clamping bounds = [low, high]")
        return None
    if role is not Role.MEASURE:
        problems.append(f"{where}: bounds apply to measures only")
        return None
    valid = (
        isinstance(raw, list)
        and len(raw) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
    )
    if not valid:
        problems.append(f"{where}: bounds must be two numbers [low, high]")
        return None
    low, high = float(raw[0]), float(raw[1])
    if not low < high:
        problems.append(f"{where}: bounds need low < high")
        return None
    return (low, high)


def _parse_generalization(
    where: str, role: Role, raw: Any, problems: list[str]
) -> Generalization | None:
    if raw is None:
        return None
    if role is not Role.QUASI:
        problems.append(f"{where}: generalize applies to quasi-identifiers only")
        return None
    if not isinstance(raw, Mapping) or len(raw) != 1:
        problems.append(
            f"{where}: generalize is one of {{band = N}}, {{truncate = UNIT}}, {{prefix = N}}"
        )
        return None
    ((kind, value),) = raw.items()
    if kind == "band" and isinstance(value, int | float) and value > 0:
        return Generalization("band", width=float(value))
    if kind == "truncate" and value in TRUNCATE_UNITS:
        return Generalization("truncate", unit=str(value))
    if kind == "prefix" and isinstance(value, int) and value > 0:
        return Generalization("prefix", length=int(value))
    problems.append(
        f"{where}: generalize must be band = positive number, truncate = one of "
        f"{list(TRUNCATE_UNITS)}, or prefix = positive integer"
    )
    return None


def validate_against_schema(spec: DatasetSpec, schema: Mapping[str, str]) -> DatasetSpec:
    """Check the declaration against the loaded table's columns and DuckDB types.

    Returns the spec with each column's ``type`` filled in (names as in the table).
    """
    problems: list[str] = []
    actual = {name.lower(): (name, dtype.upper()) for name, dtype in schema.items()}
    declared = {c.name.lower() for c in spec.columns}
    for missing in sorted(set(actual) - declared):
        problems.append(f"column '{actual[missing][0]}' is in the data but not classified")
    columns = []
    for col in spec.columns:
        if col.name.lower() not in actual:
            problems.append(f"column '{col.name}' is classified but not in the data")
            continue
        real_name, dtype = actual[col.name.lower()]
        if col.type and col.type != dtype:
            problems.append(f"column '{col.name}' is declared {col.type} but the data is {dtype}")
        if col.role is Role.MEASURE and not NUMERIC_TYPES.fullmatch(dtype):
            problems.append(f"column '{col.name}' is a measure but its type {dtype} is not numeric")
        gen = col.generalize
        if gen and gen.kind == "band" and not NUMERIC_TYPES.fullmatch(dtype):
            problems.append(f"column '{col.name}': band generalisation needs a numeric type")
        if gen and gen.kind == "truncate" and not TEMPORAL_TYPES.fullmatch(dtype):
            problems.append(f"column '{col.name}': truncate generalisation needs a date/time type")
        if gen and gen.kind == "prefix" and dtype != "VARCHAR":
            problems.append(f"column '{col.name}': prefix generalisation needs a VARCHAR")
        columns.append(replace(col, name=real_name, type=dtype))
    if problems:
        raise ClassificationError(
            f"{spec.source_name} does not match the data of {spec.id}: " + "; ".join(problems),
            rule="classification.schema_mismatch",
        )
    return replace(spec, columns=tuple(columns))
