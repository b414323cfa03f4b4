"""`sandbox query` and `sandbox receipt verify` as an operator uses them (subprocesses)."""

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
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo home where the market and health bureaus chose ``dp`` for op-bank's grants
    (``sandbox grant release-mode``): a local ``sandbox query`` releases at once, noised;
    its social-insurance grant stays ``reviewed`` (exact, only through a reviewed job)."""
    home = tmp_path_factory.mktemp("cliq") / "home"
    run("--home", str(home), "demo", "--scale", "0.01")
    tokens = home / "demo-tokens.json"
    assert tokens.stat().st_mode & 0o777 == 0o600
    for bureau, dataset in (
        ("bureau-market", "market.enterprises"),
        ("bureau-health", "health.claims"),
    ):
        listed = run("--home", str(home), "grant", "list", "--json", "--token", token(home, bureau))
        (grant,) = [
            g
            for g in json.loads(listed.stdout)
            if g["operator"] == "op-bank" and g["dataset"] == dataset
        ]
        changed = run(
            "--home", str(home), "grant", "release-mode", grant["id"], "dp",
            "--epsilon-total", "1000", "--reason", "CLI tests: noised answers",
            "--token", token(home, bureau),
        )  # fmt: skip
        assert "release mode dp (ε 1000 in total, 1 per query)" in changed.stdout
    return home


def token(home: Path, name: str) -> str:
    return json.loads((home / "demo-tokens.json").read_text())[name]


def test_query_prints_released_rows_and_writes_a_receipt(home: Path, tmp_path: Path) -> None:
    receipt = tmp_path / "receipt.json"
    proc = run(
        "--home",
        str(home),
        "query",
        "--token",
        token(home, "op-bank"),
        "--format",
        "json",
        "--receipt",
        str(receipt),
        "SELECT district, count(DISTINCT person_id) AS persons FROM health.claims GROUP BY 1",
    )
    doc = json.loads(proc.stdout)
    # 16 districts; under dp the smallest may fall under the noisy threshold.
    assert 10 <= len(doc["rows"]) <= 16 and doc["meta"]["k"] == 10
    assert all(row["persons"] >= 10 for row in doc["rows"])
    verified = run("--home", str(home), "receipt", "verify", str(receipt))
    assert "valid: request" in verified.stdout
    tampered = json.loads(receipt.read_text())
    tampered["receipt"]["rows"] = 1
    receipt.write_text(json.dumps(tampered))
    bad = run("--home", str(home), "receipt", "verify", str(receipt), check=False)
    assert bad.returncode == 2 and "receipt.signature" in bad.stderr


def test_table_and_csv_formats(home: Path) -> None:
    sql = "SELECT status, count(*) AS firms FROM market.enterprises GROUP BY 1 ORDER BY 1"
    table = run("--home", str(home), "query", "--token", token(home, "op-bank"), sql)
    assert table.stdout.splitlines()[0].split() == ["status", "firms"]
    assert "(k=10)" in table.stderr and "ε spent 1" in table.stderr  # dp: noised
    csv = run(
        "--home", str(home), "query", "--token", token(home, "op-bank"), "--format", "csv", sql
    )
    assert csv.stdout.splitlines()[0] == '"status","firms"'


def test_refusal_goes_to_stderr_with_nonzero_exit(home: Path) -> None:
    proc = run(
        "--home",
        str(home),
        "query",
        "--token",
        token(home, "op-bank"),
        "SELECT id_number, count(*) FROM health.claims GROUP BY 1",
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "guard.l4_column" in proc.stderr


def test_bad_token_is_refused(home: Path) -> None:
    proc = run(
        "--home",
        str(home),
        "query",
        "--token",
        "sbx_not-a-token",
        "SELECT count(*) FROM health.claims",
        check=False,
    )
    assert proc.returncode == 2 and "unauthenticated" in proc.stderr


def test_the_configured_sql_length_applies_to_local_queries(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql = "SELECT gender, count(*) FROM health.claims GROUP BY 1" + " " * 100
    args = ("--home", str(home), "query", "--token", token(home, "op-bank"))
    assert json.loads(run(*args, "--explain", sql).stdout)["accepted"]  # the default: 20,000
    monkeypatch.setenv("SANDBOX_MAX_SQL_LENGTH", "100")
    explained = run(*args, "--explain", sql, check=False)
    assert explained.returncode == 2
    assert json.loads(explained.stdout)["rule"] == "guard.sql_length"
    ran = run(*args, sql, check=False)
    assert ran.returncode == 2 and ran.stdout == ""
    assert "longer than 100 characters" in ran.stderr and "guard.sql_length" in ran.stderr


def test_a_setting_out_of_bounds_stops_the_cli_naming_the_variable(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_K_FLOOR", "1")
    proc = run("--home", str(home), "dataset", "list", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "SANDBOX_K_FLOOR is not valid: must be greater than or equal to 2" in proc.stderr


def test_explain(home: Path) -> None:
    ok = run(
        "--home",
        str(home),
        "query",
        "--token",
        token(home, "op-insurer"),
        "--explain",
        "SELECT gender, count(*) FROM health.claims GROUP BY 1",
    )
    verdict = json.loads(ok.stdout)
    assert verdict["accepted"] and verdict["epsilon"] == pytest.approx(1.0)
    refused = run(
        "--home",
        str(home),
        "query",
        "--token",
        token(home, "op-insurer"),
        "--explain",
        "SELECT * FROM health.claims",
        check=False,
    )
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["rule"] == "guard.not_aggregated"


def test_a_repeat_from_the_cache_prints_its_own_audit_entry(home: Path) -> None:
    sql = "SELECT industry, count(*) AS firms FROM market.enterprises GROUP BY 1"
    args = ("--home", str(home), "query", "--token", token(home, "op-bank"))
    first = run(*args, sql)
    again = run(*args, sql)
    assert "from cache" in again.stderr and "from cache" not in first.stderr
    # Named by hash (a seq would count other accounts' activity), each its own entry.
    hashes = [p.stderr.rsplit("audit entry ", 1)[1].strip() for p in (first, again)]
    assert hashes[0] != hashes[1] and all(len(h) == 64 for h in hashes)
    entries = run("--home", str(home), "audit", "entries", "--action", "dataset.query",
                  "--limit", "10000")  # fmt: skip
    listed = [json.loads(line) for line in entries.stdout.splitlines()]
    released = [e for e in listed if e["decision"] == "allow" and "cache" not in e["details"]]
    repeats = [e for e in listed if e["details"].get("cache") is True]
    assert repeats and repeats[-1]["details"]["released_by"] in {e["request_id"] for e in released}


def test_a_count_of_one_is_singular(home: Path, tmp_path: Path) -> None:
    args = ("--home", str(home), "query", "--token", token(home, "op-bank"))
    proc = run(*args, "SELECT count(*) AS claims FROM health.claims")
    assert "# 1 row" in proc.stderr and "# 1 rows" not in proc.stderr, proc.stderr


def test_a_reviewed_grant_releases_nothing_locally(home: Path) -> None:
    """op-bank's social-insurance grant is reviewed: no exact value without the review."""
    args = ("--home", str(home), "query", "--token", token(home, "op-bank"))
    proc = run(
        *args, "SELECT month, count(*) AS n FROM hrss.social_insurance GROUP BY 1", check=False
    )
    assert proc.returncode == 2 and "grant.review_required" in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_epsilon_per_query_and_the_accuracy_line(home: Path) -> None:
    """`--epsilon` within the grant's per-query maximum; the 95% half-widths on stderr."""
    sql = "SELECT status, count(*) AS firms FROM market.enterprises GROUP BY 1 ORDER BY 1 DESC"
    half = run(
        "--home", str(home), "query", "--token", token(home, "op-bank"), "--epsilon", "0.5", sql
    )
    assert "ε spent 0.5" in half.stderr and "95% within firms ±" in half.stderr
    # what a group needs to be shown, so an empty table does not read as no data
    assert "groups shown where their noisy count of " in half.stderr, half.stderr
    # and what the interval leaves out: the caps (a count sums no clamped value)
    assert "intervals are the noise alone: at most 1 row an entity in a group" in half.stderr
    assert "clamped" not in half.stderr, half.stderr
    above = run(
        "--home", str(home), "query", "--token", token(home, "op-bank"), "--epsilon", "5", sql,
        check=False,
    )  # fmt: skip
    assert above.returncode == 2 and "budget.epsilon_per_query" in above.stderr


