"""The control plane's group-commit writer, on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sandbox.core.control_writer import GROUP_LOCK_KEY, ControlWriter
from sandbox.core.db import open_control_db
from tests.locks import holding, in_thread, release

_meta = sa.MetaData()
rows = sa.Table(
    "cw_rows",
    _meta,
    sa.Column("k", sa.Integer, primary_key=True),
    sa.Column("v", sa.Integer, nullable=False),
)


def _engine(url: str) -> Engine:
    engine = open_control_db(url)
    _meta.create_all(engine)
    return engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'control.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = _engine(url)
    yield engine
    engine.dispose()


def insert(k: int, v: int | None = None) -> Callable[[Connection], int]:
    def fn(conn: Connection) -> int:
        conn.execute(sa.insert(rows).values(k=k, v=k * 10 if v is None else v))
        return k

    return fn


def stored(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return {k: v for k, v in conn.execute(sa.select(rows.c.k, rows.c.v))}


def test_a_call_returns_its_value_after_commit(engine: Engine) -> None:
    writer = ControlWriter(engine)
    try:
        assert writer.run(insert(1)) == 1
        assert stored(engine) == {1: 10}  # visible to another connection: committed
    finally:
        writer.close()


class _Calls:
    """Calls made from threads while a first call holds the commit: they form one group."""

    def __init__(self, writer: ControlWriter) -> None:
        self.writer = writer
        self.release = threading.Event()
        running = threading.Event()

        def hold(conn: Connection) -> None:
            running.set()
            self.release.wait(10)

        self.threads = [threading.Thread(target=self._run, args=(0, hold))]
        self.outcomes: dict[int, tuple[Any, BaseException | None]] = {}
        self.threads[0].start()
        assert running.wait(10)

    def _run(self, n: int, fn: Callable[[Connection], Any]) -> None:
        try:
            self.outcomes[n] = (self.writer.run(fn), None)
        except BaseException as exc:
            self.outcomes[n] = (None, exc)

    def queue(self, *fns: Callable[[Connection], Any]) -> None:
        for fn in fns:
            thread = threading.Thread(target=self._run, args=(len(self.threads), fn))
            self.threads.append(thread)
            thread.start()
        deadline = time.monotonic() + 10
        while self.writer.waiting < len(fns) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert self.writer.waiting == len(fns)

    def finish(self) -> list[tuple[Any, BaseException | None]]:
        self.release.set()
        for thread in self.threads:
            thread.join(10)
        return [self.outcomes[n] for n in range(1, len(self.threads))]


def test_a_failing_call_is_rolled_back_alone(engine: Engine) -> None:
    """In one group: the duplicate key's write (and everything it did first) is undone;
    the calls before and after it commit."""
    writer = ControlWriter(engine)

    def half_then_fail(conn: Connection) -> None:
        conn.execute(sa.insert(rows).values(k=7, v=70))
        conn.execute(sa.insert(rows).values(k=1, v=0))  # duplicate key

    calls = _Calls(writer)
    groups = writer.groups
    calls.queue(insert(1), half_then_fail, insert(2))
    first, failed, last = calls.finish()
    assert first == (1, None)
    assert isinstance(failed[1], sa.exc.IntegrityError)
    assert last == (2, None)
    assert writer.groups == groups + 1  # the three queued calls shared one transaction
    assert stored(engine) == {1: 10, 2: 20}  # k=7 of the failed call is gone


def test_a_failing_call_alone_in_its_group_is_rolled_back(engine: Engine) -> None:
    """No savepoint when a call is alone: its transaction is rolled back in its stead,
    with the same outcome (its exception as raised, nothing of it written), and the
    writer goes on."""
    writer = ControlWriter(engine)
    try:
        writer.run(insert(1))

        def half_then_fail(conn: Connection) -> None:
            conn.execute(sa.insert(rows).values(k=7, v=70))
            conn.execute(sa.insert(rows).values(k=1, v=0))  # duplicate key

        groups = writer.groups
        with pytest.raises(sa.exc.IntegrityError):
            writer.run(half_then_fail)
        assert writer.groups == groups + 1
        assert stored(engine) == {1: 10}  # k=7 is gone
        assert writer.run(insert(2)) == 2
        assert stored(engine) == {1: 10, 2: 20}
    finally:
        writer.close()


def test_a_failed_transaction_statement_raises_as_sqlalchemy_would(engine: Engine) -> None:
    """BEGIN, SAVEPOINT and COMMIT go straight to the driver; their errors still reach
    the caller as SQLAlchemy's exception classes (what the error mapping knows)."""
    writer = ControlWriter(engine)
    writer._begin = "BEGIN NOT A STATEMENT"
    try:
        with pytest.raises(sa.exc.DBAPIError):
            writer.run(insert(1))
        assert stored(engine) == {}
    finally:
        writer.close()


