"""How many groups one entity can fall in, from what the data's owner declared of its keys.

A query's ``G`` (groups one entity counts in) defaults to the dataset's
``max_groups_per_entity``.  Its owner may also declare of a column that one entity has at
most ``values_per_entity`` distinct values of it (a person's sex: 1, district of residence:
1).  A key that is any function of such columns then takes at most the product of their
declared values per entity, and the query's groups at most the product over its keys, so
the query runs with ``G_q = min(G, that product)``.

Where the dataset declares no ``[contribution]``, a column without a declared
``values_per_entity`` takes the one drawn from the data with DP
(``DatasetAccess.drawn_groups``, :mod:`sandbox.query.default_bounds`), whose ``G`` is the
largest drawn: a count of students by department keeps the departments a student has
(InstEval: 47% low at the default ``G = 3``), and one by a student's semester runs at
``G_q = 1``.

Sound whatever the declaration says: the stats query keeps at most ``G_q`` groups per
entity (``rewrite._group_cap``), so every sensitivity computed from ``G_q`` holds.  A false
declaration (or a drawn quantile below an entity's values) only drops the groups beyond it
(bias, never a leak).  The bound is taken only where it is plain: one dataset, and every
key reads at least one column, each of it declared or drawn; otherwise ``None`` and the
dataset's ``G`` applies.
"""

from __future__ import annotations

from collections.abc import Mapping

from sandbox.core.access import DatasetAccess
from sandbox.core.errors import QueryRefused
from sandbox.query.guard import Checked

__all__ = ["declared_groups"]


def declared_groups(checked: Checked, access: Mapping[str, DatasetAccess]) -> int | None:
    """The most groups one entity's rows can form by ``checked``'s keys, as declared; or None."""
    if not checked.keys or len(set(checked.parsed.datasets)) != 1:
        return None
    product = 1
    for key in checked.keys:
        try:
            bases = checked.lineage.of_expression(key, checked.final_scope).bases
        except QueryRefused:
            return None
        if not bases:
            return None
        for base in bases:
            grant = access.get(base.dataset)
            if grant is None or base.dataset != checked.primary:
                return None
            try:
                declared = grant.spec.column(base.column).values_per_entity
            except KeyError:
                return None
            if declared is None:
                declared = dict(grant.drawn_groups).get(base.column.lower())
            if declared is None:
                return None
            product *= declared
    return product
