"""The command line stays light: which heavy modules a command loads (no timing asserted).

``bench/cli_startup.py`` measures the time; this test fails when a module-level import
brings DuckDB, pyarrow, sqlglot, SQLAlchemy, Casbin or FastAPI back into commands that
do not use them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from audit import AuditTrail, KeyRing
from tests.audit.conftest import fill

DATA_STACK = {"duckdb", "pyarrow", "sqlglot", "sqlalchemy", "casbin", "fastapi", "uvicorn"}
PROBE = """
import json, sys
from sandbox.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("\\nLOADED " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def loaded(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    line = proc.stdout.rsplit("\nLOADED ", 1)[1]
    return set(json.loads(line))


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("startup")
    with AuditTrail.open(f"sqlite:///{root / 'a.db'}", KeyRing(root / "k"), sign_every_n=2) as t:
        fill(t, 3)
        t.export(root / "export")
    return root / "export"


def test_help_loads_no_data_stack_no_settings_no_crypto() -> None:
    found = loaded("--help")
    assert not found & (DATA_STACK | {"pydantic", "cryptography", "httpx", "rich"}), found


def test_audit_verify_loads_no_data_stack(export: Path) -> None:
    found = loaded("audit", "verify", str(export))
    assert "cryptography" in found  # it does verify signatures
    assert not found & (DATA_STACK | {"httpx", "policies", "connectors"}), found


def test_a_remote_command_loads_no_data_stack() -> None:
    found = loaded("job", "list", "--url", "http://127.0.0.1:1", "--token", "t")
    assert "httpx" in found
    assert not found & (DATA_STACK | {"policies", "connectors", "audit", "rich"}), found
