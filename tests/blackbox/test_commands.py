"""Every command and group of ``sandbox``: ``--help`` works, a bad option is a usage error.

The command paths come from the typer app object at collection time; the root help
printed by the installed command must list the same top-level names.  Starting one
interpreter per run (two hundred of them) cost minutes, so one child process runs the
installed script (``.venv/bin/sandbox``, as its ``#!`` line would) once per path, with its
own ``sys.argv``, output and exit status each time; a sample of paths is also run as
separate processes and must print exactly the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from typer.main import get_command

from sandbox.cli.main import app
from tests.blackbox.conftest import SANDBOX, Result, clean_env, sandbox


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


RUNNER = """
import contextlib, io, json, runpy, sys, traceback

script = sys.argv[1]
results = []
for argv in json.loads(sys.stdin.read()):
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [script, *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append([code, out.getvalue(), err.getvalue()])
json.dump(results, sys.__stdout__)
"""
"""Runs the installed script once per argument list in one interpreter (stdin: the lists)."""

SAMPLE = [(), ("audit", "verify"), ("grant",)]
"""Paths also run as separate processes: the root, a leaf and a group."""


def run_in_one_process(argvs: list[tuple[str, ...]]) -> list[Result]:
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, SANDBOX],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(),
    )
    assert proc.returncode == 0 and not proc.stderr, proc.stderr[-3000:]
    results = [
        Result(a, code, out, err)
        for a, (code, out, err) in zip(argvs, json.loads(proc.stdout), strict=True)
    ]
    for result in results:
        assert "Traceback" not in result.out + result.err, str(result)
    return results


@pytest.fixture(scope="session")
def runs() -> dict[tuple[str, ...], tuple[Result, Result]]:
    """``--help`` and a bad option for every path, all in one process."""
    argvs = [(*path, flag) for path in PATHS for flag in ("--help", BAD)]
    results = iter(run_in_one_process(argvs))
    return {path: (next(results), next(results)) for path in PATHS}


def test_one_process_prints_what_separate_processes_print(
    runs: dict[tuple[str, ...], tuple[Result, Result]],
) -> None:
    for path in SAMPLE:
        assert path in PATHS
        for alone, together in zip(
            (sandbox(*path, "--help"), sandbox(*path, BAD)), runs[path], strict=True
        ):
            assert (alone.code, alone.out, alone.err) == (
                together.code,
                together.out,
                together.err,
            ), f"{alone}\n--- in one process:\n{together}"


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
