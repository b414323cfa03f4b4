"""Classification (分类分级) of a dataset's columns, declared in a TOML file a bureau reviews.

The format, key by key: ``docs/classification.md``.

The file is an allowlist: every column of the table must be classified, every
key must be known, and anything the loader does not understand is an error.
Validation (pydantic models of the file's sections, :mod:`sandbox.core.classification_file`)
collects every problem and reports them together, each as the file, the key's path
and the reason (``visits.toml: columns.amount.bounds: bounds need low < high``), never
a value.  Example::

    [dataset]
    id = "health.claims"
    title = "Medical insurance claims"
    entity_key = "person_id"

    [columns.age]
    level = "L2"
    role = "quasi"
    generalize = { band = 10 }
    measure = { bounds = [0, 120] }   # also averaged: a second, aggregated use

    [columns.claim_amount]
    level = "L2"
    role = "measure"
    bounds = [0, 200000]

    [contribution]                    # optional: the platform's defaults without it
    max_rows_per_entity = 6           # C: one person's claims counted in one group
    max_groups_per_entity = 4         # G: groups one person counts in, per query
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import rfc8785

from sandbox.core.classification_contribution import ContributionEntry
from sandbox.core.classification_file import (
    DATASET_ID,
    ColumnEntry,
    DatasetEntry,
    Generalization,
    Level,
    Role,
    section,
)
from sandbox.core.errors import ClassificationError
from sandbox.core.generated_key import generated_key_problems

__all__ = [
    "ColumnSpec",
    "Contribution",
    "DatasetSpec",
    "Generalization",
    "Level",
    "Role",
    "parse_classification",
    "parse_dataset_id",
    "validate_against_schema",
]

NUMERIC_TYPES = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT"
    r"|FLOAT|DOUBLE|REAL|DECIMAL(\(\d+,\s*\d+\))?)$"
)
TEMPORAL_TYPES = re.compile(r"^(DATE|TIMESTAMP.*|TIME)$")
#: Whole-number types: a column declared as one matches data of any other (a CSV reader
#: infers BIGINT where the bureau wrote INTEGER); what the guard needs is "whole numbers".
INTEGER_TYPES = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT)$"
)


#: Timestamps without a time zone, at any precision: a column declared as one matches data
#: of any other (a CSV of ``2016-10-16 18:20:14`` loads as TIMESTAMP_S, and an outside
#: analyst's ``type = "TIMESTAMP"`` was refused); with a time zone is another type.
LOCAL_TIMESTAMPS = re.compile(r"^(TIMESTAMP|TIMESTAMP_S|TIMESTAMP_MS|TIMESTAMP_NS|DATETIME)$")


def _same_type(declared: str, actual: str) -> bool:
    if declared == actual:
        return True
    return any(
        bool(kind.fullmatch(declared) and kind.fullmatch(actual))
        for kind in (INTEGER_TYPES, LOCAL_TIMESTAMPS)
    )


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    level: Level
    role: Role
    type: str | None = None
    description: str = ""
    bounds: tuple[float, float] | None = None
    """Clamping bounds of the column's measure use: its role's, or a declared second use."""
    generalize: Generalization | None = None
    joinable: tuple[str, ...] = ()
    values: tuple[str, ...] | None = None
    """Declared domain of the values (``values = [...]``), checked by quality's validity."""
    values_per_entity: int | None = None
    """Declared: one entity has at most this many distinct values of the column (a person's
    sex: 1).  A query grouped by such columns only caps each entity to the product of
    their values groups; ``None``: the dataset's ``max_groups_per_entity`` applies."""

    @property
    def uses(self) -> tuple[str, ...]:
        """What the column may be used as: its role, and ``measure`` if also aggregated."""
        extra = self.bounds is not None and self.role is not Role.MEASURE
        return (self.role.value, "measure") if extra else (self.role.value,)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"level": self.level.name, "role": self.role.value}
        if self.type:
            out["type"] = self.type
        if self.description:
            out["description"] = self.description
        if self.bounds is not None and self.role is Role.MEASURE:
            out["bounds"] = list(self.bounds)
        elif self.bounds is not None:
            out["measure"] = {"bounds": list(self.bounds)}
        if self.generalize is not None:
            out["generalize"] = self.generalize.to_dict()
        if self.joinable:
            out["joinable"] = list(self.joinable)
        if self.values is not None:
            out["values"] = list(self.values)
        if self.values_per_entity is not None:  # absent: the digest it had before the key
            out["values_per_entity"] = self.values_per_entity
        return out


