"""A PostgreSQL import on the host console never makes a served query wait for its read.

Black box, against a real PostgreSQL (``tests/pgserver.py``) and ``sandbox serve`` on
the same home as its own process: ``sandbox dataset register --source postgresql://…``
streams the table in its confined child (``connectors.convert``) with no enclave lock
held; only the swap-in of the finished file takes the writer, and the server lets go
of the enclave for it.  The order is made certain without any timing: the import's
child is stopped (SIGSTOP) mid-read, a query through the server is answered, the
import is seen still running with the enclave's write intent free, then the child
continues and the import completes.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.blackbox.conftest import (
    SANDBOX,
    Result,
    _free_port,
    clean_env,
    make_demo_home,
    sandbox,
    wait_healthy,
)
from tests.connectors.helpers import CLASSIFICATION

ROWS = 400_000
#: op-insurer's grant is dp: answered at once (noised); each variant runs (no cache).
RELEASED = "SELECT count(*) AS {name} FROM health.claims"


@contextmanager
def served(home: Path) -> Iterator[str]:
    """``sandbox serve`` on ``home`` as its own process group, until /health answers."""
    port = _free_port()
    log = home.parent / f"serve-{port}.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [SANDBOX, "--home", str(home), "serve", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log.read_text)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _descendants(root: int) -> dict[int, bytes]:
    """Every process below ``root`` with its command line."""
    parents: dict[int, int] = {}
    lines: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            lines[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, bytes] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = lines.get(pid, b"")
                frontier.append(pid)
    return found


def _intent_free(home: Path) -> bool:
    """No writer holds or waits for the enclave (the write intent can be shared now)."""
    fd = os.open(home / ".enclave.intent", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _query(url: str, token: str, name: str) -> Result:
    sql = RELEASED.format(name=name)
    return sandbox("query", "--url", url, "--token", token, "--format", "json", sql)


@pytest.fixture
def big_table(pg_url: str) -> str:
    libpq = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA clinic")
        conn.execute(
            "CREATE TABLE clinic.visits AS SELECT 'P' || lpad(i::text, 7, '0') AS person_id, "
            "'D' || lpad((i % 7 + 1)::text, 2, '0') AS district, (i % 1000)::float8 AS amount "
            f"FROM generate_series(1, {ROWS}) AS s(i)"
        )
    return libpq


def test_a_served_query_answers_while_a_postgresql_import_reads(
    tmp_path: Path, big_table: str
) -> None:
    home = make_demo_home(tmp_path / "home").home
    token = json.loads((home / "demo-tokens.json").read_text())["op-insurer"]
    toml = tmp_path / "visits.toml"
    toml.write_text(CLASSIFICATION)
    with served(home) as url:
        first = _query(url, token, "first")  # the server now holds the enclave open for reading
        assert first.code == 0, str(first)
        command = [SANDBOX, "--home", str(home), "dataset", "register", str(toml)]
        command += ["--source", big_table, "--table", "clinic.visits"]
        importer = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
            text=True,
        )
        try:
            child = None
            while child is None:
                running = _descendants(importer.pid)
                child = next(
                    (p for p, line in running.items() if b"connectors.convert" in line), None
                )
                if child is None:
                    assert importer.poll() is None, (
                        "the import ended without reading in a child: "
                        f"{importer.communicate(timeout=60)}"
                    )
                    time.sleep(0.002)
            os.kill(child, signal.SIGSTOP)  # mid-read: the table is not finished
            try:
                during = _query(url, token, "during")  # a new query: it reads the enclave
                assert during.code == 0, str(during)
                assert len(json.loads(during.out)["rows"]) == len(json.loads(first.out)["rows"])
                assert importer.poll() is None, "the import is still reading"
                assert _intent_free(home), "the import asked for no enclave lock while reading"
            finally:
                os.kill(child, signal.SIGCONT)
            out, err = importer.communicate(timeout=300)
        finally:
            if importer.poll() is None:
                importer.kill()
                importer.wait()
        assert importer.returncode == 0, out + err
        assert "Traceback" not in out + err
        assert f"registered health.visits v1: {ROWS} rows" in out, out
        after = _query(url, token, "after")  # the server reopened the enclave after the swap-in
        assert after.code == 0, str(after)
    listed = sandbox("--home", str(home), "dataset", "show", "health.visits", "--json")
    assert listed.code == 0 and json.loads(listed.out)["row_count"] == ROWS, str(listed)
