"""The contribution bounds a query runs under: the data's, narrowed by its grants.

C (rows of one entity counted in one group) and G (groups one entity counts in) are
declared by each dataset's owner in its classification (``[contribution]``,
``docs/classification.md``); a dataset without the section gets the platform's
default (the ``dp_max_rows_per_entity`` and ``dp_max_groups_per_entity`` settings).
A grant may only narrow them.  A query over several datasets (a join, which with a
budget is an inner join on the entity keys: one entity value per joined row) runs
under the strictest of all: the least C and the least G of every dataset and every
grant in it.  Any C and G are private (the rewrite enforces them and every
sensitivity scales with them); lower ones trade dropped rows for less noise.

T (rows of one entity over all of a query's groups together) is declared only by the
data's owner, optionally; a query runs under the least T any of its datasets declares
(a bound the rewrite enforces on the rows it aggregates holds whichever dataset's it
is), and under none if none declares one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from sandbox.core.classification import Contribution, DatasetSpec

__all__ = ["Bounds", "NarrowingGrant", "effective_contribution"]


class Bounds(Protocol):
    """Anything with C and G (``Contribution``, ``rewrite.ContributionBounds``)."""

    @property
    def max_rows_per_entity(self) -> int: ...

    @property
    def max_groups_per_entity(self) -> int: ...


class NarrowingGrant(Protocol):
    """What of a grant narrows the bounds (``policies.Grant``)."""

    @property
    def dataset(self) -> str: ...

    @property
    def max_rows_per_entity(self) -> int | None: ...

    @property
    def max_groups_per_entity(self) -> int | None: ...


def effective_contribution(
    grants: Iterable[NarrowingGrant], specs: Mapping[str, DatasetSpec], default: Bounds
) -> Contribution:
    """The least C and least G over the datasets in ``specs`` and the ``grants``; the least T.

    ``default``: the platform's bounds, for a dataset that declares none.  A grant on a
    dataset not in ``specs`` still narrows (it is part of the query's authorization).
    """
    fallback = Contribution(default.max_rows_per_entity, default.max_groups_per_entity)
    declared = [spec.contribution_or(fallback) for spec in specs.values()] or [fallback]
    totals = [d.max_total_rows_per_entity for d in declared]
    bounds = Contribution(
        min(d.max_rows_per_entity for d in declared),
        min(d.max_groups_per_entity for d in declared),
        min((t for t in totals if t is not None), default=None),
    )
    for grant in grants:
        bounds = bounds.narrowed(grant.max_rows_per_entity, grant.max_groups_per_entity)
    return bounds
