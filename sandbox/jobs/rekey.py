"""``sandbox keys rotate`` and ``sandbox keys reencrypt``: new master key, new data keys.

- :func:`rotate_master` re-wraps every data key under a new master key (the data is
  untouched).  With the key file provider the new key is written to ``FILE.new``
  (0600), the keyring is replaced, then ``FILE.new`` is renamed over ``FILE``; if
  the process dies between the two, opening the home says to finish that rename.
- :func:`reencrypt` draws new data keys and re-encrypts the data under them: the
  enclave file is copied into a new file under the new key (DuckDB ``COPY FROM
  DATABASE``), held results, cached releases and staged uploads are re-sealed, then
  the old keys are deleted.  It needs the servers of the home stopped (they hold the old key).

Both are recorded in the audit trail by the caller (``sandbox/cli/keys.py``).
This module lives in ``jobs`` because it rewrites the jobs' result table.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import duckdb
import sqlalchemy as sa

from sandbox.core.db import release_cache
from sandbox.core.errors import Conflict, EnclaveError
from sandbox.core.home_keys import keyring_path, master_key_path, provider_for
from sandbox.core.key_provider import FileKeyProvider, KeyProvider, generate_key_file
from sandbox.core.keyring import Keyring, load_keyring, save_keyring
from sandbox.core.sealed import open_blob, seal_blob
from sandbox.core.sealed_files import reseal
from sandbox.enclave.enclave import LOCKDOWN
from sandbox.jobs.tables import job_results, job_runners
from sandbox.platform import Platform

__all__ = ["Reencrypted", "Rotated", "reencrypt", "rotate_master"]


@dataclass(frozen=True)
class Rotated:
    old_fingerprint: str
    new_fingerprint: str
    data_keys: int


@dataclass(frozen=True)
class Reencrypted:
    retired: list[str]
    created: list[str]
    enclave_bytes: int
    results: int
    cached: int
    uploads: int = 0


def _keys(platform: Platform) -> Keyring:
    keys = platform.data_keys
    if keys is None:
        raise EnclaveError(
            "this home is not encrypted (no datakeys.json)", rule="keys.not_encrypted"
        )
    return keys


def rotate_master(platform: Platform, new_key_env: str | None = None) -> Rotated:
    """Re-wrap the data keys under a new master key (generated, or from ``new_key_env``)."""
    settings = platform.settings
    keys = _keys(platform)
    old = provider_for(settings)
    path = keyring_path(settings)
    if new_key_env is not None or settings.master_key_env:
        if not new_key_env:
            raise EnclaveError(
                "the master key comes from an environment variable: name the variable "
                "holding the new key with --new-key-env",
                rule="keys.rotate_needs_new_key",
            )
        from sandbox.core.key_provider import EnvKeyProvider

        new: KeyProvider = EnvKeyProvider(new_key_env, os.environ)
        _same(old, new)
        save_keyring(path, keys, new)
        return Rotated(old.fingerprint(), new.fingerprint(), len(keys.keys))
    file = master_key_path(settings)
    pending = file.with_name(file.name + ".new")
    pending.unlink(missing_ok=True)
    generate_key_file(pending)
    new = FileKeyProvider(pending)
    save_keyring(path, keys, new)
    os.replace(pending, file)
    load_keyring(path, FileKeyProvider(file))  # the home opens with the new key
    return Rotated(old.fingerprint(), new.fingerprint(), len(keys.keys))


def _same(old: KeyProvider, new: KeyProvider) -> None:
    if old.fingerprint() == new.fingerprint():
        raise EnclaveError("the new master key is the current one", rule="keys.rotate_same_key")


def _servers_running(platform: Platform) -> list[int]:
    with platform.engine.connect() as conn:
        rows = conn.execute(
            sa.select(job_runners.c.host, job_runners.c.pid).where(
                job_runners.c.stopped_at.is_(None)
            )
        ).all()
    alive = []
    for host, pid in rows:
        if host != socket.gethostname():
            alive.append(int(pid))  # another host's server: assume it runs
            continue
        try:
            os.kill(int(pid), 0)
            alive.append(int(pid))
        except ProcessLookupError:
            pass
        except PermissionError:
            alive.append(int(pid))
    return alive


def _copy_enclave(source: Path, old: bytes, target: Path, new: bytes) -> None:
    target.unlink(missing_ok=True)
    config = {k: v for k, v in LOCKDOWN.items() if k != "enable_external_access"}
    con = duckdb.connect(":memory:", config=dict(config, temp_directory=""))
    try:
        con.execute("SET force_mbedtls_unsafe = true")
        con.execute(f"ATTACH '{source}' AS old_enclave (ENCRYPTION_KEY '{old.hex()}', READ_ONLY)")
        con.execute(f"ATTACH '{target}' AS new_enclave (ENCRYPTION_KEY '{new.hex()}')")
        con.execute("COPY FROM DATABASE old_enclave TO new_enclave")
        con.execute("DETACH new_enclave")
    except duckdb.Error as exc:
        target.unlink(missing_ok=True)
        raise EnclaveError(
            f"the enclave could not be copied under the new key ({type(exc).__name__})",
            rule="keys.reencrypt_failed",
        ) from None
    finally:
        con.close()
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reseal(platform: Platform, old: Keyring, new: Keyring) -> tuple[int, int]:
    counts = []
    for table, key_col, data_col, prefix in (
        (job_results, job_results.c.job_id, "data", "job_results"),
        (release_cache, release_cache.c.key, "result", "release_cache"),
    ):
        n = 0
        with platform.engine.begin() as conn:
            for ident, data in conn.execute(sa.select(key_col, table.c[data_col])).all():
                context = f"{prefix}:{ident}"
                plain = open_blob(old, bytes(data), context)
                conn.execute(
                    sa.update(table)
                    .where(key_col == ident)
                    .values({data_col: seal_blob(new, plain, context)})
                )
                n += 1
        counts.append(n)
    return counts[0], counts[1]


def reencrypt(platform: Platform) -> Reencrypted:
    """New data keys for every purpose; the enclave and stored results re-encrypted under them."""
    settings = platform.settings
    old = _keys(platform)
    running = _servers_running(platform)
    if running:
        raise Conflict(
            f"servers of this home are running (pids {', '.join(map(str, running))}): "
            "stop them first; they hold the current data keys",
            rule="keys.servers_running",
        )
    provider = provider_for(settings)
    staged = old.with_new_keys()
    enclave = settings.enclave_path
    platform.enclave.close()
    target = enclave.with_name(enclave.name + ".reencrypt")
    _copy_enclave(enclave, old.active("enclave").key, target, staged.active("enclave").key)
    # From here the new keys must be on disk before the new file replaces the old one.
    save_keyring(keyring_path(settings), staged, provider)
    os.replace(target, enclave)
    results, cached = _reseal(platform, staged, staged)
    uploads = reseal(settings.staging_dir, staged)
    final = staged.without_retired()
    save_keyring(keyring_path(settings), final, provider)
    return Reencrypted(
        retired=[k.id for k in old.keys],
        created=[k.id for k in final.keys],
        enclave_bytes=enclave.stat().st_size,
        results=results,
        cached=cached,
        uploads=uploads,
    )
