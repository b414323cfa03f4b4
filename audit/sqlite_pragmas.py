"""The PRAGMAs every SQLite connection of the audit store runs when it opens.

``journal_mode=WAL`` is persistent, but switching a new file to it needs the file's
exclusive lock, and SQLite answers "database is locked" at once in some lock
transitions instead of calling the busy handler (seen in CI: several processes opening
one fresh store at the same moment, one of them failing its first append).  So the
switch is retried until the store's lock timeout, and skipped where the file is
already in WAL mode.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

__all__ = ["prepare_connection"]


def prepare_connection(
    dbapi_conn: Any,
    timeout_s: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Busy timeout, WAL (retried while locked, up to ``timeout_s``), ``synchronous=FULL``."""
    dbapi_conn.isolation_level = None  # the store issues BEGIN itself
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        deadline = clock() + timeout_s
        pause = 0.005
        while True:
            try:
                (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
                if str(mode).lower() != "wal":
                    cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or clock() >= deadline:
                    raise
                sleep(pause)
                pause = min(pause * 2, 0.1)
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()
