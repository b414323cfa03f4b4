"""Grant-time rules of the negative list and important data (pure; ``admin`` does the I/O).

- ``negative.prohibited``: a grant on a prohibited dataset, or naming a prohibited column
  (in ``columns`` or ``groupable``), is never issued.  A grant of every column up to its
  ceiling (no column list) is issued: a prohibited column is not among what it gives
  (the guard refuses every query reading it).
- ``negative.limited``: a grant on a strictly limited dataset, or naming a strictly
  limited column, needs the admin's approval besides the owning bureau's (a grant
  application the admin co-approved); without a column list it does not reach a
  limited column.
- ``important.dp_only``: a ``reviewed`` grant (exact values) on important data, the
  dataset or a column within the grant's reach, is never issued.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sandbox.core.classification import DatasetSpec, Level
from sandbox.core.data_controls import WHOLE, DatasetControls, item_name
from sandbox.core.errors import Forbidden

from .grant_terms import GrantTerms, ReleaseMode

__all__ = ["CoApproval", "check_grant_controls", "limited_items"]


@dataclass(frozen=True)
class CoApproval:
    """The admin's approval of a grant application's strictly limited items."""

    admin: str
    application: str
    items: frozenset[str]
    """Lower-case column names, or :data:`WHOLE` for the dataset."""


def limited_items(terms: GrantTerms, controls: DatasetControls) -> frozenset[str]:
    """The strictly limited items the terms reach (:data:`WHOLE`: the dataset)."""
    named = set(terms.columns or ()) | set(terms.groupable)
    out = {c.lower() for c in named if c.lower() in controls.limited}
    if WHOLE in controls.limited:
        out.add(WHOLE)
    return frozenset(out)


def _reach(terms: GrantTerms, spec: DatasetSpec) -> Iterable[str]:
    if terms.columns is not None:
        return {c.lower() for c in terms.columns}
    return {
        c.name.lower()
        for c in spec.columns
        if c.level is not Level.L4 and c.level <= terms.max_level
    }


def check_grant_controls(
    terms: GrantTerms,
    spec: DatasetSpec,
    controls: DatasetControls,
    *,
    co_approved: frozenset[str] = frozenset(),
    limited: bool = True,
    important: bool = True,
) -> None:
    """Refuse terms the lists forbid; ``co_approved``: the limited items the admin approved.

    A narrowing checks prohibited items only (``limited`` and ``important`` False: it
    never widens, and a grant issued before an item was listed must stay narrowable); a
    release-mode choice checks prohibited and important items.
    """
    if controls.is_prohibited():
        raise Forbidden(
            f"{spec.id} is on the negative list (prohibited): it is never granted",
            rule="negative.prohibited",
        )
    named = sorted({c.lower() for c in (*(terms.columns or ()), *terms.groupable)})
    banned = [c for c in named if controls.is_prohibited(c)]
    if banned:
        raise Forbidden(
            f"{item_name(spec.id, banned[0])} is on the negative list (prohibited): it is "
            "never granted; leave it out of the columns",
            rule="negative.prohibited",
        )
    missing = sorted(limited_items(terms, controls) - co_approved)
    if limited and missing:
        raise Forbidden(
            f"{item_name(spec.id, missing[0])} is strictly limited (negative list): a grant of "
            "it needs the admin's approval besides the owning bureau's (a grant application "
            "the admin co-approves)",
            rule="negative.limited",
        )
    if important and terms.release_mode is ReleaseMode.REVIEWED:
        reached = [c for c in sorted(_reach(terms, spec)) if controls.is_important(c)]
        if controls.is_important() or reached:
            what = spec.id if controls.is_important() else item_name(spec.id, reached[0])
            raise Forbidden(
                f"{what} is important data (重要数据): grants on it release noised values "
                "only (release_mode dp), every release reviewed by the bureau",
                rule="important.dp_only",
            )
