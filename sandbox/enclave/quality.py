"""Quality evaluation inside the enclave: the counts, taken on the loading connection.

:func:`measure_quality` runs while a version is loaded (``registry._load``, in the
loading transaction), so the report describes exactly the rows the certificate names
and binds.  Its queries return counts only; declared bounds and domains are passed as
parameters, never spliced into SQL.  The arithmetic is :mod:`sandbox.enclave.quality_math`.
"""

from __future__ import annotations

from typing import Any

from sandbox.core.classification import DatasetSpec, Level
from sandbox.core.classification_file import DEFAULT_UPDATE_FREQUENCY
from sandbox.enclave.quality_math import (
    ColumnCounts,
    PartnerCounts,
    QualityCounts,
    build_report,
)

__all__ = ["measure_quality", "quality_counts"]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quality_counts(con: Any, spec: DatasetSpec) -> QualityCounts:
    """Count, in one scan, what the report needs; then each declared partner's matches.

    Missing is NULL, or for text a blank string (a CSV's empty field).  An L4 column never
    leaves in any form, so it is not evaluated at all (nor uniqueness over an L4 key).
    """
    table = f"{_ident(spec.domain)}.{_ident(spec.table)}"
    evaluated = [c for c in spec.columns if c.level is not Level.L4]
    key_level = next(
        (c.level for c in spec.columns if c.name.lower() == spec.entity_key.lower()), Level.L4
    )
    unique = spec.one_row_per_entity and key_level is not Level.L4
    selects = ["count(*)"]
    params: list[Any] = []
    rules: list[str | None] = []
    for col in evaluated:
        c = _ident(col.name)
        if col.type == "VARCHAR":  # a blank text is as missing as a NULL
            selects.append(f"count(*) FILTER (WHERE trim({c}) <> '')")
        else:
            selects.append(f"count({c})")
        if col.bounds is not None:
            selects.append(f"count(*) FILTER (WHERE {c} < ? OR {c} > ?)")
            params += [col.bounds[0], col.bounds[1]]
            rules.append("bounds")
        elif col.values is not None:
            marks = ", ".join("?" for _ in col.values)
            selects.append(
                f"count(*) FILTER (WHERE trim(CAST({c} AS VARCHAR)) <> '' "
                f"AND CAST({c} AS VARCHAR) NOT IN ({marks}))"
            )
            params += list(col.values)
            rules.append("values")
        else:
            rules.append(None)
    selects.append(f"count(DISTINCT {_ident(spec.entity_key)})" if unique else "0")
    row = con.execute(f"SELECT {', '.join(selects)} FROM {table}", params).fetchone()
    values = list(row)
    rows = int(values.pop(0))
    columns = []
    for col, rule in zip(evaluated, rules, strict=True):
        non_null = int(values.pop(0))
        invalid = int(values.pop(0)) if rule is not None else 0
        columns.append(ColumnCounts(col.name, non_null, rule, invalid))
    entities = int(values.pop(0))
    partners = tuple(
        _partner(con, table, col.name, target) for col in evaluated for target in col.joinable
    )
    return QualityCounts(rows, tuple(columns), entities, unique, partners)


def _partner(con: Any, table: str, column: str, target: str) -> PartnerCounts:
    domain, name, key = target.split(".", 2)
    present = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
        "AND lower(column_name) = lower(?)",
        [domain, name, key],
    ).fetchone()
    c = _ident(column)
    if not present or not present[0]:
        (keys,) = con.execute(f"SELECT count(DISTINCT {c}) FROM {table}").fetchone() or (0,)
        return PartnerCounts(column, target, int(keys), None)
    other = f"{_ident(domain)}.{_ident(name)}"
    keys, matched = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE k IN (SELECT {_ident(key)} FROM {other})) "
        f"FROM (SELECT DISTINCT {c} AS k FROM {table} WHERE {c} IS NOT NULL)"
    ).fetchone() or (0, 0)
    return PartnerCounts(column, target, int(keys), int(matched))


def measure_quality(
    con: Any, spec: DatasetSpec, *, k: int, evaluated_at: str, data_as_of: str | None = None
) -> dict[str, Any]:
    """The quality report of the table ``spec`` names, as loaded on ``con``."""
    return build_report(
        quality_counts(con, spec),
        k=k,
        update_frequency=spec.update_frequency or DEFAULT_UPDATE_FREQUENCY,
        evaluated_at=evaluated_at,
        data_as_of=data_as_of,
    )
