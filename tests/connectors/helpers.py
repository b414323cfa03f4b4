"""A small dataset used by connector tests, written in each supported format."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from sandbox.core.classification import DatasetSpec, parse_classification

CLASSIFICATION = """
[dataset]
id = "health.visits"
title = "Outpatient visits"
entity_key = "person_id"

[columns.person_id]
level = "L3"
role = "identifier"

[columns.district]
level = "L1"
role = "dimension"

[columns.amount]
level = "L2"
role = "measure"
bounds = [0, 1000]
"""

SECRET_IDS = [f"P-SECRET-{i:04d}" for i in range(40)]


def visits_table(rows: int = 40) -> pa.Table:
    return pa.table(
        {
            "person_id": SECRET_IDS[:rows],
            "district": [f"D{(i % 4) + 1:02d}" for i in range(rows)],
            "amount": [float(i * 10) for i in range(rows)],
        }
    )


def visits_spec() -> DatasetSpec:
    return parse_classification(CLASSIFICATION, source_name="visits.toml")


def write(table: pa.Table, path: Path, fmt: str) -> Path:
    if fmt == "csv":
        pacsv.write_csv(table, path)
    elif fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "json":
        import json

        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    elif fmt == "arrow":
        with ipc.new_file(path, table.schema) as writer:
            writer.write_table(table)
    elif fmt == "arrows":
        with ipc.new_stream(path, table.schema) as writer:
            writer.write_table(table)
    return path
