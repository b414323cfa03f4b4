"""A bar chart of a released result, drawn on the server as SVG geometry (pure).

The first text column labels the bars, the first numeric column sizes them; the
template draws the rectangles and labels (autoescaped), so no script runs and
nothing leaves the page.  Only released rows reach here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Bar", "Chart", "bar_chart"]

MAX_BARS = 30
WIDTH = 640
BAR_HEIGHT = 22
GAP = 6
LABEL_WIDTH = 200


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    shown: str
    y: int
    width: int


@dataclass(frozen=True)
class Chart:
    value_column: str
    label_column: str | None
    bars: tuple[Bar, ...]
    height: int
    width: int = WIDTH
    label_width: int = LABEL_WIDTH
    bar_height: int = BAR_HEIGHT
    truncated: bool = False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def bar_chart(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Chart | None:
    """The chart of ``rows``, or None when there is no numeric column or no row."""
    if not rows:
        return None
    numeric = [c for c in columns if all(_number(r.get(c)) is not None for r in rows)]
    if not numeric:
        return None
    value_column = (
        numeric[-1] if len(numeric) > 1 and numeric[0] in _labels(columns) else numeric[0]
    )
    text = [c for c in columns if c not in numeric]
    label_column = text[0] if text else (numeric[0] if value_column != numeric[0] else None)
    shown_rows = list(rows[:MAX_BARS])
    values = [_number(r.get(value_column)) or 0.0 for r in shown_rows]
    top = max((abs(v) for v in values), default=0.0) or 1.0
    span = WIDTH - LABEL_WIDTH - 70
    bars = []
    for i, (row, value) in enumerate(zip(shown_rows, values, strict=True)):
        label = str(row.get(label_column)) if label_column is not None else f"#{i + 1}"
        bars.append(
            Bar(
                label=label[:32],
                value=value,
                shown=f"{value:,.4g}" if not value.is_integer() else f"{int(value):,}",
                y=i * (BAR_HEIGHT + GAP),
                width=max(1, round(abs(value) / top * span)),
            )
        )
    height = len(bars) * (BAR_HEIGHT + GAP)
    return Chart(
        value_column=value_column,
        label_column=label_column,
        bars=tuple(bars),
        height=height,
        truncated=len(rows) > MAX_BARS,
    )


def _labels(columns: Sequence[str]) -> set[str]:
    """Columns that read as labels even when numeric (an age, a year, a code)."""
    hints = ("age", "year", "code", "id", "band", "month", "day", "time", "hour")
    return {c for c in columns if any(h in c.lower() for h in hints)}
