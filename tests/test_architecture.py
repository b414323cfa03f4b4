"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and can fail.

``lint-imports`` checks the layering of ``sandbox`` and which packages may import
which; these tests run it as ``make lint`` does, and once on a copy of the tree with
a deliberate violation, so a contract that can never break would be noticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("sandbox", "policies", "connectors", "audit")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    # The packages are those under cwd (not an installed copy elsewhere).
    env = {**os.environ, "PYTHONPATH": str(cwd), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["name"]: c for c in config["contracts"]}


def test_contracts_are_kept() -> None:
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


VIOLATIONS = [
    pytest.param(
        "sandbox/core/violation.py",
        "import sandbox.query\n",
        "sandbox.core.violation -> sandbox.query (l.1)",
        ["sandbox.core imports nothing else of the project", "sandbox layers"],
        id="core-imports-query",
    ),
    pytest.param(
        "sandbox/enclave/violation.py",
        "import server\n",
        "sandbox.enclave.violation -> server (l.1)",
        ["nothing imports server"],
        id="enclave-imports-server",
    ),
]


@pytest.mark.parametrize(("path", "source", "chain", "broken"), VIOLATIONS)
def test_a_violation_breaks_its_contracts(
    tmp_path: Path, path: str, source: str, chain: str, broken: list[str]
) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "server.py", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / path).write_text(source)

    run = lint_imports(tmp_path)

    assert run.returncode != 0, run.stdout + run.stderr
    out = " ".join(run.stdout.split())  # long lines are wrapped
    assert chain in out
    for name in contracts():
        assert f"{name} {'BROKEN' if name in broken else 'KEPT'}" in out, out


def test_policies_and_connectors_forbid_every_sandbox_module_but_core() -> None:
    # The layers contract is exhaustive (every module under sandbox/ is in a layer), so
    # its layers are the complete list the forbidden contract must name.
    found = contracts()
    layers = {
        name.strip()
        for layer in found["sandbox layers"]["layers"]
        for name in layer.replace(":", "|").split("|")
    }
    forbidden = found["policies and connectors reach sandbox only through sandbox.core"]
    assert set(forbidden["forbidden_modules"]) == {
        f"sandbox.{name}" for name in layers - {"core"}
    } | {"server"}
