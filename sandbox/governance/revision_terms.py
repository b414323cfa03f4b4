"""Whether a change of a registered dataset's classification only tightens it.

A revision that tightens (fail safe) may take effect at once; any other change (a
loosening, or one this module does not understand) goes through the registration
procedure with a publicity period (docs/governance.md, "Revisions").  Closed by
construction: every field is compared, and a change not listed here as tightening is a
loosening.  Pure: the caller passes the classification in force, the new one and the
platform's default contribution bounds.

Tightening, field by field (the opposite of each is a loosening):

- a column removed (a column added loosens);
- a column's level raised;
- a column's role made ``identifier`` (any other role change loosens);
- a generalisation added or made coarser (wider bands, fewer prefix characters, a
  coarser truncation unit); removed or made finer loosens, and so does declaring it
  ``exact_only`` (no longer binding under a privacy budget);
- measure bounds narrowed (inside the old ones) or removed; widened or added loosens;
- ``values_per_entity`` lowered or added; raised or removed loosens;
- join partners removed; added loosens;
- the contribution bounds C and G lowered (an undeclared section counts as the
  platform's default); raised loosens;
- the declared value domain, the entity key and ``one_row_per_entity`` unchanged (any
  change of them loosens: the guard and the quality report read them).

Title, descriptions and update frequency are words shown in the catalog: not a loosening.
A column's type is not compared: it is the data's, checked against the loaded table when
the revision takes effect (the catalog's copy carries the type the schema filled in).
"""

from __future__ import annotations

from sandbox.core.classification import ColumnSpec, Contribution, DatasetSpec, Generalization
from sandbox.core.classification_file import Role

__all__ = ["TRUNCATE_ORDER", "is_tightening", "loosenings"]

TRUNCATE_ORDER = ("minute", "hour", "day", "month", "quarter", "year")
"""Truncation units from finest to coarsest, each nested in the next; another unit (a
week straddles months) compares equal only to itself."""


def is_tightening(old: DatasetSpec, new: DatasetSpec, default: Contribution) -> bool:
    """True when ``new`` loosens nothing of ``old`` (an identical file is tightening)."""
    return not loosenings(old, new, default)


def loosenings(old: DatasetSpec, new: DatasetSpec, default: Contribution) -> list[str]:
    """Each loosening change of ``new`` against ``old``, in words (names, never data)."""
    out: list[str] = []
    if old.id != new.id:
        out.append(f"the dataset changed from {old.id} to {new.id}")
    if old.entity_key.lower() != new.entity_key.lower():
        out.append("the entity key changed")
    if old.one_row_per_entity != new.one_row_per_entity:
        out.append("one_row_per_entity changed")
    if old.entity_key_generated != new.entity_key_generated:
        out.append("entity_key_generated changed")
    before, after = old.contribution_or(default), new.contribution_or(default)
    if after.max_rows_per_entity > before.max_rows_per_entity:
        out.append("contribution: max_rows_per_entity (C) raised")
    if after.max_groups_per_entity > before.max_groups_per_entity:
        out.append("contribution: max_groups_per_entity (G) raised")
    olds = {c.name.lower(): c for c in old.columns}
    for col in new.columns:
        previous = olds.get(col.name.lower())
        if previous is None:
            out.append(f"column {col.name} added")
        else:
            out.extend(f"column {col.name}: {what}" for what in _column(previous, col))
    return out


def _column(old: ColumnSpec, new: ColumnSpec) -> list[str]:
    out: list[str] = []
    if new.level < old.level:
        out.append("level lowered")
    if new.role != old.role and new.role is not Role.IDENTIFIER:
        out.append(f"role changed from {old.role.value} to {new.role.value}")
    # An identifier is never grouped: its generalisation no longer matters.
    grouped = new.role is not Role.IDENTIFIER or old.role is Role.IDENTIFIER
    if grouped and not _coarser_or_same(old.generalize, new.generalize):
        out.append("generalisation removed or made finer")
    if not _within(old.bounds, new.bounds):
        out.append("bounds widened or added")
    if not _fewer(old.values_per_entity, new.values_per_entity):
        out.append("values_per_entity raised or removed")
    if not {j.lower() for j in new.joinable} <= {j.lower() for j in old.joinable}:
        out.append("join partners added")
    if new.values != old.values:
        out.append("declared values changed")
    return out


def _coarser_or_same(old: Generalization | None, new: Generalization | None) -> bool:
    if old is None:
        return True  # none before: anything added coarsens
    if new is None or new.kind != old.kind:
        return False
    if new.exact_only and not old.exact_only:
        return False  # no longer binding under a privacy budget: finer there
    if old.kind == "band":
        return new.width is not None and old.width is not None and new.width >= old.width
    if old.kind == "prefix":
        return new.length is not None and old.length is not None and new.length <= old.length
    if old.unit not in TRUNCATE_ORDER or new.unit not in TRUNCATE_ORDER:
        return old.unit == new.unit
    return TRUNCATE_ORDER.index(new.unit) >= TRUNCATE_ORDER.index(old.unit)


def _within(old: tuple[float, float] | None, new: tuple[float, float] | None) -> bool:
    if new is None:
        return True  # no measure use any more
    if old is None:
        return False
    return old[0] <= new[0] and new[1] <= old[1]


def _fewer(old: int | None, new: int | None) -> bool:
    if new is None:
        return old is None
    return old is None or new <= old
