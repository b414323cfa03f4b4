"""Encryption at rest, as an operator of the installed command sees it (issue 19 part 1).

One demo home (a copy of the session's, with its master key beside it): the enclave
file does not open without its key and opens with it; a wrong, missing or readable-by-
others master key makes ``sandbox serve`` and ``sandbox query`` exit with one line; a
cached release holds no plaintext value; rotate then reencrypt keeps every answer and
re-seals an upload awaiting registration.
"""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
from pathlib import Path

import duckdb
import pytest

from sandbox.core.home_keys import open_home_keyring
from sandbox.core.keyring import Keyring
from sandbox.core.sealed import key_id_of
from sandbox.core.sealed_files import plain_chunks, staged_writer
from sandbox.core.settings import Settings
from tests.blackbox.conftest import DemoHome, make_demo_home

QUERY = "SELECT gender, count(*) AS n FROM health.claims GROUP BY gender"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> DemoHome:
    return make_demo_home(tmp_path_factory.mktemp("encryption") / "home")


def key_file(home: DemoHome) -> Path:
    return home.home.parent / f"{home.home.name}.master.key"


def master_key(home: DemoHome) -> bytes:
    return base64.b64decode(key_file(home).read_text())


def enclave_key(home: DemoHome) -> str:
    from sandbox.core.home_keys import open_home_keyring
    from sandbox.core.settings import Settings

    keys = open_home_keyring(Settings(home=home.home))
    assert keys is not None
    return keys.active("enclave").key.hex()


def home_keyring(home: DemoHome) -> Keyring:
    keys = open_home_keyring(Settings(home=home.home))
    assert keys is not None
    return keys


def stage_upload(home: DemoHome) -> tuple[Path, bytes]:
    """An upload awaiting registration, sealed as the upload route writes it."""
    plain = b"person_id,cost\n" + b"".join(b"p%d,%d\n" % (i, i) for i in range(50))
    uploads = Settings(home=home.home).staging_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    path = uploads / "up_000000000000000000000001.csv"
    with path.open("xb") as out:
        sink = staged_writer(out, home_keyring(home))
        sink.write(plain)
        sink.close()
    assert b"p7," not in path.read_bytes()
    return path, plain


def test_enclave_unreadable_without_the_key_readable_with_it(home: DemoHome) -> None:
    path = home.home / "enclave.duckdb"
    with pytest.raises(duckdb.Error, match="encrypted"):
        duckdb.connect(str(path), read_only=True)
    wrong = os.urandom(32).hex()
    con = duckdb.connect(":memory:")
    with pytest.raises(duckdb.Error, match=r"(?i)key"):
        con.execute(f"ATTACH '{path}' AS e (ENCRYPTION_KEY '{wrong}', READ_ONLY)")
    con.execute(f"ATTACH '{path}' AS e (ENCRYPTION_KEY '{enclave_key(home)}', READ_ONLY)")
    rows = con.execute("SELECT count(*) FROM e.health.claims").fetchone()
    assert rows is not None and rows[0] > 0
    con.close()
    duckdb_cli = shutil.which("duckdb")
    if duckdb_cli:  # the duckdb command line, where installed, fails the same way
        import subprocess

        run = subprocess.run(
            [duckdb_cli, "-readonly", str(path), "-c", "SELECT 1"], capture_output=True, text=True
        )
        assert run.returncode != 0


def test_a_cached_release_holds_no_plaintext(home: DemoHome) -> None:
    out = home.run("query", "--token", home.tokens["op-insurer"], QUERY)
    assert out.code == 0, str(out)
    assert out.out.startswith("gender")
    con = sqlite3.connect(home.home / "control.db")
    blobs = [bytes(r[0]) for r in con.execute("SELECT result FROM release_cache")]
    con.close()
    assert blobs
    for blob in blobs:
        assert blob.startswith(b"SBXSEAL1")
        # An Arrow stream names its columns in clear: none is readable in the stored bytes.
        assert b"gender" not in blob


@pytest.mark.parametrize("damage", ["wrong", "missing", "loose"])
def test_a_bad_master_key_refuses_with_one_line(home: DemoHome, damage: str) -> None:
    path = key_file(home)
    saved = path.read_bytes()
    try:
        if damage == "wrong":
            path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
        elif damage == "missing":
            path.unlink()
        else:
            os.chmod(path, 0o644)
        rule = {"wrong": "keys.master_wrong", "missing": "keys.master_missing"}.get(
            damage, "keys.master_permissions"
        )
        commands = [("query", "--token", home.tokens["op-insurer"], QUERY)]
        if damage == "wrong":  # the server's start-up check, once (each run costs seconds)
            commands.append(("serve", "--port", "1"))
        for args in commands:
            run = home.run(*args)
            lines = [line for line in run.err.splitlines() if line.strip()]
            assert run.code != 0, str(run)
            assert len(lines) == 1 and f"(rule: {rule})" in lines[0], str(run)
            assert str(path) in lines[0]
            assert saved.decode().strip() not in run.out + run.err
    finally:
        path.write_bytes(saved)
        os.chmod(path, 0o600)


def test_rotate_then_reencrypt_keeps_every_answer(home: DemoHome) -> None:
    token = home.tokens["op-insurer"]
    before = home.run("query", "--token", token, QUERY)
    assert before.code == 0, str(before)
    old_master, old_enclave = master_key(home), enclave_key(home)

    rotated = home.run("keys", "rotate")
    assert rotated.code == 0, str(rotated)
    assert master_key(home) != old_master
    assert key_file(home).stat().st_mode & 0o777 == 0o600
    assert enclave_key(home) == old_enclave  # rotation re-wraps, the data key stays

    upload, plain = stage_upload(home)
    old_upload_key = key_id_of(upload.read_bytes()[:64])

    again = home.run("keys", "reencrypt")
    assert again.code == 0, str(again)
    assert '"uploads": 1' in again.out, str(again)
    assert enclave_key(home) != old_enclave
    keys = home_keyring(home)
    resealed = upload.read_bytes()
    assert key_id_of(resealed[:64]) == keys.active("uploads").id != old_upload_key
    assert old_upload_key not in [k.id for k in keys.keys] and b"p7," not in resealed
    assert b"".join(plain_chunks(upload, keys)) == plain
    con = duckdb.connect(":memory:")
    with pytest.raises(duckdb.Error):
        con.execute(
            f"ATTACH '{home.home / 'enclave.duckdb'}' AS e (ENCRYPTION_KEY '{old_enclave}', "
            "READ_ONLY)"
        )
    con.close()

    after = home.run("query", "--token", token, QUERY)  # the cached release, re-encrypted
    assert after.code == 0, str(after)
    assert after.out == before.out
    fresh = home.run("query", "--token", token, QUERY.replace("gender", "diagnosis_code"))
    assert fresh.code == 0, str(fresh)  # a new query reads the re-encrypted enclave

    con = sqlite3.connect(home.home / "audit.db")
    actions = [r[0] for r in con.execute("SELECT action FROM audit_entries ORDER BY seq")]
    con.close()
    assert [a for a in actions if a.startswith("keys.")] == ["keys.rotate", "keys.reencrypt"]
