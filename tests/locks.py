"""Holding a SQLite database's cross-process writer lock from another process."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HOLDER = """
import sys
from sandbox.core.writer_lock import WriterLock
lock = WriterLock.beside("sqlite", sys.argv[1])
with lock.held():
    print("held", flush=True)
    sys.stdin.readline()
"""


@contextmanager
def holding() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """``hold(database)``: another process holding a database's writer lock until
    :func:`release`; killed at the end if still running."""
    started: list[subprocess.Popen[str]] = []

    def hold(database: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(database)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    try:
        yield hold
    finally:
        for proc in started:
            proc.kill()
            proc.wait(10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(10) == 0


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def run() -> None:
        fn()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done
