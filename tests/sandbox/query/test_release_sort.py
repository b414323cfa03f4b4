"""release.py orders released rows by their group keys, interval keys included."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from sandbox.query.release import _sorted


def _intervals(values: list[tuple[int, int, int] | None]) -> pa.Array:
    return pa.array(values, type=pa.month_day_nano_interval())


def test_an_interval_key_sorts_by_months_days_then_nanoseconds() -> None:
    keys = _intervals([(0, 2, 0), (1, 0, 0), None, (0, 1, 5), (0, 1, 3)])
    table = pa.table({"g": keys, "n": [1, 2, 3, 4, 5]})
    out = _sorted(table, ["g"])
    assert out.column("n").to_pylist() == [5, 4, 1, 2, 3]  # NULL last


def test_an_interval_key_after_a_plain_key() -> None:
    table = pa.table(
        {
            "d": ["b", "a", "a"],
            "g": _intervals([(0, 0, 1), (0, 3, 0), (0, 2, 0)]),
            "n": [1, 2, 3],
        }
    )
    assert _sorted(table, ["d", "g"]).column("n").to_pylist() == [3, 2, 1]


def test_plain_keys_sort_as_pyarrow_does() -> None:
    table = pa.table({"d": ["b", None, "a", "b"], "x": [2, 1, 3, 1]})
    expected = table.take(
        pc.sort_indices(table, sort_keys=[("d", "ascending"), ("x", "ascending")])
    )
    assert _sorted(table, ["d", "x"]).equals(expected)
    assert _sorted(table, []).equals(table)
