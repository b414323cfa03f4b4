"""`sandbox dataset register --engine spark` as people run it: the installed command on a
fresh home, the Parquet warehouse and the enclave file read back from outside."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sandbox.core.settings import Settings
from sandbox.enclave.encrypted import connect_home
from sandbox.enclave.warehouse import dataset_dir

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
SANDBOX = Path(sys.executable).parent / "sandbox"
DATASET = "health.visits"


def sandbox(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(SANDBOX), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def register(home: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sandbox(
        home,
        "dataset",
        "register",
        str(EXAMPLES / "visits.toml"),
        "--source",
        str(EXAMPLES / "visits.csv"),
        *extra,
        check=check,
    )


def source_rows() -> list[tuple[str, ...]]:
    with open(EXAMPLES / "visits.csv", newline="") as handle:
        return sorted(tuple(row) for row in list(csv.reader(handle))[1:])


def warehouse_rows(directory: Path) -> list[tuple[str, ...]]:
    table = pq.read_table(directory)
    return sorted(tuple(str(v) for v in row.values()) for row in table.to_pylist())


def enclave_tables(home: Path) -> set[str]:
    con = connect_home(Settings(home=home))
    try:
        return {
            f"{schema}.{name}"
            for schema, name in con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables()"
            ).fetchall()
        }
    finally:
        con.close()


def shown(home: Path) -> dict[str, Any]:
    return json.loads(sandbox(home, "dataset", "show", DATASET, "--json").stdout)  # type: ignore[no-any-return]


def table_dir(home: Path) -> Path:
    return dataset_dir(home / "warehouse", DATASET, 1).parent


def listing(home: Path) -> list[str]:
    """Every name under the dataset's warehouse directory (version and staged ones)."""
    where = table_dir(home)
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("warehouse") / "home"
    sandbox(home, "init")
    return home


def test_register_with_engine_spark_writes_the_warehouse_not_the_enclave(home: Path) -> None:
    out = register(home, "--engine", "spark").stdout
    assert f"registered {DATASET} v1: 2000 rows, in the spark warehouse" in out
    v1 = dataset_dir(home / "warehouse", DATASET, 1)
    parts = sorted(v1.glob("part-*.parquet"))
    assert parts and warehouse_rows(v1) == source_rows()
    assert DATASET not in enclave_tables(home)
    # Directories 0700 from the warehouse down, files 0600.
    for directory in (home / "warehouse", v1.parent.parent, v1.parent, v1):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert {stat.S_IMODE(p.stat().st_mode) for p in parts} == {0o600}
    doc = shown(home)
    assert doc["engine"] == "spark" and doc["version"] == 1 and doc["row_count"] == 2000
    assert (
        "engine: spark (the Parquet warehouse, v1)"
        in sandbox(home, "dataset", "show", DATASET).stdout
    )
    assert "[spark]" in sandbox(home, "dataset", "list").stdout
    # The enclave is encrypted; the warehouse is not, and the key status says so.
    status = json.loads(sandbox(home, "keys", "status").stdout)
    assert status["encrypted"] is True
    assert status["warehouse"]["encrypted"] is False
    assert status["warehouse"]["path"] == str((home / "warehouse").resolve())


def test_the_certificate_quality_report_and_audit_entry_say_spark(
    home: Path, tmp_path: Path
) -> None:
    cert_path = home / "certificates" / f"{DATASET}.v1.json"
    cert = json.loads(cert_path.read_text())["certificate"]
    assert cert["engine"] == "spark" and cert["row_count"] == 2000
    valid = sandbox(home, "dataset", "verify-cert", str(cert_path)).stdout
    assert "valid: health.visits v1" in valid
    quality = json.loads(sandbox(home, "dataset", "quality", DATASET, "--json").stdout)
    assert quality["report"]["version"] == 1 and quality["report"]["rows"] == 2000
    assert quality["report"]["sha256"] == cert["quality"]["sha256"]
    entries = [
        json.loads(line)
        for line in sandbox(
            home, "audit", "entries", "--action", "dataset.register"
        ).stdout.splitlines()
    ]
    assert entries[-1]["decision"] == "allow" and entries[-1]["details"]["engine"] == "spark"
    export = tmp_path / "export"
    sandbox(home, "audit", "export", "--out", str(export))
    assert sandbox(home, "audit", "verify", str(export)).returncode == 0


def test_replacing_a_version_removes_the_previous_directory(home: Path) -> None:
    out = register(home, "--engine", "spark").stdout
    assert f"replaced {DATASET} v2" in out
    assert listing(home) == ["v2"]
    assert warehouse_rows(dataset_dir(home / "warehouse", DATASET, 2)) == source_rows()


def test_a_failed_replacement_leaves_the_version_and_no_stray_directory(
    home: Path, tmp_path: Path
) -> None:
    before = shown(home)
    # The classification names a column the file does not have: refused after the load.
    toml = (EXAMPLES / "visits.toml").read_text() + (
        '\n[columns.clinic]\nlevel = "L1"\nrole = "dimension"\n'
    )
    (tmp_path / "visits.toml").write_text(toml)
    proc = sandbox(
        home,
        "dataset",
        "register",
        str(tmp_path / "visits.toml"),
        "--source",
        str(EXAMPLES / "visits.csv"),
        "--engine",
        "spark",
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error[")
    assert "clinic" in proc.stderr and "Traceback" not in proc.stderr
    assert shown(home)["version"] == before["version"] == 2
    assert listing(home) == ["v2"]
    assert warehouse_rows(dataset_dir(home / "warehouse", DATASET, 2)) == source_rows()
    denied = [
        json.loads(line)
        for line in sandbox(
            home, "audit", "entries", "--action", "dataset.register", "--decision", "deny"
        ).stdout.splitlines()
    ]
    assert denied[-1]["details"]["engine"] == "spark"


def test_an_unknown_engine_is_refused_by_name(home: Path) -> None:
    proc = register(home, "--engine", "hive", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error[invalid_input]: engine must be one of duckdb, spark (rule: registry.engine)"
    ]


def test_switching_engines_both_ways(home: Path) -> None:
    spark_quality = json.loads(sandbox(home, "dataset", "quality", DATASET, "--json").stdout)
    out = register(home).stdout  # the default engine: duckdb
    assert f"replaced {DATASET} v3: 2000 rows\n" in out
    assert DATASET in enclave_tables(home) and listing(home) == []
    assert shown(home)["engine"] == "duckdb"
    duck_quality = json.loads(sandbox(home, "dataset", "quality", DATASET, "--json").stdout)

    def measured(report: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v
            for k, v in report.items()
            if k not in ("version", "sha256", "evaluated_at", "data_as_of")
        }

    # The same rows measured in the same DuckDB transaction: the same report.
    assert measured(duck_quality["report"]) == measured(spark_quality["report"])

    register(home, "--engine", "spark")
    assert DATASET not in enclave_tables(home) and listing(home) == ["v4"]
    register(home, "--engine", "duckdb")
    assert DATASET in enclave_tables(home) and listing(home) == []
    versions = [
        json.loads((home / "certificates" / f"{DATASET}.v{v}.json").read_text())["certificate"][
            "engine"
        ]
        for v in range(1, 6)
    ]
    assert versions == ["spark", "spark", "duckdb", "spark", "duckdb"]
