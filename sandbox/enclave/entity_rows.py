"""Whether every row of a dataset is a distinct entity: a fact the query planner uses.

Where a classification declares ``one_row_per_entity`` and the rows bear it out (the
entity key unique and never NULL), each (group, entity) cell of a query straight over
the table is one row, and the stats query skips its per-entity stage
(``sandbox.query.rewrite.one_row_per_cell``).  A declaration alone is not trusted: quality
reports duplicates where it is wrong, so the rows are counted.  The answer is a boolean
that never leaves the host; only the plan's shape depends on it, not a released value.
"""

from __future__ import annotations

from sandbox.core.classification import DatasetSpec
from sandbox.enclave.enclave import Enclave

__all__ = ["entity_is_row"]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def entity_is_row(enclave: Enclave, spec: DatasetSpec) -> bool:
    """Whether the enclave's table of ``spec`` has one row per entity, none without a key.

    False without the declaration (no scan).  One scan otherwise: rows, keyed rows and
    distinct keys all equal.
    """
    if not spec.one_row_per_entity:
        return False
    key = _ident(spec.entity_key)
    table = f"{_ident(spec.domain)}.{_ident(spec.table)}"
    found = enclave.query(f"SELECT count(*), count({key}), count(DISTINCT {key}) FROM {table}")
    rows, keyed, distinct = (found.column(i)[0].as_py() for i in range(3))
    return bool(rows == keyed == distinct)