def test_an_average_shows_each_cells_interval_in_the_table(home: Path) -> None:
    """Under a budget each released average has its 95% half-width beside it (the result
    metadata's ``half_widths``), so a small group's noisy mean does not pass as a figure."""
    sql = (
        "SELECT status, avg(registered_capital) AS capital FROM market.enterprises "
        "GROUP BY 1 ORDER BY 1"
    )
    args = ("--home", str(home), "query", "--token", token(home, "op-bank"))
    proc = run(*args, sql)
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["status", "capital", "capital", "±95%"], lines[0]
    # the clamping the interval leaves out: the owner's declared bounds, from the metadata
    assert "measures clamped to [0, 1,000,000,000] (what lies beyond" in proc.stderr, proc.stderr
    doc = json.loads(run(*args, "--format", "json", sql.replace("avg", "AVG")).stdout)
    assert doc["meta"]["accuracy"]["capital"]["clamped_to"] == [[0.0, 1e9]]
    assert doc["meta"]["contribution"]["max_rows_per_entity"] == 1
    widths = doc["meta"]["accuracy"]["capital"]["half_widths"]
    assert len(widths) == len(doc["rows"]) == len(lines) - 2 and widths
    for line, width in zip(lines[2:], widths, strict=True):
        shown = line.split()[-1]
        assert shown == "unbounded" if width is None else float(shown.replace(",", "")) > 0
    assert "capital ±95%" not in json.dumps(doc["rows"]), "JSON rows stay the released values"


def test_a_threshold_is_answered_and_its_released_value_shown(home: Path) -> None:
    """`WHERE x > (SELECT avg(x) …)` through the installed command: the count, and the
    subquery's released (noisy) value on stderr, as the result metadata has it."""
    sql = (
        "SELECT count(*) AS n FROM health.claims "
        "WHERE claim_amount > (SELECT avg(claim_amount) FROM health.claims)"
    )
    args = ("--home", str(home), "query", "--token", token(home, "op-insurer"))
    shown = run(*args, sql)
    assert "subquery released first as " in shown.stderr and "ε spent 1" in shown.stderr
    doc = json.loads(run(*args, "--format", "json", sql.replace("avg", "AVG")).stdout)
    (value,) = doc["meta"]["thresholds"]
    assert isinstance(value, float) and 0 < value < 13000
    assert doc["rows"][0]["n"] > 0


def test_json_rows_hold_no_value_json_cannot() -> None:
    """A ratio over a noisy 0 (inf, NaN) prints as null, as over HTTP (strict JSON)."""
    from sandbox.cli.query import _finite

    values = [1.5, float("inf"), float("-inf"), float("nan"), 3, "D01", None]
    assert [_finite(v) for v in values] == [1.5, None, None, None, 3, "D01", None]
