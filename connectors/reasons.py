"""Parse errors described without quoting the input (also used by the parsing child)."""

from __future__ import annotations

import re

__all__ = ["safe_reason"]

_SAFE_PHRASES = (
    re.compile(r"Expected \d+ columns?, got \d+"),
    re.compile(r"Row #\d+"),
    re.compile(r"CSV column #\d+"),
    re.compile(r"Empty CSV file"),
    re.compile(r"straddling object straddles two block boundaries"),
    re.compile(r"JSON parse error: [A-Za-z ]+"),
    re.compile(r"Parquet magic bytes not found"),
    re.compile(r"Not an Arrow file"),
    re.compile(r"Invalid IPC stream"),
    re.compile(r"conversion error to \w+"),
)


def safe_reason(exc: BaseException) -> str:
    """Describe a parse error without quoting any of the input (allowlisted phrases only)."""
    text = str(exc)
    found = [m.group(0) for pattern in _SAFE_PHRASES if (m := pattern.search(text))]
    if found:
        return "; ".join(found)
    return f"the input could not be parsed ({type(exc).__name__})"
