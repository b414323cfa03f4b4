"""The generated entity key (``entity_key_generated``): rows numbered at registration.

An extract with no person number, one row per person, gets its entity key here, inside
the registration's transaction (``sandbox.enclave.registry``): 1, 2, … in the order
loaded, one entity each.  A source that already has the column is refused.
"""

from __future__ import annotations

from typing import Any

from sandbox.core.classification import DatasetSpec
from sandbox.core.errors import ConnectorError
from sandbox.core.generated_key import GENERATED_KEY_TYPE
from sandbox.enclave.catalog import table_columns

__all__ = ["number_rows"]


def number_rows(con: Any, spec: DatasetSpec) -> None:
    """Number the loaded rows of ``spec``'s table into its entity key column, where the
    classification declares ``entity_key_generated`` (else nothing)."""
    if not spec.entity_key_generated:
        return
    key = spec.entity_key
    present = table_columns(con, spec.domain, spec.table)
    if key.lower() in {name.lower() for name in present}:
        raise ConnectorError(
            f"{spec.id}: the source already has a column {key}, which the classification "
            "says the enclave generates (entity_key_generated): declare that column the "
            "entity key without entity_key_generated, or rename it",
            rule="registry.entity_key",
        )
    table = f'"{spec.domain}"."{spec.table}"'
    con.execute(f'ALTER TABLE {table} ADD COLUMN "{key}" {GENERATED_KEY_TYPE}')
    # Numbered by position, not by rowid (an uncommitted row's rowid is the transaction's).
    con.execute(
        f'UPDATE {table} SET "{key}" = s.n FROM (SELECT rowid AS r, '
        f"row_number() OVER (ORDER BY rowid) AS n FROM {table}) AS s WHERE {table}.rowid = s.r"
    )
