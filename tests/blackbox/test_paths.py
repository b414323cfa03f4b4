"""The paths users run, on a small demo home: audit export and verify, queries, the server.

Exit statuses are the documented ones: ``audit verify`` 0 / 1 (something wrong) / 2
(unreadable; docs/audit.md §7), ``query`` 0 with rows / 2 refused with the rule on
stderr (``sandbox query --help``).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.blackbox.conftest import DemoHome, Server, sandbox

RELEASED = "SELECT status, count(*) AS firms FROM market.enterprises GROUP BY 1 ORDER BY 1"
REFUSED = "SELECT name, credit_code FROM market.enterprises"
#: op-insurer's grant is dp (noised, released at once); op-bank's are reviewed.
NOISED = "SELECT count(*) AS claims FROM health.claims"


@pytest.fixture(scope="module")
def export(demo: DemoHome, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "trail"
    made = demo.run("audit", "export", "--out", str(out))
    assert made.code == 0 and made.out.startswith("exported "), str(made)
    return out


def test_audit_export_verifies(export: Path, demo: DemoHome) -> None:
    ok = sandbox("audit", "verify", str(export))
    assert ok.code == 0 and ok.out.startswith("OK: "), str(ok)
    assert "the export's own keys, which vouch for nothing" in ok.out
    trusted = sandbox("audit", "verify", str(export), "--keys", str(demo.home / "keys"), "--json")
    assert trusted.code == 0 and json.loads(trusted.out)["key_source"] == "trusted", str(trusted)


def test_a_flipped_byte_fails_verification(export: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(export, copy)
    entries = copy / "entries.jsonl"
    data = bytearray(entries.read_bytes())
    at = data.index(b'"actor":"') + len(b'"actor":"')  # the first entry's actor, one letter
    data[at] ^= 0x01
    entries.write_bytes(bytes(data))
    bad = sandbox("audit", "verify", str(copy))
    assert bad.code == 1 and bad.out.startswith("FAILED: entry 0: "), str(bad)
    as_json = sandbox("audit", "verify", str(copy), "--json")
    assert as_json.code == 1 and json.loads(as_json.out)["ok"] is False


def test_a_missing_export_exits_2(tmp_path: Path) -> None:
    missing = sandbox("audit", "verify", str(tmp_path / "no-such-export"))
    assert missing.code == 2 and "cannot verify" in missing.err, str(missing)


def test_a_local_query_releases_rows(demo: DemoHome) -> None:
    insurer = demo.tokens["op-insurer"]
    result = demo.run("query", "--token", insurer, "--format", "json", NOISED)
    assert result.code == 0, str(result)
    doc = json.loads(result.out)
    assert doc["rows"] and set(doc["rows"][0]) == {"claims"}
    assert doc["meta"]["epsilon_spent"] > 0  # dp: noised
    # The receipt names its audit entry by hash: no platform-wide seq.
    assert set(doc["receipt"]["receipt"]["audit"]) == {"entry_hash"}
    table = demo.run("query", "--token", insurer, NOISED)
    assert table.code == 0 and table.out.startswith("claims"), str(table)
    assert "audit entry " in table.err
    # Under op-bank's reviewed grant nothing leaves a local query: exact only after review.
    held = demo.run("query", "--token", demo.tokens["op-bank"], "--format", "json", RELEASED)
    assert held.code == 2 and held.out == "", str(held)
    assert "(rule: grant.review_required)" in held.err, str(held)


def test_a_refused_local_query_exits_2_with_its_rule(demo: DemoHome) -> None:
    refused = demo.run("query", "--token", demo.tokens["op-bank"], REFUSED)
    assert refused.code == 2 and refused.out == "", str(refused)
    assert refused.err.startswith("error[") and "(rule: guard." in refused.err, str(refused)


def test_a_query_without_a_token_is_a_usage_error(demo: DemoHome) -> None:
    missing = demo.run("query", RELEASED)
    assert missing.code == 2 and "Usage: sandbox query" in missing.err, str(missing)
    assert "Missing option '--token'" in missing.err


def test_serve_answers_health_and_a_url_client_works(server: Server, demo: DemoHome) -> None:
    with urllib.request.urlopen(f"{server.url}/health", timeout=10) as response:
        assert response.status == 200 and json.loads(response.read())
    token = demo.tokens["op-bank"]
    held = sandbox("query", "--url", server.url, "--token", token, "--format", "json", RELEASED)
    assert held.code == 2 and "(rule: job.review)" in held.err, str(held)  # reviewed: held
    job = held.err.split("job ", 1)[1].split()[0]
    approve = urllib.request.Request(
        f"{server.url}/v1/reviews/{job}",
        data=json.dumps({"verdict": "approve", "reason": "status counts"}).encode(),
        headers={
            "Authorization": f"Bearer {demo.tokens['bureau-market']}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(approve, timeout=30) as response:
        assert json.loads(response.read())["state"] == "succeeded"
    result = sandbox("job", "result", job, "--url", server.url, "--token", token)
    assert result.code == 0 and result.out.startswith("status"), str(result)
    listed = sandbox("job", "list", "--url", server.url, "--token", token)
    assert listed.code == 0 and job in listed.out, str(listed)
    status = sandbox("job", "status", job, "--url", server.url, "--token", token)
    assert status.code == 0 and json.loads(status.out)["state"] == "succeeded", str(status)
    refused = sandbox("query", "--url", server.url, "--token", token, REFUSED)
    assert refused.code == 2 and "(rule: guard." in refused.err, str(refused)
    unreachable = sandbox("job", "list", "--url", "http://127.0.0.1:1", "--token", token)
    assert unreachable.code == 2 and "connection_failed" in unreachable.err, str(unreachable)


def test_a_url_query_and_a_job_take_their_epsilon(server: Server, demo: DemoHome) -> None:
    """`--epsilon` reaches the server: spent as asked, refused above the per-query maximum."""
    insurer = demo.tokens["op-insurer"]
    half = sandbox(
        "query", "--url", server.url, "--token", insurer, "--epsilon", "0.5", "--format", "json",
        NOISED,
    )  # fmt: skip
    assert half.code == 0, str(half)
    assert json.loads(half.out)["meta"]["epsilon_spent"] == pytest.approx(0.5)
    above = sandbox(
        "job", "submit", "--url", server.url, "--token", insurer, "--epsilon", "50", NOISED
    )
    assert above.code == 2 and "budget.epsilon_per_query" in above.err, str(above)
