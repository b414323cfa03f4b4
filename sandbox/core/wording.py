"""Counts in messages: "1 row", "2 rows", never "1 rows"."""

from __future__ import annotations

__all__ = ["counted", "noun"]


def noun(count: int, singular: str, plural: str | None = None) -> str:
    """``singular`` for exactly one, else ``plural`` (by default ``singular`` + "s").

    >>> noun(1, "row"), noun(0, "row"), noun(2, "entry", "entries")
    ('row', 'rows', 'entries')
    """
    return singular if count == 1 else (plural or f"{singular}s")


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """The count and its noun: ``counted(1, "group")`` is ``"1 group"``.

    >>> counted(1, "group"), counted(5, "group"), counted(1, "entry", "entries")
    ('1 group', '5 groups', '1 entry')
    """
    return f"{count} {noun(count, singular, plural)}"
