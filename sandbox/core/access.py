"""What an operator's grants allow on one dataset.

The authorization layer's answer and the guard's input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sandbox.core.classification import DatasetSpec, Level
from sandbox.core.data_controls import NO_CONTROLS, DatasetControls

__all__ = ["DatasetAccess", "budgeted_spec"]


@dataclass(frozen=True)
class DatasetAccess:
    """What the operator's grant allows on one dataset (from the authorization layer)."""

    spec: DatasetSpec
    max_level: Level = Level.L3
    columns: frozenset[str] | None = None
    groupable: frozenset[str] = frozenset()
    #: The negative list and important-data items of the dataset, with the limited items
    #: the grant was co-approved for (``sandbox.core.data_controls.load_controls``).
    controls: DatasetControls = NO_CONTROLS
    #: Every row of the dataset's version is a distinct entity: its entity key was
    #: verified unique and never NULL there (``sandbox.enclave.entity_rows``), so each
    #: (group, entity) cell is one row and the per-entity stage can be skipped.
    entity_is_row: bool = False
    #: The enclave holds this version's rows ranked within each entity at registration
    #: (``sandbox.enclave.ranked_rows``): a query the ranks suit caps without a window.
    ranked: bool = False
    #: The release is noised under a privacy budget: the classification's generalisations
    #: declared ``exact_only`` were taken out of ``spec`` (``budgeted_spec``).
    budgeted: bool = False
    #: A table the query itself defines, not a registered dataset: a per-entity table
    #: (``sandbox.query.entity_table``), one row per entity of the dataset it aggregates.
    #: The SELECT that computes it in the enclave (DuckDB's dialect), and the dataset
    #: columns it reads (``domain.table.column``), which are what the query touches.
    derived_sql: str | None = None
    derived_reads: frozenset[str] = frozenset()
    #: Under a budget, for a dataset that declares no ``[contribution]``: per groupable
    #: column (lower case) without a declared ``values_per_entity``, the DP quantile of an
    #: entity's distinct values of it (``sandbox.query.default_bounds``).  Read only to
    #: bound a query's groups per entity (``sandbox.query.key_groups``), never where a
    #: declaration of one value per entity is relied on (a false one costs rows there).
    drawn_groups: tuple[tuple[str, int], ...] = ()


def budgeted_spec(spec: DatasetSpec) -> DatasetSpec:
    """``spec`` as a release under a privacy budget reads it: without the generalisations
    its bureau declared binding on exact releases only (``exact_only``)."""
    if not any(c.generalize is not None and c.generalize.exact_only for c in spec.columns):
        return spec
    columns = tuple(
        replace(c, generalize=None) if c.generalize is not None and c.generalize.exact_only else c
        for c in spec.columns
    )
    return replace(spec, columns=columns)
