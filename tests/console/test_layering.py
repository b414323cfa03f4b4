"""The console sits above the API: an API module importing it breaks the layers contract
(only ``sandbox/api/app.py``, which mounts it, is let through), and so does the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.test_architecture import PACKAGES, ROOT, contracts, lint_imports


@pytest.mark.parametrize(
    ("path", "chain"),
    [
        ("sandbox/api/violation.py", "sandbox.api.violation -> sandbox.console"),
        ("sandbox/cli/violation.py", "sandbox.cli.violation -> sandbox.console"),
    ],
    ids=["api-imports-console", "cli-imports-console"],
)
def test_importing_the_console_from_below_breaks_the_layers(
    tmp_path: Path, path: str, chain: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "server.py", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / path).write_text("import sandbox.console\n")

    run = lint_imports(tmp_path)

    out = " ".join(run.stdout.split())
    assert run.returncode != 0, out
    assert chain in out and "sandbox layers BROKEN" in out
    assert "sandbox layers" in contracts()
