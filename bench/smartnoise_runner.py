"""Run aggregate queries through OpenDP SmartNoise SQL: JSON in (stdin), JSON out (stdout).

Runs in its own virtualenv (``.venv-smartnoise``, made by ``bench/dp_accuracy.py`` or
``make bench-venv-smartnoise``): ``smartnoise-sql`` 1.0.10 pins pandas < 3 and
opendp < 0.15, which the sandbox's own environment does not.  Imports nothing from
this project.

Input::

    {"csv": "/path/table.csv", "metadata": {...SmartNoise metadata dict...},
     "epsilon": 1.0, "delta": 1e-6, "repetitions": 10,
     "queries": [{"id": "q01", "sql": "SELECT ..."}, ...]}

``epsilon`` and ``delta`` are the total privacy cost *per query*.  SmartNoise's
``Privacy(epsilon=e)`` is the ε of each statistic it noises (a query with a sum and a
count spends about 2e), so for each query the per-statistic ``e`` is found by bisection
such that ``reader.get_privacy_cost(sql)``, SmartNoise's own odometer, reports exactly
``epsilon`` (and at most ``delta``) for the whole query.  Output, one object per query::

    {"id": "q01", "columns": [...], "runs": [[[...row...], ...], ...],
     "error": null, "epsilon_per_statistic": 0.5, "cost": [1.0, 1e-6]}
"""

from __future__ import annotations

import datetime
import json
import sys
import warnings
from typing import Any

import pandas as pd
import snsql
from snsql import Privacy


def _reader(df: pd.DataFrame, metadata: dict[str, Any], eps: float, delta: float) -> Any:
    return snsql.from_df(df, privacy=Privacy(epsilon=eps, delta=delta), metadata=metadata)


def _cost(df: pd.DataFrame, metadata: dict[str, Any], sql: str, eps: float, delta: float):
    eps_cost, delta_cost = _reader(df, metadata, eps, delta).get_privacy_cost(sql)
    return float(eps_cost), float(delta_cost)


def calibrate(
    df: pd.DataFrame, metadata: dict[str, Any], sql: str, epsilon: float, delta: float
) -> tuple[float, float, tuple[float, float]]:
    """Per-statistic (ε, δ) whose total for ``sql`` is ``epsilon`` (and at most ``delta``).

    SmartNoise composes a query's statistics with the better of basic and advanced
    composition, plus a tolerance of δ/2; for a handful of statistics that is basic
    composition (linear in ε), so one rescale lands on the target; a few halvings of
    the step guard the rest, and the final cost is the odometer's, reported as is.
    """
    eps_cost, delta_cost = _cost(df, metadata, sql, epsilon, delta)
    eps = epsilon * epsilon / eps_cost if eps_cost > 0 else epsilon
    d = delta * delta / delta_cost if delta_cost > 0 else delta
    cost = _cost(df, metadata, sql, eps, d)
    for _ in range(30):
        if cost[0] <= epsilon * (1 + 1e-9) and cost[1] <= delta * (1 + 1e-9):
            break
        if cost[0] > epsilon * (1 + 1e-9):
            eps *= epsilon / cost[0] * 0.9999
        if cost[1] > delta * (1 + 1e-9):
            d *= delta / cost[1] * 0.9999
        cost = _cost(df, metadata, sql, eps, d)
    return eps, d, cost


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, datetime.date):  # a date or timestamp key: ISO text (dp_metrics._key)
        return value.isoformat()
    return value


def run(job: dict[str, Any]) -> list[dict[str, Any]]:
    df = pd.read_csv(job["csv"])
    metadata = job["metadata"]
    out = []
    for query in job["queries"]:
        sql = query["sql"]
        entry: dict[str, Any] = {"id": query["id"], "columns": [], "runs": [], "error": None}
        try:
            eps, delta, cost = calibrate(df, metadata, sql, job["epsilon"], job["delta"])
            entry.update(epsilon_per_statistic=eps, delta_per_query=delta, cost=list(cost))
            for _ in range(job["repetitions"]):
                reader = _reader(df, metadata, eps, delta)
                result = reader.execute(sql)
                entry["columns"] = list(result[0])
                entry["runs"].append([[_plain(v) for v in row] for row in result[1:]])
        except Exception as exc:  # a refusal of the peer is a result
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        out.append(entry)
    return out


def main() -> None:
    warnings.simplefilter("ignore")
    job = json.load(sys.stdin)
    json.dump(run(job), sys.stdout)


if __name__ == "__main__":
    main()
