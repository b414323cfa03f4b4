"""A refusal of a query over per-entity tables, in the analyst's words.

The outer query over a per-entity table is checked as a query over a dataset of its own
(``entity_table.lift``), named ``<dataset>_per_<key>``: a name the analyst never wrote.
A refusal of that check would say ``health.claims_per_person_id.s in max()``; the
analyst wrote ``t.s`` (the derived table's alias, or the CTE's name) or ``s`` (a derived
table without an alias). A ``HAVING`` of the table is checked as a filter on its rows,
so a refusal of it would say "(in WHERE)" and name a hidden column after its SQL
(``min(age)``); it says "(in the HAVING of t)" instead.

Pure text: the names replaced are the platform's own (``lift`` picks a name no dataset
has), never a data value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sandbox.core.errors import QueryRefused

__all__ = ["TableName", "analyst_words", "in_analyst_words"]


@dataclass(frozen=True)
class TableName:
    """How the analyst names one per-entity table.

    ``virtual``: the dataset id the checks use; ``label``: the derived table's alias or
    the CTE's name, None for a derived table without one; ``entity``: its key as the
    analyst grouped by it; ``hidden``: the names of the columns its HAVING compares
    that its SELECT does not show (named after their SQL)."""

    virtual: str
    label: str | None
    entity: str
    hidden: frozenset[str] = frozenset()

    @property
    def spoken(self) -> str:
        if self.label is not None:
            return self.label
        return f"the derived table grouped by {self.entity}"


def in_analyst_words(refusal: QueryRefused, tables: Sequence[TableName]) -> QueryRefused:
    """``refusal`` with each per-entity table named as the analyst names it (the same
    rule; the same object where nothing is to be replaced)."""
    message = refusal.message
    for table in sorted(tables, key=lambda t: -len(t.virtual)):  # a_per_k_2 before a_per_k
        for hidden in sorted(table.hidden, key=len, reverse=True):
            written = f"{table.virtual}.{hidden}"
            if written in message:
                message = message.replace(written, hidden)
                message = message.replace("(in WHERE)", f"(in the HAVING of {table.spoken})")
        qualifier = "" if table.label is None else f"{table.label}."
        virtual = re.escape(table.virtual)
        message = re.sub(rf"{virtual}\.", qualifier.replace("\\", "\\\\"), message)
        message = re.sub(rf"{virtual}(?!\w)", table.spoken.replace("\\", "\\\\"), message)
    if message == refusal.message:
        return refusal
    return QueryRefused(message, rule=refusal.rule)


@contextmanager
def analyst_words(tables: Sequence[TableName]) -> Iterator[None]:
    """Re-raise a refusal of the block in the analyst's words (:func:`in_analyst_words`)."""
    try:
        yield
    except QueryRefused as refused:
        worded = in_analyst_words(refused, tables)
        if worded is refused:
            raise
        raise worded from refused
