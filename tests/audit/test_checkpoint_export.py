"""Exports carry the log's checkpoint, and `sandbox audit verify --witness-policy` holds them
to a quorum of witness cosignatures: the rewrite-and-re-sign attack (an export rewritten and
re-signed with a fresh key placed in its own keys/) verifies without a policy and fails
under one.  The installed command runs as a subprocess."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import KeyRing, verify_export
from audit.checkpoint import log_verifier, parse_checkpoint_text, sign_checkpoint
from audit.checkpoint_store import CheckpointStore
from audit.cosignature import cosign, witness_verifier
from audit.note import Note, format_note, parse_note
from audit.witness_policy import parse_policy
from tests.audit.test_verify import resign
from tests.blackbox.conftest import sandbox

WITNESSES = [Ed25519PrivateKey.generate() for _ in range(3)]
NAMES = [f"w{i}.example.gov/witness" for i in range(3)]


def _policy(k: int) -> str:
    lines = [
        f"witness W{i} {witness_verifier(n, key).vkey()}"
        for i, (n, key) in enumerate(zip(NAMES, WITNESSES, strict=True))
    ]
    return "\n".join(
        ["# bureaus' witnesses", *lines, f"group bureaus {k} W0 W1 W2", "quorum bureaus", ""]
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("witnessed")
    home = root / "home"
    log_vkey = sandbox("--home", str(home), "witness", "log-key").out.strip()
    sandbox("--home", str(home), "audit", "sign")  # a head of size 0, then its entry
    head = json.loads(sandbox("--home", str(home), "audit", "sign").out)
    assert head["tree_size"] == 1
    origin = (home / "checkpoints" / "ORIGIN").read_text().strip()
    assert log_vkey.startswith(origin + "+")
    # what the server does when two of the three witnesses post cosignatures
    store = CheckpointStore(home / "checkpoints", origin)
    note = store.publish(
        KeyRing(home / "keys").active(), head["tree_size"], bytes.fromhex(head["root_hash"])
    )
    for name, key in list(zip(NAMES, WITNESSES, strict=True))[:2]:
        line = cosign(note.text, name, key, 1_796_198_462)
        store.add_cosignature(
            Note(note.text, (*note.signatures, line)), witness_verifier(name, key)
        )
    sandbox("--home", str(home), "audit", "export", "--out", str(root / "export"))
    for k in (2, 3):
        (root / f"policy-{k}.txt").write_text(_policy(k))
    (root / "log.vkey").write_text(log_vkey)
    return {"root": root, "export": root / "export"}


def verify(export: Path, *extra: str) -> tuple[int, str]:
    result = sandbox("audit", "verify", str(export), *extra)
    return result.code, result.out + result.err


def test_the_export_carries_the_cosigned_checkpoint_and_meets_a_2_of_3_policy(made) -> None:  # type: ignore[no-untyped-def]
    note = parse_note((made["export"] / "checkpoint").read_bytes())
    assert [s.name for s in note.signatures][1:] == NAMES[:2]
    code, out = verify(made["export"], "--witness-policy", str(made["root"] / "policy-2.txt"))
    assert code == 0, out
    assert "after the witnessed checkpoint" in out  # the export's own head came later


def test_a_3_of_3_policy_is_not_met(made) -> None:  # type: ignore[no-untyped-def]
    code, out = verify(made["export"], "--witness-policy", str(made["root"] / "policy-3.txt"))
    assert code == 1
    assert "witness: the checkpoint of size" in out and "wants 3 of 3" in out
    assert "valid ones are by W0, W1" in out


def test_rewrite_and_re_sign_with_a_fresh_key_fails_under_the_policy(made, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    forged = tmp_path / "forged"
    shutil.copytree(made["export"], forged)
    fresh = KeyRing(tmp_path / "fresh")
    key = fresh.ensure()
    lines = (forged / "entries.jsonl").read_bytes().splitlines()
    assert b'"action":"audit.sign"' in lines[0]
    resign(forged, fresh, [lines[0].replace(b'"audit.sign"', b'"audit.read"'), *lines[1:]])
    shutil.rmtree(forged / "keys")
    shutil.copytree(
        tmp_path / "fresh", forged / "keys", ignore=shutil.ignore_patterns("*.key", "ACTIVE")
    )
    # the forger re-signs the checkpoint too, over the new root, keeping the witness lines
    old = parse_note((forged / "checkpoint").read_bytes())
    checkpoint = parse_checkpoint_text(old.text)
    heads = [json.loads(x) for x in (forged / "tree_heads.jsonl").read_text().splitlines()]
    root = next(h["root_hash"] for h in heads if h["tree_size"] == checkpoint.tree_size)
    resigned = sign_checkpoint(key, checkpoint.origin, checkpoint.tree_size, bytes.fromhex(root))
    (forged / "checkpoint").write_text(
        format_note(Note(resigned.text, (*resigned.signatures, *old.signatures[1:])))
    )
    assert verify_export(forged).ok  # without a policy the forgery passes: the attack is real
    code, out = verify(forged, "--witness-policy", str(made["root"] / "policy-2.txt"))
    assert code == 1, out
    assert "lacks the policy's cosignatures" in out and "valid ones are by none" in out
    # keeping the witnessed checkpoint instead: the platform's key signed it, not the
    # fresh one, and its root is not the forged entries' (checked with the real key)
    shutil.copy(made["export"] / "checkpoint", forged / "checkpoint")
    report = verify_export(forged, witness_policy=parse_policy(_policy(2)))
    assert [p.kind for p in report.problems] == ["checkpoint"]
    assert "no known log key signed" in report.problems[0].message
    shutil.copytree(made["export"] / "keys", forged / "keys", dirs_exist_ok=True)
    report = verify_export(forged, witness_policy=parse_policy(_policy(2)))
    assert [p.kind for p in report.problems] == ["checkpoint"]
    assert "another root than the export's entries" in report.problems[0].message


def test_an_export_without_a_checkpoint_still_verifies_but_not_under_a_policy(
    made, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    old_format = tmp_path / "old"
    shutil.copytree(made["export"], old_format)
    (old_format / "checkpoint").unlink()
    assert verify_export(old_format).ok
    report = verify_export(old_format, witness_policy=parse_policy(_policy(2)))
    assert [p.kind for p in report.problems] == ["witness"]
    assert "no checkpoint file" in report.problems[0].message


def test_a_policy_may_name_the_log_key(made, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log_vkey = (made["root"] / "log.vkey").read_text()
    named = parse_policy(f"log {log_vkey}\n" + _policy(2))
    assert verify_export(made["export"], witness_policy=named).ok
    other = KeyRing(tmp_path / "other").ensure()
    origin = log_vkey.split("+")[0]
    stranger = parse_policy(f"log {log_verifier(origin, other.public_key).vkey()}\n" + _policy(2))
    report = verify_export(made["export"], witness_policy=stranger)
    assert [p.kind for p in report.problems] == ["checkpoint"]
    assert "no known log key signed" in report.problems[0].message
