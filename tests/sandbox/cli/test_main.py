"""`main()`: exit statuses reach the process, usage errors print usage and never a traceback.

Run as users run it: ``python -m sandbox.cli`` in a subprocess (the same ``main`` the
installed ``sandbox`` script calls), so what the shell sees is what is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from audit import AuditTrail, KeyRing
from sandbox.cli.main import main
from tests.audit.conftest import fill


def sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("main")
    with AuditTrail.open(
        f"sqlite:///{root / 'audit.db'}", KeyRing(root / "keys"), sign_every_n=4
    ) as trail:
        fill(trail, 6)
        trail.export(root / "export")
    return root / "export"


@pytest.fixture
def tampered(export: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tampered"
    subprocess.run(["cp", "-r", str(export), str(copy)], check=True)
    entries = copy / "entries.jsonl"
    entries.write_bytes(entries.read_bytes().replace(b"operator-1", b"operator-9", 1))
    return copy


def test_verify_exit_statuses_reach_the_shell(export: Path, tampered: Path, tmp_path: Path) -> None:
    ok = sandbox("audit", "verify", str(export))
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 6 entries"), ok.stdout + ok.stderr
    bad = sandbox("audit", "verify", str(tampered))
    assert bad.returncode == 1 and bad.stdout.startswith("FAILED: entry "), bad.stdout
    bad_json = sandbox("audit", "verify", str(tampered), "--json")
    assert bad_json.returncode == 1 and json.loads(bad_json.stdout)["ok"] is False
    missing = sandbox("audit", "verify", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "cannot verify" in missing.stderr
    for proc in (ok, bad, bad_json, missing):
        assert "Traceback" not in proc.stdout + proc.stderr


def test_main_raises_the_status_and_returns_on_success(export: Path, tampered: Path) -> None:
    assert main(["audit", "verify", str(export)]) is None  # a 0 status is a plain return
    with pytest.raises(SystemExit) as info:
        main(["audit", "verify", str(tampered)])
    assert info.value.code == 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["query"], "Error: Missing argument"),
        (["job", "wait", "", "--token", "t"], "the job id is empty"),
        (["job", "wait", ""], "Error: "),
        (["job", "status", "  ", "--token", "t"], "the job id is empty"),
        (["audit", "verify"], "Error: Missing argument"),
        (["--no-such-option"], "Error: No such option: --no-such-option"),
        (["audit", "proof", "--seq", "minus-one"], "Error: Invalid value for '--seq'"),
        (["no-such-command"], "Error: No such command"),
    ],
)
def test_usage_errors_exit_2_with_a_usage_line(args: list[str], error: str) -> None:
    proc = sandbox(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Usage: sandbox" in proc.stderr and error in proc.stderr, proc.stderr


def test_help_exits_0() -> None:
    proc = sandbox("job", "wait", "--help")
    assert proc.returncode == 0 and "Usage: sandbox job wait" in proc.stdout
    assert "JOB_ID" in proc.stdout
