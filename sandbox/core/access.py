"""What an operator's grants allow on one dataset.

The authorization layer's answer and the guard's input.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.core.classification import DatasetSpec, Level
from sandbox.core.data_controls import NO_CONTROLS, DatasetControls

__all__ = ["DatasetAccess"]


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
