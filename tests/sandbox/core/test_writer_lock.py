"""The cross-process writer lock of a SQLite database file, against real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.core.writer_lock import SUFFIX, LockTimeout, WriterLock
from tests.locks import holding, in_thread, release


@pytest.fixture
def holder() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    with holding() as hold:
        yield hold


def test_only_a_sqlite_file_has_a_lock(tmp_path: Path) -> None:
    database = str(tmp_path / "control.db")
    assert WriterLock.beside("sqlite", database).path == Path(database + SUFFIX)
    for dialect, name in [
        ("postgresql", "sandbox"),
        ("sqlite", ":memory:"),
        ("sqlite", ""),
        ("sqlite", None),
        ("sqlite", f"file:{database}?mode=ro"),
    ]:
        lock = WriterLock.beside(dialect, name)
        assert not lock.active
        with lock.held():  # does nothing, never blocks
            pass


def test_a_writer_waits_for_another_process_and_goes_on_when_it_lets_go(
    tmp_path: Path, holder: Callable[[Path], subprocess.Popen[str]]
) -> None:
    database = tmp_path / "control.db"
    proc = holder(database)
    lock = WriterLock.beside("sqlite", str(database))

    def take() -> None:
        with lock.held():
            pass

    thread, done = in_thread(take)
    assert not done.wait(0.3)  # still held by the other process
    release(proc)
    assert done.wait(10)
    thread.join(10)
    lock.close()


def test_the_lock_of_a_killed_holder_is_free(
    tmp_path: Path, holder: Callable[[Path], subprocess.Popen[str]]
) -> None:
    database = tmp_path / "audit.db"
    proc = holder(database)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    lock = WriterLock.beside("sqlite", str(database))

    def take() -> None:
        with lock.held():
            pass

    thread, done = in_thread(take)
    assert done.wait(10)  # the kernel released the dead process's lock
    thread.join(10)
    lock.close()


def test_a_lock_held_too_long_times_out_and_a_late_grant_is_not_kept(
    tmp_path: Path, holder: Callable[[Path], subprocess.Popen[str]]
) -> None:
    """Bounded like SQLite's busy timeout.  The waiting thread left behind gets the lock
    once the holder lets go and gives it back at once: the next caller takes it."""
    database = tmp_path / "control.db"
    proc = holder(database)
    lock = WriterLock.beside("sqlite", str(database), timeout_s=0.2)
    with pytest.raises(LockTimeout), lock.held():
        pytest.fail("the lock was held by the other process")
    release(proc)
    other = holder(database)  # the abandoned wait let go: another process takes it
    release(other)
    with lock.held():  # and so does this one, on a descriptor of its own
        pass
    lock.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_lock_file(tmp_path: Path) -> None:
    """flock locks an open file description: a child using its parent's would share the
    parent's lock instead of waiting for it."""
    lock = WriterLock.beside("sqlite", str(tmp_path / "control.db"))
    with lock.held():
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: blocks until the parent lets go
            os.close(read)
            with lock.held():
                os.write(write, b"x")
            os._exit(0)
        os.close(write)
        os.set_blocking(read, False)
        threading.Event().wait(0.3)
        with pytest.raises(BlockingIOError):
            os.read(read, 1)  # the child is still waiting
    os.set_blocking(read, True)
    assert os.read(read, 1) == b"x"
    assert os.waitpid(pid, 0)[1] == 0
    lock.close()


def test_a_lock_file_that_cannot_be_opened_is_gone_without(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Correctness never depends on the lock: writes go on (waiting in SQLite's busy
    handler, as before the lock), and the log says why once."""
    database = tmp_path / "control.db"
    (tmp_path / ("control.db" + SUFFIX)).mkdir()  # something else in its place
    lock = WriterLock.beside("sqlite", str(database))
    with lock.held():
        pass
    with lock.held():
        pass
    assert not lock.active
    assert len([r for r in caplog.records if "writer lock" in r.getMessage()]) == 1
