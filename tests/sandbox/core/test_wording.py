"""Counts in messages agree with their number."""

from __future__ import annotations

import doctest

import pytest

import sandbox.core.wording as wording
from sandbox.core.wording import counted, noun


@pytest.mark.parametrize(
    ("count", "expected"), [(0, "0 rows"), (1, "1 row"), (2, "2 rows"), (1_000_000, "1000000 rows")]
)
def test_counted(count: int, expected: str) -> None:
    assert counted(count, "row") == expected


def test_irregular_plurals() -> None:
    assert counted(1, "entry", "entries") == "1 entry"
    assert counted(3, "entry", "entries") == "3 entries"
    assert noun(1, "signed tree head") == "signed tree head"


def test_doctests_run() -> None:
    assert doctest.testmod(wording).failed == 0
