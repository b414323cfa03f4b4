"""Opening a store connection: WAL is set once, and a locked file is waited for."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from audit.sqlite_pragmas import prepare_connection


class Flaky:
    """A driver connection whose first ``locked`` journal-mode PRAGMAs fail as SQLite's do."""

    def __init__(self, path: Path, locked: int) -> None:
        self.real = sqlite3.connect(path)
        self.locked = locked
        self.statements: list[str] = []
        self.isolation_level: str | None = ""

    def cursor(self) -> Flaky:
        return self

    def execute(self, sql: str) -> sqlite3.Cursor:
        self.statements.append(sql)
        if sql.startswith("PRAGMA journal_mode") and self.locked:
            self.locked -= 1
            raise sqlite3.OperationalError("database is locked")
        return self.real.execute(sql)

    def close(self) -> None:
        pass


def test_a_locked_switch_is_retried_until_it_succeeds(tmp_path: Path) -> None:
    conn = Flaky(tmp_path / "a.db", locked=3)
    slept: list[float] = []
    prepare_connection(conn, 30.0, sleep=slept.append)
    assert len(slept) == 3 and conn.isolation_level is None
    assert conn.real.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.statements[-1] == "PRAGMA synchronous=FULL"


def test_a_lock_outlasting_the_timeout_is_raised(tmp_path: Path) -> None:
    conn = Flaky(tmp_path / "b.db", locked=10**6)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        prepare_connection(conn, 1.0, sleep=sleep, clock=lambda: now[0])
    assert now[0] >= 1.0


def test_a_file_already_in_wal_mode_is_not_switched_again(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "c.db").execute("PRAGMA journal_mode=WAL").fetchone()
    conn = Flaky(tmp_path / "c.db", locked=0)
    prepare_connection(conn, 30.0)
    assert "PRAGMA journal_mode=WAL" not in conn.statements