def test_concurrent_callers_are_grouped_and_nothing_is_lost(engine: Engine) -> None:
    writer = ControlWriter(engine)
    errors: list[BaseException] = []

    def caller(base: int) -> None:
        try:
            for i in range(50):
                assert writer.run(insert(base + i)) == base + i
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(1000 * (n + 1),)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        writer.close()
    assert errors == []
    assert stored(engine) == {
        1000 * (n + 1) + i: (1000 * (n + 1) + i) * 10 for n in range(8) for i in range(50)
    }
    assert writer.groups <= 400  # one transaction per group, not per call


class _Abort(BaseException):
    """Not an ``Exception``: no savepoint takes it, it ends the group's transaction."""


def test_an_error_that_ends_the_transaction_fails_every_call_of_its_group(
    engine: Engine,
) -> None:
    writer = ControlWriter(engine)

    def abort(conn: Connection) -> None:
        conn.execute(sa.insert(rows).values(k=9, v=90))
        raise _Abort

    calls = _Calls(writer)
    calls.queue(insert(1), abort, insert(2))
    outcomes = calls.finish()
    assert [type(error) for _, error in outcomes] == [_Abort] * 3
    assert stored(engine) == {}  # fail closed: nothing of the group is stored
    assert writer.run(insert(3)) == 3  # the next group goes on
    assert stored(engine) == {3: 30}


def _read_only_engine(path: Path) -> Engine:
    return sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")


def test_a_database_that_cannot_write_fails_the_call(tmp_path: Path) -> None:
    path = tmp_path / "control.db"
    _engine(f"sqlite:///{path}").dispose()
    path.chmod(0o444)
    try:
        engine = _read_only_engine(path)
        writer = ControlWriter(engine)
        with pytest.raises(sa.exc.OperationalError):
            writer.run(insert(2))
        writer.close()
        engine.dispose()
    finally:
        path.chmod(0o644)


def test_closed_writer_refuses_and_a_call_cannot_queue_another(engine: Engine) -> None:
    writer = ControlWriter(engine)

    def nested(conn: Connection) -> int:
        return writer.run(insert(3))

    with pytest.raises(RuntimeError, match="cannot queue another"):
        writer.run(nested)
    assert stored(engine) == {}
    writer.close()
    writer.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        writer.run(insert(4))
    assert stored(engine) == {}


def test_group_size_must_be_positive(engine: Engine) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ControlWriter(engine, max_group=0)


