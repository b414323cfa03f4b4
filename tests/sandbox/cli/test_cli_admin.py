"""The admin command line over a real demo home (enclave, control DB, audit trail)."""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path

import pytest

from audit import AuditTrail, EntryFilter, KeyRing
from policies import Authority
from sandbox.cli.main import main
from sandbox.core.db import open_control_db
from sandbox.core.settings import Settings


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "home"
    main(["--home", str(path), "demo", "--scale", "0.001"])
    return path


def run(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(["--home", str(home), *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def tokens(home: Path) -> dict[str, str]:
    return json.loads((home / "demo-tokens.json").read_text())


def test_demo_writes_private_tokens_that_work(home: Path) -> None:
    path = home / "demo-tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found = tokens(home)
    assert set(found) == {
        "op-bank",
        "op-insurer",
        "op-planner",
        "bureau-health",
        "bureau-market",
        "bureau-hrss",
        "bureau-transport",
        "auditor",
        "admin",
    }
    engine = open_control_db(Settings(home=home).control_db_url)
    authority = Authority(engine)
    try:
        for name, token in found.items():
            assert authority.authenticate(token).name == name
        bank = authority.authenticate(found["op-bank"])
        assert authority.decide(
            bank, "dataset.query", datasets=["market.enterprises", "hrss.social_insurance"]
        ).allowed
        insurer = authority.authenticate(found["op-insurer"])
        d = authority.decide(
            insurer,
            "dataset.query",
            datasets=["health.claims"],
            group_by={"health.claims": ["age", "gender", "diagnosis_code"]},
        )
        assert d.allowed and d.budgets[d.grants[0].id].total == 10.0
        planner = authority.authenticate(found["op-planner"])
        assert authority.decide(planner, "dataset.query", datasets=["health.claims"]).rule == (
            "grant.missing"
        )
    finally:
        authority.close()
        engine.dispose()


def test_accounts_and_tokens(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        home,
        capsys,
        "account",
        "create",
        "op-lab",
        "--role",
        "operator",
        "--org",
        "Research Lab",
        "--licence-number",
        "LAB-1",
        "--licence-valid-until",
        "2030-01-01",
    )
    assert code == 0 and "created operator account op-lab" in out
    code, out, _ = run(home, capsys, "account", "list", "--json")
    assert any(a["name"] == "op-lab" for a in json.loads(out))
    # The host console never gets another account's token ...
    code, out, err = run(home, capsys, "token", "issue", "op-lab", "--days", "7")
    assert code == 2 and "token.not_own" in err and "sbx_" not in out
    # ... it issues a one-time code, which the account's holder redeems.
    code, out, _ = run(home, capsys, "token", "enrol", "op-lab", "--days", "7")
    assert code == 0
    enrolment = out.splitlines()[1]
    assert enrolment.startswith("sbe_")
    code, out, _ = run(home, capsys, "token", "redeem", enrolment)
    assert code == 0 and "for op-lab" in out
    first = out.splitlines()[1]
    assert first.startswith("sbx_")
    code, _, err = run(home, capsys, "token", "redeem", enrolment)
    assert code == 2 and "enrolment.used" in err
    # With its token the account asks for another (and may replace the one it asks with).
    code, out, _ = run(home, capsys, "token", "issue", "--label", "laptop", "--token", first)
    token_id, token = out.split()[2], out.splitlines()[1]
    assert code == 0 and token.startswith("sbx_") and token != first
    code, out, _ = run(home, capsys, "token", "issue", "--replace", "--token", token)
    assert code == 0
    code, _, err = run(home, capsys, "account", "list", "--token", token)
    assert code == 2 and "auth.token_revoked" in err
    code, out, _ = run(home, capsys, "token", "revoke", token_id)
    assert code == 0 and "revoked" in out
    code, out, err = run(
        home,
        capsys,
        "account",
        "create",
        "x",
        "--role",
        "admin",
        "--org",
        "X",
        "--token",
        tokens(home)["op-bank"],
    )
    assert code == 2 and "role.not_permitted" in err
    code, _, err = run(home, capsys, "account", "licence", "op-lab", "--status", "withdrawn")
    assert code == 0
    code, _, err = run(home, capsys, "account", "disable", "op-lab", "--reason", "test")
    assert code == 0


def test_grants_need_a_bureau(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    issue = [
        "grant",
        "issue",
        "transport.trips",
        "op-bank",
        "--purpose",
        "commute-credit",
        "--purpose-text",
        "commuting patterns",
        "--valid-until",
        "2030-01-01",
        "--max-level",
        "L2",
        "--groupable",
        "board_time",
        "--use",
        "commercial",
        "--price-per-query",
        "1.50",
        "--queries-per-day",
        "100",
    ]
    code, _, err = run(home, capsys, *issue)
    assert code == 2 and "role.not_permitted" in err  # the host console is an admin
    monkeypatch.setenv("SANDBOX_TOKEN", tokens(home)["bureau-transport"])
    code, out, err = run(home, capsys, *issue)
    assert code == 0, err
    # dp by default, with the platform's default budget, said on issue.
    assert "release mode dp (ε 10 in total, 1 per query)" in out, out
    grant_id = out.split()[1].rstrip(":")
    code, out, _ = run(home, capsys, "grant", "list", "--json")
    listed = {g["id"]: g for g in json.loads(out)}
    assert listed[grant_id]["tariff"]["price_per_query_fen"] == 150
    assert (listed[grant_id]["release_mode"], listed[grant_id]["epsilon_total"]) == ("dp", 10.0)
    code, out, _ = run(
        home, capsys, "grant", "narrow", grant_id, "--queries-per-day", "10", "--reason", "pilot"
    )
    assert code == 0 and "v2" in out
    code, out, err = run(home, capsys, "grant", "narrow", grant_id, "--max-level", "L3")
    assert code == 2 and "grant.narrow_widens" in err
    code, out, err = run(home, capsys, "grant", "release-mode", grant_id, "reviewed")
    assert code == 2 and "grant.release_mode" in err  # a reason is required
    code, out, err = run(
        home, capsys, "grant", "release-mode", grant_id, "reviewed", "--reason", "exact, checked"
    )
    assert code == 0 and "v3: release mode reviewed" in out, err
    code, out, err = run(home, capsys, "grant", "release-mode", grant_id, "fuzzy", "--reason", "x")
    assert code == 2 and "'fuzzy' is not one of dp, reviewed" in err
    for change, status in (("suspend", "suspended"), ("resume", "active"), ("revoke", "revoked")):
        code, out, _ = run(home, capsys, "grant", change, grant_id, "--reason", "t")
        assert code == 0 and status in out
    code, out, _ = run(home, capsys, "grant", "show", grant_id)
    shown = json.loads(out)
    assert [h["change"] for h in shown["history"]] == [
        "issue",
        "narrow",
        "release_mode",
        "suspend",
        "resume",
        "revoke",
    ]
    monkeypatch.setenv("SANDBOX_TOKEN", tokens(home)["bureau-market"])
    code, _, err = run(home, capsys, "grant", "revoke", grant_id)
    # Another bureau's grant answers as one that does not exist (domain.outside is audited).
    assert code == 2 and f"no grant {grant_id} (rule: grant.unknown)" in err


def test_freeze_usage_statement_and_audit(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(home, capsys, "freeze", "--dataset", "health.claims", "--reason", "drill")
    assert code == 0 and "frozen" in out
    code, out, _ = run(home, capsys, "dataset", "list")
    assert "FROZEN" in out
    code, out, _ = run(home, capsys, "unfreeze", "--dataset", "health.claims")
    assert code == 0
    code, out, _ = run(home, capsys, "freeze", "--operator", "op-insurer")
    assert code == 0
    code, _, err = run(home, capsys, "freeze", "--operator", "bureau-health")
    assert code == 2 and "freeze.not_operator" in err
    code, out, _ = run(home, capsys, "usage", "--json")
    assert code == 0 and json.loads(out) == []
    target = tmp_path / "statement.csv"
    code, out, _ = run(
        home, capsys, "statement", "2026-11", "--bureau", "bureau-health", "--out", str(target)
    )
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert code == 0 and rows[-1]["grant"] == "TOTAL"
    code, _, err = run(
        home,
        capsys,
        "statement",
        "2026-11",
        "--token",
        tokens(home)["op-bank"],
        "--operator",
        "op-insurer",
    )
    assert code == 2 and "owner.mismatch" in err
    settings = Settings(home=home)
    with AuditTrail.open(settings.audit_db_url, KeyRing(settings.keys_dir)) as trail:
        freezes = trail.entries(EntryFilter(action="dataset.freeze"))
        assert freezes and freezes[0].actor.startswith("host:")
        assert freezes[0].details["reason"] == "drill"
        assert (
            trail.entries(EntryFilter(action="operator.freeze"))[0].target == "account:op-insurer"
        )
        assert trail.verify().ok


def test_demo_again_keeps_accounts_and_grants(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tokens(home)
    code, out, _ = run(home, capsys, "demo", "--scale", "0.001")
    assert code == 0
    after = tokens(home)
    assert set(after) == set(before) and all(after[n] != before[n] for n in after)
    bureau_token = after["bureau-health"]
    code, out, _ = run(home, capsys, "grant", "list", "--json", "--token", bureau_token)
    assert len(json.loads(out)) == 2  # op-bank and op-insurer, not issued twice
