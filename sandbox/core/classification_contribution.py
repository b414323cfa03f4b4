"""The ``[contribution]`` section of a classification file: C, G (and T) of the entity key.

Read by :func:`sandbox.core.classification.parse_classification` with
:func:`sandbox.core.classification_file.section`, like every section: problems are
reported by key path, never with the value (``docs/classification.md``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from sandbox.core.classification_file import _FILE, MAX_CONTRIBUTION

__all__ = ["ContributionEntry"]


def _bound(value: Any, what: str) -> int:
    """A contribution bound: a whole number in ``[1, MAX_CONTRIBUTION]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("contribution", f"{what} must be a whole number")
    if not 1 <= value <= MAX_CONTRIBUTION:
        raise PydanticCustomError(
            "contribution", f"{what} must be between 1 and {MAX_CONTRIBUTION}"
        )
    return value


def _rows_bound(value: Any) -> int:
    return _bound(value, "max_rows_per_entity")


def _groups_bound(value: Any) -> int:
    return _bound(value, "max_groups_per_entity")


def _total_bound(value: Any) -> int:
    return _bound(value, "max_total_rows_per_entity")


class ContributionEntry(BaseModel):
    """``[contribution]``: what one entity (of the dataset's entity key) may contribute.

    ``max_rows_per_entity`` (C): rows of one entity counted in one group;
    ``max_groups_per_entity`` (G): groups one entity counts in, per query with a
    privacy budget.  Both required: a half-declared section is a mistake, not a wish
    for the platform's default of the other.  ``max_total_rows_per_entity`` (T),
    optional: rows of one entity counted over all groups of a query together; where
    ``T < C·G`` row counts and sums pay for ``T`` rows, not ``C·G``
    (``docs/disclosure.md``, "The total-rows bound T").  ``caps_at``, optional:
    ``"query"`` (the default) caps each entity per query; ``"registration"`` ranks each
    entity's rows once when the table is registered, so a query without WHERE or FILTER
    (but on one value per entity) keeps its first ``T`` rows and counts it in the groups
    of its first ``G`` at about the cost of the plain query (``docs/disclosure.md``,
    "Caps ranked at registration").  It needs ``T`` declared and at most ``C``:
    otherwise no query could use the ranks.
    """

    model_config = _FILE

    max_rows_per_entity: Annotated[int, PlainValidator(_rows_bound)]
    max_groups_per_entity: Annotated[int, PlainValidator(_groups_bound)]
    max_total_rows_per_entity: Annotated[int, PlainValidator(_total_bound)] | None = None
    caps_at: Literal["query", "registration"] = "query"

    @model_validator(mode="after")
    def _ranks_usable(self) -> ContributionEntry:
        total = self.max_total_rows_per_entity
        if self.caps_at == "registration" and (total is None or total > self.max_rows_per_entity):
            raise PydanticCustomError(
                "contribution",
                'caps_at = "registration" needs max_total_rows_per_entity declared and at '
                "most max_rows_per_entity (each entity's first T rows are then at most C in "
                "any group)",
            )
        return self
