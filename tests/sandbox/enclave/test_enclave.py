"""The enclave's lockdown holds even for statements that got past the guard."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

from sandbox.core.errors import (
    EnclaveBusy,
    EnclaveError,
    Forbidden,
    QueryRefused,
    QueryTimeout,
    ResultTooLarge,
    SandboxError,
)
from sandbox.enclave.enclave import LIMITS_MESSAGE, Enclave

# Each of these must fail on the query connection, whatever the guard would have said.
LOCKDOWN_CASES = {
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "file_path_table": "SELECT * FROM '/etc/passwd'",
    "glob": "SELECT * FROM glob('/etc/*')",
    "copy_to": "COPY health.claims TO '/tmp/sandbox-leak.csv'",
    "copy_query_to": "COPY (SELECT 1) TO '/tmp/sandbox-leak.parquet' (FORMAT parquet)",
    "export_database": "EXPORT DATABASE '/tmp/sandbox-export'",
    "attach": "ATTACH '/tmp/sandbox-other.db' AS other",
    "attach_memory": "ATTACH ':memory:' AS other",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "set": "SET enable_external_access = true",
    "set_memory": "SET memory_limit = '100GB'",
    "set_global": "SET GLOBAL threads = 1",
    "reset": "RESET lock_configuration",
    "pragma": "PRAGMA threads = 1",
    "url": "SELECT * FROM 'https://example.com/data.csv'",
    "create_table": "CREATE TABLE health.copy AS SELECT 1 AS x",
    "insert": "INSERT INTO health.claims (claim_id) VALUES ('x')",
    "delete": "DELETE FROM health.claims",
    "drop": "DROP TABLE health.claims",
}


@pytest.mark.parametrize("name", sorted(LOCKDOWN_CASES))
def test_lockdown_refuses(demo_platform, name: str) -> None:
    if name == "attach_memory" and demo_platform.enclave.encryption_key is not None:
        # The encrypted enclave is attached to a writable in-memory instance, which allows
        # an in-memory ATTACH (nothing outside the process; sandbox/enclave/encrypted.py).
        demo_platform.enclave.query(LOCKDOWN_CASES[name])
        demo_platform.enclave.query("DETACH other")
        with pytest.raises(SandboxError):
            demo_platform.enclave.query("ATTACH '/tmp/sandbox-other-h.db' AS other_file")
        return
    with pytest.raises(SandboxError):
        demo_platform.enclave.query(LOCKDOWN_CASES[name])


def test_file_access_is_a_permission_error(demo_platform) -> None:
    with pytest.raises(Forbidden) as info:
        demo_platform.enclave.query("SELECT * FROM read_csv('/etc/passwd')")
    assert info.value.rule == "enclave.lockdown"
    assert "root" not in str(info.value)


def test_python_replacement_scan_is_off(demo_platform) -> None:
    secret_frame = pa.table({"x": [42]})  # noqa: F841 - visible in this scope on purpose
    with pytest.raises(QueryRefused) as info:  # a catalog error: bound, never run
        demo_platform.enclave.query("SELECT * FROM secret_frame")
    assert info.value.rule == "enclave.bind"


def test_settings_are_locked_and_applied(demo_platform) -> None:
    rows = demo_platform.enclave.query(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration'),"
        " current_setting('autoload_known_extensions'), current_setting('access_mode')"
    ).to_pylist()
    if demo_platform.enclave.encryption_key is None:
        assert list(rows[0].values()) == [False, True, False, "read_only"]
        return
    # Encrypted: the file is attached READ_ONLY to an in-memory instance, the only database.
    assert list(rows[0].values())[:3] == [False, True, False]
    databases = demo_platform.enclave.query(
        "SELECT database_name, readonly, encrypted FROM duckdb_databases() WHERE NOT internal"
    ).to_pylist()
    assert databases == [{"database_name": "enclave", "readonly": True, "encrypted": True}]


def test_aggregate_query_runs(demo_platform) -> None:
    table = demo_platform.enclave.query("SELECT count(*) AS n FROM health.claims")
    assert table.column("n").to_pylist() == [10_000]


def test_timeout_interrupts(demo_platform) -> None:
    with pytest.raises(QueryTimeout) as info:
        demo_platform.enclave.query("SELECT count(*) FROM range(100000000000) a", timeout_s=0.3)
    assert info.value.rule == "enclave.limits"
    assert info.value.message == LIMITS_MESSAGE
    # The connection is usable afterwards.
    assert demo_platform.enclave.query("SELECT 1 AS one").num_rows == 1


def test_result_size_limit(demo_platform) -> None:
    with pytest.raises(ResultTooLarge):
        demo_platform.enclave.query("SELECT * FROM range(50)", max_rows=10)
    assert demo_platform.enclave.query("SELECT * FROM range(10)", max_rows=10).num_rows == 10


def test_execution_errors_do_not_echo_values(demo_platform) -> None:
    with pytest.raises(QueryTimeout) as info:
        demo_platform.enclave.query("SELECT CAST(name AS INTEGER) FROM health.claims")
    message = str(info.value)
    names = demo_platform.enclave.query("SELECT DISTINCT name FROM health.claims LIMIT 50")
    assert not any(name in message for name in names.column("name").to_pylist())
    assert info.value.rule == "enclave.limits"


def test_failures_on_data_are_told_apart_by_nothing(tmp_path) -> None:
    """A timeout, a value that fails a cast and running out of memory: one error, one text.

    Each can be made to happen iff some row matches, so none may say which it was.
    """
    enclave = Enclave(tmp_path / "small.duckdb", memory_limit="64MB", threads=1)
    enclave.create()
    with enclave.writer() as con:
        con.execute("CREATE TABLE t AS SELECT 'name' || i::VARCHAR AS name FROM range(10000) r(i)")
    runs = {
        "timeout": ("SELECT count(*) FROM range(100000000000) a", 0.3),
        "value": ("SELECT CAST(name AS INTEGER) FROM t", None),
        "memory": ("SELECT length(string_agg(repeat(name, 1000), '')) FROM t", None),
    }
    seen = set()
    for kind, (sql, timeout_s) in runs.items():
        with pytest.raises(SandboxError) as info:
            enclave.query(sql, timeout_s=timeout_s)
        error = info.value
        seen.add((type(error), error.code, error.status, error.rule, error.message))
        assert error.rule == "enclave.limits", kind
    enclave.close()
    assert len(seen) == 1, seen


def test_missing_enclave_file_is_clear(tmp_path) -> None:
    with pytest.raises(EnclaveError) as info:
        Enclave(tmp_path / "absent.duckdb").query("SELECT 1")
    assert info.value.rule == "enclave.missing"


def test_corrupted_enclave_file_is_clear(tmp_path) -> None:
    path = tmp_path / "enclave.duckdb"
    path.write_bytes(b"this is not a duckdb file" * 100)
    with pytest.raises(EnclaveError) as info:
        Enclave(path).query("SELECT 1")
    assert info.value.rule == "enclave.open"


def test_enclave_held_by_another_process_is_busy(platform) -> None:
    path = platform.settings.enclave_path
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1] if sys.argv[2] == '-' "
            "else ':memory:'); sys.argv[2] == '-' or c.execute('SET force_mbedtls_unsafe = true')"
            ".execute(f\"ATTACH '{sys.argv[1]}' AS e (ENCRYPTION_KEY '{sys.argv[2]}')\"); "
            "print('ready', flush=True); time.sleep(30)",
            str(path),
            key.hex() if (key := platform.enclave.encryption_key) else "-",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(EnclaveBusy) as info:
            with platform.enclave.writer():
                pass
        assert info.value.status == 503
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
