"""Staged source files sealed at rest (sandbox.core.sealed_files), with real keys."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sandbox.core.errors import EnclaveError
from sandbox.core.keyring import Keyring, new_keyring
from sandbox.core.sealed import MAGIC, SEGMENT, key_id_of
from sandbox.core.sealed_files import (
    PLAIN_PREFIX,
    opened_plain,
    plain_digest,
    reseal,
    seal_copy,
    staged_writer,
)

KNOWN = b"110100000000000007"
# Over two segments, so the streaming path crosses segment boundaries.
PLAIN = b"person_id,id_number\n" + b"".join(
    b"p%d,%s\n" % (i, KNOWN) for i in range(2 * SEGMENT // 22 + 5)
)


def _write(path: Path, data: bytes, keys: Keyring | None) -> None:
    with path.open("xb") as out:
        sink = staged_writer(out, keys)
        for i in range(0, len(data), 65_536):
            sink.write(data[i : i + 65_536])
        sink.close()


def test_a_sealed_staged_file_holds_no_plaintext_and_opens_to_its_bytes(tmp_path: Path) -> None:
    keys = new_keyring()
    staged = tmp_path / "up_1.csv"
    _write(staged, PLAIN, keys)
    on_disk = staged.read_bytes()
    assert on_disk.startswith(MAGIC) and KNOWN not in on_disk
    assert key_id_of(on_disk[:64]) == keys.active("uploads").id
    assert plain_digest(staged, keys) == (hashlib.sha256(PLAIN).hexdigest(), len(PLAIN))
    with opened_plain(staged, keys) as (plain, sha256):
        assert plain.parent == tmp_path and plain.suffix == ".csv"
        assert plain.read_bytes() == PLAIN and sha256 == hashlib.sha256(PLAIN).hexdigest()
        assert plain.stat().st_mode & 0o777 == 0o600
    assert not plain.exists()
    with pytest.raises(RuntimeError), opened_plain(staged, keys) as (plain, _):
        raise RuntimeError("the connector failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["up_1.csv"]


def test_without_keys_a_staged_file_stays_plain(tmp_path: Path) -> None:
    staged = tmp_path / "up_2.csv"
    _write(staged, PLAIN, None)
    assert staged.read_bytes() == PLAIN
    with opened_plain(staged, None) as (plain, sha256):
        assert plain == staged and sha256 == hashlib.sha256(PLAIN).hexdigest()
    assert staged.exists()


def test_an_import_is_sealed_as_it_is_copied(tmp_path: Path) -> None:
    keys = new_keyring()
    source = tmp_path / "import.csv"
    source.write_bytes(PLAIN)
    kept = tmp_path / "kept.csv"
    seal_copy(source, kept, keys)
    assert KNOWN not in kept.read_bytes()
    assert plain_digest(kept, keys)[0] == hashlib.sha256(PLAIN).hexdigest()


@pytest.mark.parametrize("where", [0, 40, SEGMENT + 100, -5])
def test_a_damaged_or_cut_staged_file_is_refused(tmp_path: Path, where: int) -> None:
    keys = new_keyring()
    staged = tmp_path / "up_3.csv"
    _write(staged, PLAIN, keys)
    data = bytearray(staged.read_bytes())
    if where == -5:
        del data[-SEGMENT:]  # cut short by a whole segment
    else:
        data[len(MAGIC) + where] ^= 1
    staged.write_bytes(bytes(data))
    with pytest.raises(EnclaveError) as refused, opened_plain(staged, keys):
        pass
    assert refused.value.rule in ("keys.sealed_invalid", "keys.unknown_data_key")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["up_3.csv"]


def test_a_sealed_file_without_the_keyring_names_the_rule(tmp_path: Path) -> None:
    staged = tmp_path / "up_4.csv"
    _write(staged, PLAIN, new_keyring())
    with pytest.raises(EnclaveError) as refused:
        plain_digest(staged, None)
    assert refused.value.rule == "keys.keyring_missing"


def test_reseal_moves_every_staged_file_to_the_new_key(tmp_path: Path) -> None:
    old = new_keyring()
    uploads = tmp_path / "uploads"
    kept = tmp_path / "registrations" / "rg_1"
    uploads.mkdir()
    kept.mkdir(parents=True)
    _write(uploads / "up_5.csv", PLAIN, old)
    (uploads / "up_5.upload.json").write_text('{"owner": "bureau"}')
    _write(kept / "visits.csv", PLAIN, None)  # staged before encryption: plain
    (kept / f"{PLAIN_PREFIX}0-visits.csv").write_bytes(PLAIN)  # a crash's leftover
    staged = old.with_new_keys()
    assert reseal(tmp_path, staged) == 2
    final = staged.without_retired()
    assert old.active("uploads").id not in [k.id for k in final.keys]
    for path in (uploads / "up_5.csv", kept / "visits.csv"):
        data = path.read_bytes()
        assert KNOWN not in data and key_id_of(data[:64]) == final.active("uploads").id
        assert plain_digest(path, final)[0] == hashlib.sha256(PLAIN).hexdigest()
    assert (uploads / "up_5.upload.json").read_text() == '{"owner": "bureau"}'
    assert sorted(p.name for p in kept.iterdir()) == ["visits.csv"]
