"""Scoring for ``bench/dp_accuracy.py``: pure functions over answers and the true answer.

An answer is the rows a system released for one query (or the reason it gave none).
Rows are matched to the true answer on their group keys (the SELECT items without an
aggregate, by position); a released cell is scored by its relative error
``|released - true| / |true|`` (cells whose true value is 0 are counted, not scored).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from sandbox.core.errors import SandboxError
from sandbox.query.dialects import respell

__all__ = [
    "Answer",
    "Query",
    "Score",
    "key_positions",
    "matched_errors",
    "read_queries",
    "score",
    "spread",
    "summarise",
]


@dataclass(frozen=True)
class Query:
    id: str
    sql: str


def read_queries(path: Path) -> list[Query]:
    """JSON lines ``{"id": ..., "sql": ...}``; blank lines and ``#`` lines are skipped."""
    out = []
    for line in path.read_text("utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            item = json.loads(line)
            out.append(Query(item["id"], item["sql"]))
    return out


@dataclass(frozen=True)
class Answer:
    """What one system released for one query in one repetition."""

    rows: tuple[tuple[Any, ...], ...] = ()
    error: str | None = None
    epsilon: float | None = None  # what the system says it spent on this query

    @property
    def answered(self) -> bool:
        return self.error is None and len(self.rows) > 0


@dataclass(frozen=True)
class Score:
    answered: bool
    groups_true: int
    groups_released: int
    spurious: int  # released groups that are not in the true answer
    errors: tuple[float, ...] = field(default=())  # relative error of each scored cell
    zero_cells: int = 0  # released cells whose true value is 0 (not scored)
    #: The scored cells again, each as (group key, output position, relative error).
    cells: tuple[tuple[tuple[Any, ...], int, float], ...] = field(default=())

    @property
    def group_share(self) -> float:
        return self.groups_released / self.groups_true if self.groups_true else 0.0


def key_positions(sql: str) -> tuple[int, ...]:
    """Positions of the SELECT items that are group keys (no aggregate in them)."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(tree, exp.Select), "each bench query is one SELECT"
    respelled = tree.copy()
    try:  # another dialect's aggregate (STD(x)) is one in the DuckDB form it is read as
        respell(respelled)
    except SandboxError:
        respelled = tree
    if not isinstance(respelled, exp.Select) or len(respelled.expressions) != len(tree.expressions):
        respelled = tree
    items = respelled.expressions
    return tuple(i for i, item in enumerate(items) if not item.find(exp.AggFunc))


def _key(value: Any) -> Any:
    """Group keys compare across engines: 30 == 30.0 == '30'; dates as ISO text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return round(float(value), 6)
    try:
        return round(float(str(value)), 6)
    except ValueError:
        return str(value)[:10] if _looks_like_date(str(value)) else str(value)


def _looks_like_date(text: str) -> bool:
    return len(text) >= 10 and text[4] == "-" and text[7] == "-" and text[:4].isdigit()


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def score(answer: Answer, truth: Sequence[Sequence[Any]], keys: Sequence[int]) -> Score:
    """Score one answer against the true rows of the same query.

    An answer whose every value outside the keys is NULL (a share withheld) is not an
    answer.  A query with several true rows but no key among its outputs (``SELECT
    count(*) … GROUP BY x``) cannot be matched row to row: only whether it was answered
    is scored (no groups, no errors), on every system alike.
    """
    true_rows = {tuple(_key(row[i]) for i in keys): row for row in truth}
    values = [v for row in answer.rows for i, v in enumerate(row) if i not in keys]
    if not answer.answered or all(v is None for v in values):
        return Score(False, len(true_rows), 0, 0)
    if not keys and len(truth) > 1:
        return Score(True, len(truth), 0, 0)
    released = 0
    spurious = 0
    errors: list[float] = []
    cells: list[tuple[tuple[Any, ...], int, float]] = []
    zeros = 0
    for row in answer.rows:
        key = tuple(_key(row[i]) for i in keys)
        true_row = true_rows.get(key)
        if true_row is None:
            spurious += 1
            continue
        released += 1
        for i, value in enumerate(row):
            if i in keys or i >= len(true_row):
                continue
            noisy, true = _number(value), _number(true_row[i])
            if noisy is None or true is None:
                continue
            if true == 0:
                zeros += 1
                continue
            errors.append(abs(noisy - true) / abs(true))
            cells.append((key, i, errors[-1]))
    return Score(True, len(true_rows), released, spurious, tuple(errors), zeros, tuple(cells))


def matched_errors(per_system: dict[str, list[Score]]) -> dict[str, list[float]]:
    """Each system's errors on the cells every system released (in any repetition).

    Systems that release different groups are otherwise compared on different cells: one
    that releases only the largest groups of a query scores its easiest cells.  Here
    each system's errors (all repetitions) are kept only for the (group, output) cells
    that every system released at least once: the same cells on every side.
    """
    released = [
        {(key, i) for score in scores for key, i, _ in score.cells}
        for scores in per_system.values()
    ]
    common = set.intersection(*released) if released else set()
    return {
        name: [e for score in scores for key, i, e in score.cells if (key, i) in common]
        for name, scores in per_system.items()
    }


def _median(values: Iterable[float]) -> float | None:
    data = list(values)
    return statistics.median(data) if data else None


def summarise(scores: dict[str, list[Score]], grouped: set[str]) -> dict[str, float | None]:
    """One system's headline figures over queries (each a list of repetitions).

    ``answered``: share of (query, repetition) with a non-empty result; ``groups_*``:
    per grouped query the mean share of its true groups released over repetitions,
    then the median and mean over grouped queries; ``error_cells``: median relative
    error over every scored cell of every query and repetition; ``error_queries``: the
    median over queries of each query's median cell error (answered queries only).
    """
    runs = [s for per_query in scores.values() for s in per_query]
    shares = [
        statistics.fmean(s.group_share for s in per_query)
        for qid, per_query in scores.items()
        if qid in grouped and per_query
    ]
    per_query_error = [
        m
        for per_query in scores.values()
        if (m := _median(e for s in per_query for e in s.errors)) is not None
    ]
    return {
        "answered": statistics.fmean(s.answered for s in runs) if runs else None,
        "groups_median": _median(shares),
        "groups_mean": statistics.fmean(shares) if shares else None,
        "error_cells": _median(e for s in runs for e in s.errors),
        "error_queries": _median(per_query_error),
        "spurious": float(sum(s.spurious for s in runs)),
    }


def spread(
    scores: dict[str, list[Score]], grouped: set[str]
) -> dict[str, tuple[float, float, float] | None]:
    """Each headline figure computed on each repetition alone: (min, median, max) over them."""
    repetitions = max((len(per_query) for per_query in scores.values()), default=0)
    by_rep = [
        summarise({qid: per_query[r : r + 1] for qid, per_query in scores.items()}, grouped)
        for r in range(repetitions)
    ]
    out: dict[str, tuple[float, float, float] | None] = {}
    for name in ("answered", "groups_median", "groups_mean", "error_cells"):
        values = [f[name] for f in by_rep if f[name] is not None]
        out[name] = (min(values), statistics.median(values), max(values)) if values else None
    return out