@dataclass(frozen=True)
class Contribution:
    """Contribution bounds of one entity key: at most ``C`` rows in each of ``G`` groups,
    and (where declared) at most ``T`` rows over all of a query's groups together.

    What a query with a privacy budget keeps of one entity (``docs/disclosure.md``):
    the rewrite drops the rest before aggregating, and every sensitivity scales with them.
    """

    max_rows_per_entity: int
    max_groups_per_entity: int
    max_total_rows_per_entity: int | None = None
    #: ``caps_at = "registration"``: each entity's rows are ranked once when the table
    #: is registered (``sandbox.enclave.ranked_rows``), for queries that can use them.
    ranked: bool = False

    def narrowed(
        self, max_rows_per_entity: int | None = None, max_groups_per_entity: int | None = None
    ) -> Contribution:
        """These bounds, lowered to the given ones where those are set and lower."""
        rows, groups = self.max_rows_per_entity, self.max_groups_per_entity
        return Contribution(
            rows if max_rows_per_entity is None else min(rows, max_rows_per_entity),
            groups if max_groups_per_entity is None else min(groups, max_groups_per_entity),
            self.max_total_rows_per_entity,
            self.ranked,
        )

    def to_dict(self) -> dict[str, int | str]:
        out: dict[str, int | str] = {
            "max_rows_per_entity": self.max_rows_per_entity,
            "max_groups_per_entity": self.max_groups_per_entity,
        }
        if self.max_total_rows_per_entity is not None:  # absent: the digest it had before T
            out["max_total_rows_per_entity"] = self.max_total_rows_per_entity
        if self.ranked:  # absent: the digest it had before ranks
            out["caps_at"] = "registration"
        return out


@dataclass(frozen=True)
class DatasetSpec:
    id: str
    title: str
    entity_key: str
    columns: tuple[ColumnSpec, ...]
    description: str = ""
    source_name: str = field(default="<classification>", compare=False)
    contribution: Contribution | None = None
    """Declared ``[contribution]``; ``None``: the platform's default bounds apply."""
    update_frequency: str | None = None
    """Declared ``update_frequency``; ``None``: :data:`DEFAULT_UPDATE_FREQUENCY` applies."""
    one_row_per_entity: bool = False
    entity_key_generated: bool = False
    """The source has no entity key: each row is one entity, numbered 1, 2, … into the
    ``entity_key`` column at registration (``enclave.registry``); implies one row per
    entity.  Row numbers name no one outside a version: never joinable."""

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
        out: dict[str, Any] = {
            "dataset": {
                "id": self.id,
                "title": self.title,
                "description": self.description,
                "entity_key": self.entity_key,
            },
            "columns": {c.name: c.to_dict() for c in self.columns},
        }
        # Set only when declared: a file without them keeps the digest it had before.
        if self.update_frequency is not None:
            out["dataset"]["update_frequency"] = self.update_frequency
        if self.one_row_per_entity:
            out["dataset"]["one_row_per_entity"] = True
        if self.entity_key_generated:
            out["dataset"]["entity_key_generated"] = True
        if self.contribution is not None:  # absent: the digest it had before the section
            out["contribution"] = self.contribution.to_dict()
        return out

    def contribution_or(self, default: Contribution) -> Contribution:
        """The declared bounds, or ``default`` (the platform's) for a file without them."""
        return default if self.contribution is None else self.contribution

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


