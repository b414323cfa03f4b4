"""A generated entity key (``entity_key_generated``): what a classification declaring one
must say of the key column.  The enclave numbers the rows at registration
(``sandbox.enclave.generated_keys``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.core.classification import ColumnSpec

__all__ = ["GENERATED_KEY_TYPE", "generated_key_problems"]

#: The type of a generated entity key (row numbers).
GENERATED_KEY_TYPE = "BIGINT"


def generated_key_problems(entity_key: str, columns: Sequence[ColumnSpec]) -> list[str]:
    """A generated key is a BIGINT identifier no one may join on (its numbers name rows
    of one version, no one outside it)."""
    key = next((c for c in columns if c.name.lower() == entity_key.lower()), None)
    if key is None:
        return []  # the entity_key check reports it
    problems = []
    if key.type is not None and key.type.upper() != GENERATED_KEY_TYPE:
        problems.append(
            f"columns.{key.name}.type: a generated entity key is {GENERATED_KEY_TYPE} "
            "(the enclave numbers the rows)"
        )
    if key.joinable:
        problems.append(
            f"columns.{key.name}.joinable: a generated entity key numbers the rows of one "
            "version and names no one elsewhere: it cannot be joinable"
        )
    return problems
