"""The query watchdog: one thread, deadlines in a heap, disarmed ones never fire."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.core.errors import SandboxError
from sandbox.enclave.enclave import Enclave
from sandbox.enclave.watchdog import Watchdog


def test_fires_at_the_deadline_in_order_and_once() -> None:
    dog = Watchdog()
    fired: list[str] = []
    done = threading.Event()
    try:
        dog.arm(0.15, lambda: (fired.append("late"), done.set()))
        dog.arm(0.05, lambda: fired.append("early"))  # earlier than the armed one: wakes it
        started = time.monotonic()
        assert done.wait(5)
        assert time.monotonic() - started >= 0.14
        assert fired == ["early", "late"]
        assert dog.armed() == 0
    finally:
        dog.close()


def test_a_disarmed_deadline_never_fires() -> None:
    dog = Watchdog()
    fired = threading.Event()
    try:
        deadline = dog.arm(0.05, fired.set)
        deadline.disarm()
        deadline.disarm()  # twice is fine
        assert not fired.wait(0.2)
        assert dog.armed() == 0
    finally:
        dog.close()


def test_disarmed_entries_are_dropped_when_they_outnumber_the_armed() -> None:
    dog = Watchdog()
    try:
        for _ in range(1000):
            dog.arm(3600, lambda: None).disarm()
        assert dog.armed() == 0
        assert dog.held() <= 130  # compacted, not 1,000 entries waiting an hour
    finally:
        dog.close()


def test_a_failing_callback_does_not_stop_the_watchdog() -> None:
    dog = Watchdog()
    after = threading.Event()

    def fail() -> None:
        raise RuntimeError("the cursor is closed")

    try:
        dog.arm(0.01, fail)
        dog.arm(0.05, after.set)
        assert after.wait(5)
    finally:
        dog.close()


def test_close_drops_deadlines_and_a_later_arm_starts_again() -> None:
    dog = Watchdog()
    fired = threading.Event()
    dog.arm(0.05, fired.set)
    dog.close()
    assert not fired.wait(0.2)
    again = threading.Event()
    dog.arm(0.01, again.set)
    try:
        assert again.wait(5)
    finally:
        dog.close()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=20),
)
def test_exactly_the_armed_ones_fire(plan: list[tuple[int, bool]]) -> None:
    """Any mix of deadlines (ms) and disarms: the ones left armed fire, in deadline order."""
    dog = Watchdog()
    fired: list[int] = []
    lock = threading.Lock()

    def note(i: int) -> None:
        with lock:
            fired.append(i)

    try:
        deadlines = [dog.arm(ms / 1000, lambda i=i: note(i)) for i, (ms, _) in enumerate(plan)]
        late = set()  # disarmed only once their deadline had passed: they may have fired
        for i, (deadline, (_, disarm)) in enumerate(zip(deadlines, plan, strict=True)):
            if disarm:
                deadline.disarm()
                if time.monotonic() >= deadline.at:  # read after: a fire came before this
                    late.add(i)
        expected = [i for i, (_, disarm) in enumerate(plan) if not disarm]
        stop = time.monotonic() + 5
        while not set(expected) <= set(fired) and time.monotonic() < stop:
            time.sleep(0.005)
        time.sleep(0.01)
        assert len(fired) == len(set(fired))  # each at most once
        assert set(expected) <= set(fired)
        assert set(fired) - set(expected) <= late  # a disarm in time always holds
        # In the order of their deadlines, the instants armed: a later arm of a shorter
        # delay can fall due after an earlier arm of a longer one on a loaded host.
        order = [deadlines[i].at for i in fired]
        assert order == sorted(order)
    finally:
        dog.close()


def test_the_enclave_interrupts_a_query_at_its_timeout(tmp_path: Path) -> None:
    """A real DuckDB query that runs past its timeout fails with the one limits message."""
    path = tmp_path / "enclave.duckdb"
    duckdb.connect(str(path)).close()
    enclave = Enclave(path, memory_limit="500MB", threads=1, timeout_s=0.2, max_result_rows=10)
    try:
        started = time.monotonic()
        with pytest.raises(SandboxError) as caught:
            enclave.query("SELECT count(*) FROM range(10000000000) a")
        assert caught.value.rule == "enclave.limits"
        assert time.monotonic() - started < 30
        assert enclave.query("SELECT 42 AS x").column("x").to_pylist() == [42]
        assert enclave._watchdog.armed() == 0
    finally:
        enclave.close()
