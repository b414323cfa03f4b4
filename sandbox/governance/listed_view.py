"""What metadata shows of listed items (pure): the negative list and important data.

A prohibited column is shown by its name and that it is prohibited, nothing more (no
level, role, type, description, generalisation, join partners or quality figure); a
prohibited dataset by its id, domain, title and that it is prohibited.  Strictly limited
and important items carry their flag, so an operator knows before applying what needs
the admin's co-approval and which releases wait for a review.
"""

from __future__ import annotations

from typing import Any

from sandbox.core.data_controls import DatasetControls

__all__ = ["PROHIBITED_NOTE", "listed"]

PROHIBITED_NOTE = "on the negative list (prohibited): never granted or released"

#: What a prohibited dataset's entry keeps.
_KEPT = ("id", "domain", "title", "version", "registered_at", "frozen")


def listed(entry: dict[str, Any], controls: DatasetControls) -> dict[str, Any]:
    """``entry`` (a catalog or dataset view with ``columns``) as the lists allow it shown."""
    if controls.empty:
        return entry
    if controls.is_prohibited():
        kept = {k: entry[k] for k in _KEPT if k in entry}
        return {**kept, "columns": [], "negative_list": "prohibited", "note": PROHIBITED_NOTE}
    out = dict(entry)
    columns = entry.get("columns")
    if isinstance(columns, list):
        out["columns"] = [_column(c, c["name"], controls) for c in columns]
    elif isinstance(columns, dict):
        out["columns"] = {n: _column(c, n, controls) for n, c in columns.items()}
    if controls.is_limited():
        out["negative_list"] = "limited"
    if controls.is_important():
        out["important"] = True
    return out


def _column(shown: dict[str, Any], name: str, controls: DatasetControls) -> dict[str, Any]:
    if controls.is_prohibited(name):
        named = {"name": name} if "name" in shown else {}
        return {**named, "negative_list": "prohibited", "note": PROHIBITED_NOTE}
    out = dict(shown)
    if name.lower() in controls.limited:
        out["negative_list"] = "limited"
    if name.lower() in controls.important:
        out["important"] = True
    return out
