"""Opening the enclave file, encrypted (DuckDB database encryption, AES-256-GCM) or not.

An encrypted file is attached to an in-memory database under the alias
:data:`ALIAS` with its data key (64 hex characters: 256 random bits from the OS,
wrapped in ``HOME/datakeys.json``); every cursor then runs ``USE enclave`` so
queries name tables as before; the in-memory database is detached.  External
access is switched off after the attach, so the connection can reach nothing but
this file, as the plain reader.  One difference: the plain reader's instance is
read-only, so it refuses even ``ATTACH ':memory:'``; this one allows that (the
SQL guard refuses every ATTACH before DuckDB sees it), which reaches nothing
outside the process and is bounded by ``memory_limit``, like ``CREATE TEMP
TABLE``, which both allow.

Writing uses DuckDB's built-in Mbed TLS AES-GCM with ``force_mbedtls_unsafe``
(the wheel ships no OpenSSL-backed httpfs for 2.0.1).  What that setting
weakens, and why it is acceptable here, is in docs/operations.md
("Encryption at rest"): block nonces come from a PCG32 seeded with 64 bits from
``getrandom``, so their uniqueness holds to 2^-32 only for about 2^16 blocks
under one key, and ``sandbox keys reencrypt`` writes the file anew under a
fresh key.
Authentication (the GCM tag of every block) is checked on every read.

Spilling to temporary files is off for an encrypted enclave (DuckDB's temporary
file encryption would use that weak generator for the key itself): a query that
does not fit ``memory_limit`` fails with ``enclave.limits``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from sandbox.core.errors import EnclaveError
from sandbox.core.settings import Settings

__all__ = ["ALIAS", "connect_home", "cursor_of", "open_connection"]

ALIAS = "enclave"


def open_connection(
    path: Path, *, read_only: bool, config: dict[str, Any], key: bytes | None
) -> duckdb.DuckDBPyConnection:
    """A connection to the enclave file; the caller locks the configuration afterwards."""
    if key is None:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.Error as exc:
            if "encrypted" in str(exc).lower():
                raise EnclaveError(
                    f"the enclave file {path.name} is encrypted but the home has no "
                    "datakeys.json: restore the keyring from its backup",
                    rule="keys.keyring_missing",
                ) from None
            raise
    options = {k: v for k, v in config.items() if k != "enable_external_access"}
    options["temp_directory"] = ""
    con = duckdb.connect(":memory:", config=options)
    try:
        if not read_only:
            con.execute("SET force_mbedtls_unsafe = true")
        mode = ", READ_ONLY" if read_only else ""
        literal = str(path).replace("'", "''")
        try:
            con.execute(f"ATTACH '{literal}' AS {ALIAS} (ENCRYPTION_KEY '{key.hex()}'{mode})")
        except duckdb.InvalidInputException as exc:
            if "encryption key" in str(exc).lower() or "wrong" in str(exc).lower():
                raise EnclaveError(
                    f"the enclave file {path.name} does not open with the home's enclave key "
                    "(another home's file, or its keyring was replaced)",
                    rule="keys.enclave_key_wrong",
                ) from None
            raise
        con.execute(f"USE {ALIAS}")
        con.execute("DETACH memory")  # no writable catalog beside the enclave
        con.execute("SET enable_external_access = false")
    except BaseException:
        con.close()
        raise
    return con


def cursor_of(con: duckdb.DuckDBPyConnection, key: bytes | None) -> duckdb.DuckDBPyConnection:
    """A cursor of ``con`` whose default database is the enclave."""
    cur = con.cursor()
    if key is not None:
        cur.execute(f"USE {ALIAS}")
    return cur


def connect_home(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A plain read-only connection to a home's enclave, with its key if it is encrypted
    (for benches and tests that read the file beside the platform; not locked down)."""
    from sandbox.core.home_keys import open_home_keyring

    keys = open_home_keyring(settings)
    key = None if keys is None else keys.active("enclave").key
    return open_connection(settings.enclave_path, read_only=True, config={}, key=key)