def parse_classification(
    source: str | Mapping[str, Any], *, source_name: str = "<classification>"
) -> DatasetSpec:
    """Parse and validate a classification document (TOML text or a parsed mapping).

    Every problem is reported in one :class:`ClassificationError`, each as the key's
    path and the reason (``columns.amount.bounds: bounds need low < high``).
    """
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
    unknown_top = set(doc) - {"dataset", "columns", "contribution"}
    if unknown_top:
        problems.append(f"unknown sections {sorted(unknown_top)}")
    meta = doc.get("dataset")
    if not isinstance(meta, Mapping):
        raise ClassificationError(
            f"{source_name}: missing [dataset] section", rule="classification.structure"
        )
    columns_doc = doc.get("columns")
    if not isinstance(columns_doc, Mapping) or not columns_doc:
        raise ClassificationError(
            f"{source_name}: missing [columns.*] sections", rule="classification.structure"
        )
    column_problems: list[str] = []
    columns: list[ColumnSpec] = []
    roles: dict[str, Role | None] = {}
    for name, raw in columns_doc.items():
        column = section(ColumnEntry, raw, f"columns.{name}", column_problems)
        roles[str(name).lower()] = None if column is None else column.role
        if column is not None:
            columns.append(_column_spec(str(name), column))
    if len(roles) != len(columns_doc):
        column_problems.append("columns: column names must be unique ignoring case")
    dataset = section(DatasetEntry, meta, "dataset", problems, {"roles": roles})
    problems += column_problems
    contribution = None
    if "contribution" in doc:
        bounds = section(ContributionEntry, doc["contribution"], "contribution", problems)
        if bounds is not None:
            contribution = Contribution(
                bounds.max_rows_per_entity,
                bounds.max_groups_per_entity,
                bounds.max_total_rows_per_entity,
                ranked=bounds.caps_at == "registration",
            )
    if contribution is not None and contribution.ranked:
        # The ranked copy adds __sbx_rank and joins on DuckDB's rowid (enclave.ranked_rows).
        reserved = [c.name for c in columns if c.name.lower() == "rowid" or c.name.startswith("__")]
        if reserved:
            problems.append(
                'contribution.caps_at: "registration" ranks rows beside the columns, so no '
                "column may be named rowid or start with __ (rename it in the source)"
            )
    if dataset is not None and dataset.entity_key_generated:
        problems += generated_key_problems(dataset.entity_key, columns)
    if problems or dataset is None:
        raise ClassificationError(
            f"{source_name}: " + "; ".join(problems), rule="classification.invalid"
        )
    return DatasetSpec(
        id=dataset.id,
        title=dataset.id if dataset.title is None else dataset.title,
        description=dataset.description,
        entity_key=dataset.entity_key,
        columns=tuple(columns),
        source_name=source_name,
        contribution=contribution,
        update_frequency=dataset.update_frequency,
        one_row_per_entity=dataset.one_row_per_entity or dataset.entity_key_generated,
        entity_key_generated=dataset.entity_key_generated,
    )


def _column_spec(name: str, column: ColumnEntry) -> ColumnSpec:
    return ColumnSpec(
        name=name,
        level=column.level,
        role=column.role,
        type=None if column.type is None else column.type.upper(),
        description=column.description,
        bounds=column.bounds if column.measure is None else column.measure,
        generalize=column.generalize,
        joinable=column.joinable or (),
        values=column.values,
        values_per_entity=column.values_per_entity,
    )


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
            hint = ""
            if col.name.lower() == spec.entity_key.lower() and not spec.entity_key_generated:
                hint = " (entity_key_generated = true numbers the rows into it)"
            problems.append(f"column '{col.name}' is classified but not in the data{hint}")
            continue
        real_name, dtype = actual[col.name.lower()]
        if col.type and not _same_type(col.type, dtype):
            problems.append(f"column '{col.name}' is declared {col.type} but the data is {dtype}")
        if col.role is Role.MEASURE and not NUMERIC_TYPES.fullmatch(dtype):
            problems.append(f"column '{col.name}' is a measure but its type {dtype} is not numeric")
        elif col.bounds is not None and not NUMERIC_TYPES.fullmatch(dtype):
            problems.append(
                f"column '{col.name}' declares a measure use but its type {dtype} is not numeric"
            )
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
