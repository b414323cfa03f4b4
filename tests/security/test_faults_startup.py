"""Fault tests (issue 7): a damaged home is refused at start, in one clear line.

Each case damages a copy of one demo home (the enclave overwritten, truncated or
deleted; the control-plane DB deleted, overwritten or held by another process's
``BEGIN EXCLUSIVE``; the audit store deleted, overwritten or locked) and runs
``sandbox serve`` and ``sandbox dataset list`` on it for real.  ``serve`` must exit
non-zero on every case with one line that names the file and the problem, no
traceback, and must not have replaced a missing file with an empty one.
``dataset list`` reads only the control plane: it must refuse the control-plane
cases the same way and still work for the others (a lock does not stop readers
under WAL).  All cases run in parallel; the slowest waits out the 5 s lock probe.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import free_port
from tests.conftest import build_deployment


def overwrite(name: str, offset: int = 0, size: int = 4096) -> Callable[[Path], None]:
    def damage(home: Path) -> None:
        with open(home / name, "r+b") as handle:
            handle.seek(offset)
            handle.write(os.urandom(size))

    return damage


def truncate(name: str, fraction: float) -> Callable[[Path], None]:
    def damage(home: Path) -> None:
        path = home / name
        os.truncate(path, int(path.stat().st_size * fraction))

    return damage


def delete(name: str) -> Callable[[Path], None]:
    def damage(home: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            (home / f"{name}{suffix}").unlink(missing_ok=True)

    return damage


@dataclass(frozen=True)
class Case:
    damage: Callable[[Path], None]
    file: str  # the file the message must name
    words: tuple[str, ...]  # what the message must say about it
    control_plane: bool = False  # `dataset list` must refuse it too
    lock: str | None = None  # a database another process holds with BEGIN EXCLUSIVE


CASES = {
    "enclave-overwritten": Case(overwrite("enclave.duckdb"), "enclave.duckdb", ("not a DuckDB",)),
    "enclave-header-block": Case(overwrite("enclave.duckdb", 4096), "enclave.duckdb", ("damaged",)),
    "enclave-truncated": Case(truncate("enclave.duckdb", 0.33), "enclave.duckdb", ("truncated",)),
    "enclave-empty": Case(truncate("enclave.duckdb", 0), "enclave.duckdb", ("not a DuckDB",)),
    "enclave-missing": Case(delete("enclave.duckdb"), "enclave.duckdb", ("does not exist",)),
    "control-missing": Case(delete("control.db"), "control.db", ("missing",), control_plane=True),
    "control-overwritten": Case(
        overwrite("control.db", 0, 100), "control.db", ("not an SQLite",), control_plane=True
    ),
    "control-locked": Case(lambda _h: None, "control.db", ("locked",), lock="control.db"),
    "audit-missing": Case(delete("audit.db"), "audit.db", ("missing", "history")),
    "audit-overwritten": Case(overwrite("audit.db", 0, 100), "audit.db", ("not an SQLite",)),
    "audit-locked": Case(lambda _h: None, "audit.db", ("locked",), lock="audit.db"),
}


@dataclass
class Run:
    returncode: int | None  # None: still running after the timeout (it started serving)
    stderr: str


@dataclass
class Outcome:
    home: Path
    serve: Run
    listing: Run


def run_all(commands: dict[str, tuple[list[str], Path]], timeout_s: float = 45) -> dict[str, Run]:
    """Run every command at once; kill (and report None for) what still runs at the timeout."""
    procs = {
        key: subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", *argv],
            env=dict(os.environ, SANDBOX_HOME=str(home)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for key, (argv, home) in commands.items()
    }
    runs = {}
    for key, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=timeout_s)
            runs[key] = Run(proc.returncode, err)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            runs[key] = Run(None, err)
    return runs


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Every case on its own copy of one demo home, all run in parallel."""
    root = tmp_path_factory.mktemp("startup")
    platform, _tokens = build_deployment(root / "pristine")
    platform.close()
    locks: list[sqlite3.Connection] = []
    commands: dict[str, tuple[list[str], Path]] = {}
    homes = {}
    for name, case in CASES.items():
        home = root / name / "home"
        shutil.copytree(root / "pristine", home)
        if (root / "pristine.master.key").exists():  # the master key lives beside the home
            shutil.copy2(root / "pristine.master.key", home.parent / "home.master.key")
        case.damage(home)
        if case.lock is not None:
            holder = sqlite3.connect(home / case.lock, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            locks.append(holder)
        homes[name] = home
        commands[f"{name} serve"] = (["serve", "--port", str(free_port())], home)
        commands[f"{name} list"] = (["--home", str(home), "dataset", "list"], home)
    try:
        runs = run_all(commands)
    finally:
        for holder in locks:
            holder.close()
    yield {
        name: Outcome(homes[name], runs[f"{name} serve"], runs[f"{name} list"]) for name in CASES
    }


def assert_one_clear_line(run: Run, case: Case, home: Path) -> None:
    assert run.returncode not in (None, 0), f"exit {run.returncode}: {run.stderr[-500:]}"
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr[-1500:]
    line = lines[0]
    assert "Traceback" not in line and line.startswith("error["), line
    assert str(home / case.file) in line, line
    for word in case.words:
        assert word in line, line


@pytest.mark.parametrize("name", list(CASES))
def test_a_damaged_home_is_refused_at_start(name: str, outcomes: dict[str, Outcome]) -> None:
    case, outcome = CASES[name], outcomes[name]
    assert_one_clear_line(outcome.serve, case, outcome.home)
    if case.control_plane:
        assert_one_clear_line(outcome.listing, case, outcome.home)
    else:  # the catalog is intact: listing it works
        assert outcome.listing.returncode == 0, outcome.listing.stderr[-800:]
    # Nothing missing was silently recreated empty.
    if name.endswith("-missing"):
        assert not (outcome.home / case.file).exists()
