"""Every command and group of ``sandbox``: ``--help`` works, a bad option is a usage error.

The command paths come from the typer app object at collection time; the root help
printed by the installed command must list the same top-level names.  The runs are
independent, so they go four at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from typer.main import get_command

from sandbox.cli.main import app
from tests.blackbox.conftest import Result, sandbox


def _paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        if not getattr(sub, "hidden", False):
            found += _paths(sub, (*path, name))
    return found


PATHS = _paths(get_command(app))
BAD = "--no-such-option"


def _id(path: tuple[str, ...]) -> str:
    return " ".join(path) or "(root)"


@pytest.fixture(scope="session")
def runs() -> dict[tuple[str, ...], tuple[Result, Result]]:
    """``--help`` and a bad option for every path, four processes at a time."""

    def both(path: tuple[str, ...]) -> tuple[Result, Result]:
        return sandbox(*path, "--help"), sandbox(*path, BAD)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(PATHS, pool.map(both, PATHS), strict=True))


def test_every_command_is_enumerated() -> None:
    names = {p[0] for p in PATHS if p}
    assert {"audit", "job", "query", "serve", "demo", "dataset", "grant"} <= names
    assert ("audit", "verify") in PATHS and ("job", "wait") in PATHS
    assert len(PATHS) > 30


@pytest.mark.parametrize("path", PATHS, ids=_id)
def test_help(runs: dict[tuple[str, ...], tuple[Result, Result]], path: tuple[str, ...]) -> None:
    result, _ = runs[path]
    assert result.code == 0, str(result)
    assert f"Usage: {' '.join(('sandbox', *path))} " in result.out, str(result)


def test_root_help_lists_every_top_level_command(
    runs: dict[tuple[str, ...], tuple[Result, Result]],
) -> None:
    help_text, _ = runs[()]
    listed = {
        line.split()[0]
        for line in help_text.out.split("Commands:", 1)[1].splitlines()
        if line.startswith("  ") and line.split()
    }
    assert listed == {p[0] for p in PATHS if len(p) == 1}


@pytest.mark.parametrize("path", PATHS, ids=_id)
def test_bad_option(
    runs: dict[tuple[str, ...], tuple[Result, Result]], path: tuple[str, ...]
) -> None:
    _, result = runs[path]
    assert result.code == 2, str(result)
    assert f"Usage: {' '.join(('sandbox', *path))} " in result.err, str(result)
    assert f"Error: No such option: {BAD}" in result.err, str(result)
