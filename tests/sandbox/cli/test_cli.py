"""The `sandbox` CLI end to end on a small demo home (real files, subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli") / "home"
    out = run("--home", str(home), "demo", "--scale", "0.01").stdout
    assert "registered health.claims v1: 10000 rows" in out
    return home


def test_demo_creates_all_four_datasets(demo_home: Path) -> None:
    out = run("--home", str(demo_home), "dataset", "list").stdout
    for dataset in (
        "health.claims",
        "market.enterprises",
        "hrss.social_insurance",
        "transport.trips",
    ):
        assert dataset in out


def test_show_prints_columns_with_level_and_role(demo_home: Path) -> None:
    out = run("--home", str(demo_home), "dataset", "show", "health.claims").stdout
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["id_number"][2:4] == ["L4", "identifier"]
    assert lines["age"][2:4] == ["L2", "quasi"] and "bands of 10" in out
    assert lines["claim_amount"][2:4] == ["L2", "measure"] and "bounds 0..13000" in out
    assert lines["district"][2:4] == ["L1", "dimension"]
    assert lines["diagnosis_code"][2:4] == ["L3", "sensitive"]


def test_show_json_has_no_rows(demo_home: Path) -> None:
    doc = json.loads(
        run("--home", str(demo_home), "dataset", "show", "health.claims", "--json").stdout
    )
    assert doc["entity_key"] == "person_id"
    assert set(doc["columns"]) >= {"person_id", "claim_amount"}
    assert "rows" not in doc


def test_unknown_dataset_is_a_clean_error(demo_home: Path) -> None:
    proc = run("--home", str(demo_home), "dataset", "show", "health.nothing", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error[not_found]:")
    assert "Traceback" not in proc.stderr


def test_verify_cert_offline_and_tampered(demo_home: Path, tmp_path: Path) -> None:
    cert_path = demo_home / "certificates" / "health.claims.v1.json"
    pub = next((demo_home / "keys").glob("*.pub"))
    ok = run("dataset", "verify-cert", str(cert_path), "--public-key", str(pub))
    assert "valid: health.claims v1" in ok.stdout
    doc = json.loads(cert_path.read_text())
    doc["certificate"]["row_count"] += 1
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(doc))
    proc = run("dataset", "verify-cert", str(bad), "--public-key", str(pub), check=False)
    assert proc.returncode == 2
    assert "certificate.signature" in proc.stderr


def test_register_bad_classification_file(demo_home: Path, tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[dataset]\nid = "health.x"\nentity_key = "a"\n[columns.a]\nlevel = "L9"\n')
    data = tmp_path / "x.csv"
    data.write_text("a\n1\n")
    proc = run(
        "--home",
        str(demo_home),
        "dataset",
        "register",
        str(toml),
        "--source",
        str(data),
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid_classification" in proc.stderr and "level must be one of" in proc.stderr


def test_help_everywhere() -> None:
    for args in ([], ["dataset"], ["dataset", "register"], ["init"], ["serve"]):
        proc = run(*args, "--help")
        assert "Usage" in proc.stdout
