"""End to end on Spark: `sandbox dataset register --engine spark`, then `sandbox query`
answered from the warehouse (the installed command; Spark `local[2]` in its process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from sandbox.core.settings import Settings
from sandbox.enclave.encrypted import connect_home
from sandbox.enclave.warehouse import dataset_dir
from tests.conftest import build_deployment
from tests.sandbox.engines.spark_setup import require_spark

ROOT = Path(__file__).resolve().parents[3]
SANDBOX = Path(sys.executable).parent / "sandbox"
CLAIMS = "health.claims"
SQL = "SELECT district, count(DISTINCT person_id) AS persons FROM health.claims GROUP BY 1"


def sandbox(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    proc = subprocess.run(
        [str(SANDBOX), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env | {"SANDBOX_SPARK_MASTER": "local[2]"},
    )
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def released(home: Path, token: str) -> dict[str, int]:
    out = sandbox(home, "query", "--token", token, "--format", "json", SQL)
    return {row["district"]: row["persons"] for row in json.loads(out.stdout)["rows"]}


def enclave_tables(home: Path) -> set[str]:
    con = connect_home(Settings(home=home))
    try:
        found = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    finally:
        con.close()
    return {f"{schema}.{table}" for schema, table in found}


def test_a_dataset_registered_for_spark_answers_sandbox_query(tmp_path: Path) -> None:
    require_spark()
    home = tmp_path / "home"
    platform, tokens = build_deployment(home)  # the demo at scale 0.01, accounts and grants
    platform.close()
    bureau, operator = tokens["bureau-health"], tokens["op-bank"]
    grants = json.loads(sandbox(home, "grant", "list", "--json", "--token", bureau).stdout)
    (grant,) = [g for g in grants if g["operator"] == "op-bank" and g["dataset"] == CLAIMS]
    sandbox(
        home, "grant", "release-mode", grant["id"], "dp", "--epsilon-total", "100",
        "--reason", "tests: noised answers", "--token", bureau,
    )  # fmt: skip
    on_duckdb = released(home, operator)

    # The same rows, as a bureau's Parquet file, registered for Spark.
    con = connect_home(Settings(home=home))
    try:
        rows = con.sql(f"SELECT * FROM {CLAIMS}").to_arrow_table()
    finally:
        con.close()
    source = tmp_path / "claims.parquet"
    pq.write_table(rows, source)
    toml = ROOT / "sandbox" / "enclave" / "demo" / f"{CLAIMS}.toml"
    out = sandbox(
        home, "dataset", "register", str(toml), "--source", str(source), "--engine", "spark"
    )
    assert f"replaced {CLAIMS} v2: {rows.num_rows} rows, in the spark warehouse" in out.stdout
    assert pq.read_table(dataset_dir(home / "warehouse", CLAIMS, 2)).num_rows == rows.num_rows
    assert CLAIMS not in enclave_tables(home)  # only the warehouse can answer now

    on_spark = released(home, operator)
    # Both answers are noised (ε 1 each: a few persons' worth); the same districts (a
    # small one may fall under the noisy threshold on either side).
    common = set(on_spark) & set(on_duckdb)
    assert len(common) >= 10 and all(v >= 10 for v in on_spark.values())
    assert all(abs(on_spark[d] - on_duckdb[d]) <= 60 for d in common)
    listed = sandbox(home, "audit", "entries", "--action", "dataset.query").stdout
    entries = [json.loads(line) for line in listed.splitlines()]
    assert entries[-1]["decision"] == "allow" and entries[-1]["dataset"] == CLAIMS
