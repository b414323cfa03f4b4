"""The peer side of ``bench/dp_accuracy.py``: OpenDP SmartNoise SQL in its own virtualenv.

``smartnoise-sql`` 1.0.10 pins pandas < 3 and opendp < 0.15, so it runs in
``.venv-smartnoise`` (made here with ``python -m venv`` + pip when missing) through
``bench/smartnoise_runner.py``, JSON in and out.  Its metadata is made from the sandbox's
classification of the same table: same entity key (``private_id``), same clamping bounds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from dp_metrics import Answer, Query

from sandbox.core.classification import DatasetSpec, Level

__all__ = ["SMARTNOISE_PIN", "smartnoise_metadata", "smartnoise_python", "smartnoise_run"]

BENCH = Path(__file__).resolve().parent
SMARTNOISE_VENV = BENCH.parent / ".venv-smartnoise"
SMARTNOISE_PIN = "smartnoise-sql==1.0.10"


def smartnoise_python(install: bool) -> Path | None:
    """The peer's interpreter; made with ``python -m venv`` + pip when missing and asked."""
    python = SMARTNOISE_VENV / "bin" / "python"
    if python.exists():
        return python
    if not install:
        return None
    print(f"creating {SMARTNOISE_VENV} with {SMARTNOISE_PIN} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(SMARTNOISE_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", SMARTNOISE_PIN], check=True)
    return python


def _sn_type(duck: str) -> str:
    duck = duck.upper()
    if duck in ("BOOLEAN",):
        return "boolean"
    if duck.startswith(("DATE", "TIMESTAMP")):
        return "datetime"
    if any(
        duck.startswith(t) for t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "U")
    ):
        return "int"
    if duck.startswith(("DOUBLE", "FLOAT", "REAL", "DECIMAL")):
        return "float"
    return "string"


def smartnoise_metadata(
    spec: DatasetSpec, schema: dict[str, str], rows: int, max_ids: int
) -> dict[str, Any]:
    """SmartNoise's metadata from the classification: same bounds, same entity key."""
    table: dict[str, Any] = {
        "rows": rows,
        "row_privacy": False,
        "max_ids": max_ids,
        "sample_max_ids": True,
        "censor_dims": True,
        "clamp_columns": True,
    }
    for name, duck_type in schema.items():  # the table's own spelling of each column
        column = spec.column(name)
        if column.level >= Level.L4:
            continue
        entry: dict[str, Any] = {"type": _sn_type(duck_type)}
        if name.lower() == spec.entity_key.lower():
            entry["private_id"] = True
        elif column.bounds is not None and entry["type"] in ("int", "float"):
            entry["lower"], entry["upper"] = column.bounds
        table[name] = entry
    return {"Collection": {spec.domain: {spec.table: table}}}


def smartnoise_run(
    python: Path,
    csv: Path,
    metadata: dict[str, Any],
    queries: list[Query],
    *,
    epsilon: float,
    delta: float,
    repetitions: int,
) -> dict[str, tuple[list[Answer], dict[str, Any]]]:
    job = {
        "csv": str(csv),
        "metadata": metadata,
        "epsilon": epsilon,
        "delta": delta,
        "repetitions": repetitions,
        "queries": [{"id": q.id, "sql": q.sql} for q in queries],
    }
    proc = subprocess.run(
        [str(python), str(BENCH / "smartnoise_runner.py")],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"smartnoise_runner failed: {proc.stderr[-2000:]}")
    out = {}
    for entry in json.loads(proc.stdout):
        if entry["error"]:
            answers = [Answer(error=entry["error"])] * repetitions
        else:
            spent = entry["cost"][0]
            answers = [
                Answer(rows=tuple(map(tuple, rows)), epsilon=spent) for rows in entry["runs"]
            ]
        out[entry["id"]] = (answers, entry)
    return out