def test_a_group_waits_for_another_process_holding_the_writer_lock(tmp_path: Path) -> None:
    """Across processes the writer takes the database's writer lock (sandbox.core.writer_lock)
    before its transaction: it waits, woken when the other process lets go."""
    database = tmp_path / "control.db"
    engine = open_control_db(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    writer = ControlWriter(engine)
    with holding() as hold:
        proc = hold(database)
        thread, done = in_thread(
            lambda: writer.run(lambda conn: conn.execute(sa.text("INSERT INTO t VALUES (1)")))
        )
        assert not done.wait(0.3)  # the group waits for the other process's writer
        release(proc)
        assert done.wait(10)
        thread.join(10)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
        writer.close()
        engine.dispose()


def test_a_writer_lock_held_too_long_fails_the_group_as_a_locked_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process stuck holding the lock: after the busy timeout the group fails as
    SQLite's own busy timeout fails it (OperationalError: the API answers 503)."""
    monkeypatch.setattr("sandbox.core.control_writer.BUSY_TIMEOUT_S", 0.2)
    database = tmp_path / "control.db"
    engine = _engine(f"sqlite:///{database}")
    writer = ControlWriter(engine)
    with holding() as hold:
        hold(database)
        with pytest.raises(sa.exc.OperationalError):
            writer.run(insert(1))
    assert writer.run(insert(2)) == 2  # the holder is gone: the writer goes on
    assert stored(engine) == {2: 20}
    writer.close()
    engine.dispose()


def test_a_call_that_swallows_a_database_error_is_never_told_it_committed(
    engine: Engine,
) -> None:
    """SQLite keeps the transaction after a failed statement: the call's other write
    commits, as the call asked.  PostgreSQL aborts it and would answer COMMIT with a
    silent ROLLBACK: there the call runs in a savepoint, whose RELEASE fails it."""
    writer = ControlWriter(engine)

    def swallow(conn: Connection) -> str:
        conn.execute(sa.insert(rows).values(k=5, v=50))
        try:
            conn.execute(sa.insert(rows).values(k=5, v=0))  # duplicate key
        except sa.exc.IntegrityError:
            pass
        return "ok"

    try:
        outcome: Any = writer.run(swallow)
    except sa.exc.DBAPIError as exc:
        outcome = exc
    if outcome == "ok":
        assert stored(engine) == {5: 50}
    else:
        assert engine.dialect.name == "postgresql" and stored(engine) == {}
    writer.close()


def _pg_engine(request: pytest.FixtureRequest) -> Engine:
    return _engine(request.getfixturevalue("pg_url"))


@pytest.mark.postgres
def test_two_hosts_groups_taking_rows_in_opposite_orders_both_commit(
    request: pytest.FixtureRequest,
) -> None:
    """Two hosts on one PostgreSQL, each with its own writer: one group updates row 1 then
    row 2, the other row 2 then row 1, at once.  Without the groups' advisory lock this is
    a deadlock, and PostgreSQL fails one group (every call in it); with it they commit one
    after the other."""
    first, second = _pg_engine(request), _pg_engine(request)
    ControlWriter(first).run(
        lambda conn: conn.execute(sa.insert(rows), [{"k": 1, "v": 0}, {"k": 2, "v": 0}])
    )
    start = threading.Barrier(2)

    def crossing(a: int, b: int) -> Callable[[Connection], str]:
        def fn(conn: Connection) -> str:
            bump = sa.update(rows).values(v=rows.c.v + 1)
            conn.execute(bump.where(rows.c.k == a))
            time.sleep(0.3)  # the other group has had time to take its first row
            conn.execute(bump.where(rows.c.k == b))
            return "ok"

        return fn

    outcomes: list[Any] = []

    def host(engine: Engine, a: int, b: int) -> None:
        writer = ControlWriter(engine)
        start.wait(5)
        try:
            outcomes.append(writer.run(crossing(a, b)))
        except Exception as exc:  # the deadlock's victim
            outcomes.append(exc)
        finally:
            writer.close()

    threads = [
        threading.Thread(target=host, args=(first, 1, 2)),
        threading.Thread(target=host, args=(second, 2, 1)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes == ["ok", "ok"]
    assert stored(first) == {1: 2, 2: 2}
    first.dispose()
    second.dispose()


@pytest.mark.postgres
def test_a_group_lock_held_too_long_by_another_host_fails_the_group_as_a_locked_database(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another host stuck inside a group: after the busy timeout the group fails with an
    OperationalError (the API answers 503), as on SQLite; once it lets go, writes go on."""
    monkeypatch.setattr("sandbox.core.control_writer.BUSY_TIMEOUT_S", 0.2)
    engine = _pg_engine(request)
    writer = ControlWriter(engine)
    with engine.connect() as other:
        other.exec_driver_sql(f"SELECT pg_advisory_lock({GROUP_LOCK_KEY})")
        began = time.monotonic()
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            writer.run(insert(1))
        assert time.monotonic() - began < 5
        other.exec_driver_sql(f"SELECT pg_advisory_unlock({GROUP_LOCK_KEY})")
        other.commit()
    assert writer.run(insert(2)) == 2
    assert stored(engine) == {2: 20}
    writer.close()
    engine.dispose()
