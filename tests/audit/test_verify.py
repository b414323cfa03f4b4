"""`sandbox audit verify` and `verify_export` check what a signed export says, not just its hashes.

Each tamper here is *re-signed* with the platform's own key (what a compromised or
dishonest platform could do): the hash chain, the Merkle roots and the signatures all
hold, so only the entry check, the manifest check, or the key source can tell.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from audit import AuditTrail, KeyRing, verify_export
from audit.chain import GENESIS_HASH, entry_hash
from audit.entry import peek
from audit.keys import KeyRingError, read_public_keys
from audit.merkle import SHA256
from audit.signing import TreeHead, sign_tree_head
from audit.tree import MemoryTree
from sandbox.cli.main import main
from tests.audit.conftest import fill

N = 8  # entries; heads signed at sizes 1, 4, 7 and 8 (every 3, and the export's own)


@pytest.fixture
def keyring(tmp_path: Path) -> KeyRing:
    ring = KeyRing(tmp_path / "platform-keys")
    ring.ensure()
    return ring


@pytest.fixture
def export(tmp_path: Path, keyring: KeyRing) -> Path:
    with AuditTrail.open(f"sqlite:///{tmp_path / 'audit.db'}", keyring, sign_every_n=3) as trail:
        fill(trail, N)
        trail.export(tmp_path / "export")
    assert verify_export(tmp_path / "export").ok
    return tmp_path / "export"


def resign(export: Path, keyring: KeyRing, lines: list[bytes]) -> None:
    """Write ``lines`` as the export's entries, relinked, with heads re-signed at the same
    sizes and a manifest to match: everything a holder of the signing key can do."""
    chain, tree, relinked = GENESIS_HASH, MemoryTree(SHA256), []
    chains = [chain]
    for line in lines:
        _, old_prev = peek(line)
        line = line.replace(old_prev.hex().encode(), chain.hex().encode(), 1)
        chain = entry_hash(chain, line)
        relinked.append(line)
        chains.append(chain)
        tree.append(SHA256.hash_leaf(line))
    old = [TreeHead.from_dict(h) for h in head_lines(export)]
    heads = [
        sign_tree_head(
            keyring.active(),
            tree_size=h.tree_size,
            timestamp_ms=h.timestamp_ms,
            root_hash=tree.root(h.tree_size),
            chain_head=chains[h.tree_size],
        )
        for h in old
    ]
    (export / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in relinked))
    (export / "tree_heads.jsonl").write_text(
        "".join(json.dumps(h.to_dict(), sort_keys=True) + "\n" for h in heads)
    )
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["tree_head"] = heads[-1].to_dict()
    (export / "manifest.json").write_text(json.dumps(manifest))


def entries(export: Path) -> list[bytes]:
    return (export / "entries.jsonl").read_bytes().splitlines()


def verify(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(["audit", "verify", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out + err


# -- (a) the default check parses every entry ----------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        (b'"decision":"deny",', b'"decision":"deny","decision":"allow",', "repeats the member"),
        (b'"decision":"deny",', b'"decision":"allow","decision":"deny",', "repeats the member"),
        (b'"actor":"operator-', b'"actor":"\\u006fperator-', "not RFC 8785"),
        (b'"budget_spent":0.125', b'"budget_spent":1.25e-1', "not RFC 8785"),
        (b'"decision":"deny",', b'"decision": "deny",', "not RFC 8785"),
        (b'"role":"operator"', b'"role":""', "role must be a non-empty string"),
    ],
)
def test_a_signed_entry_that_is_not_canonical_fails_by_default(
    export: Path, keyring: KeyRing, old: bytes, new: bytes, why: str
) -> None:
    lines = entries(export)
    assert old in lines[3]  # entry 3 is a refusal (decision deny)
    resign(export, keyring, [*lines[:3], lines[3].replace(old, new, 1), *lines[4:]])
    for report in (verify_export(export), verify_export(export, strict=False)):
        assert not report.ok
        first = report.first_problem
        assert first is not None and (first.kind, first.seq) == ("malformed", 3), report.problems
        assert why in first.message
        assert {p.kind for p in report.problems} == {"malformed"}  # hashes and heads hold


@pytest.mark.parametrize(
    ("time", "why"),
    [
        (b"2026-02-30T00:00:00.000000Z", "not a valid date"),
        (b"2026-01-02T03:04:05.000006+00:00", "RFC 3339 UTC"),
        (b"2026-01-02T03:04:05.06Z", "RFC 3339 UTC"),
    ],
)
def test_an_entry_time_must_be_exact_and_real(
    export: Path, keyring: KeyRing, time: bytes, why: str
) -> None:
    lines = entries(export)
    forged = re.sub(rb'"time":"[^"]*"', b'"time":"' + time + b'"', lines[2])
    resign(export, keyring, [*lines[:2], forged, *lines[3:]])
    first = verify_export(export).first_problem
    assert first is not None and (first.kind, first.seq) == ("malformed", 2)
    assert why in first.message


def test_the_cli_fails_on_a_duplicate_key_without_strict(
    export: Path, keyring: KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = entries(export)
    forged = lines[3].replace(b'"decision":"deny",', b'"decision":"deny","decision":"allow",')
    resign(export, keyring, [*lines[:3], forged, *lines[4:]])
    code, out = verify(str(export), capsys=capsys)
    assert code == 1 and out.startswith("FAILED: entry 3: malformed:"), out
    code, out = verify(str(export), "--strict", capsys=capsys)  # still accepted, same result
    assert code == 1 and out.startswith("FAILED: entry 3: malformed:"), out


# -- (b) the manifest ---------------------------------------------------------------------


def edit_manifest(export: Path, **changes: object) -> None:
    manifest = json.loads((export / "manifest.json").read_text())
    manifest.update(changes)
    (export / "manifest.json").write_text(json.dumps(manifest))


def head_lines(export: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (export / "tree_heads.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"entries": N + 1}, f"says {N + 1} entries but entries.jsonl holds {N}"),
        ({"entries": "8"}, "says '8' entries"),
        ({"tree_heads": 2}, "says 2 tree heads but tree_heads.jsonl holds 4"),
        ({"exported_at": "yesterday"}, "exported_at 'yesterday'"),
        ({"tree_head": None}, "has no readable tree_head"),
    ],
)
def test_a_manifest_that_disagrees_is_a_problem(
    export: Path, changes: dict[str, object], says: str
) -> None:
    edit_manifest(export, **changes)
    report = verify_export(export)
    assert [p.kind for p in report.problems] == ["manifest"] and says in str(report.problems[0])


def test_the_manifest_head_must_be_a_signed_head_of_the_export(export: Path) -> None:
    heads = head_lines(export)
    edit_manifest(export, tree_head=heads[1])  # a genuine head, but not the export's own
    report = verify_export(export)
    assert [p.kind for p in report.problems] == ["manifest"]
    assert "size 4 but the export holds 8 entries" in str(report.problems[0])
    edit_manifest(export, tree_head={**heads[-1], "timestamp_ms": 1})  # not a head it holds
    report = verify_export(export)
    assert "not among the export's tree heads" in str(report.problems[0])


def test_a_deleted_entry_also_shows_in_the_manifest(export: Path) -> None:
    lines = entries(export)
    (export / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in lines[:5] + lines[6:]))
    report = verify_export(export)
    first = report.first_problem
    assert first is not None and (first.kind, first.seq) == ("sequence", 5)  # the cause first
    assert "manifest" in {p.kind for p in report.problems}


# -- (c) where the keys came from ---------------------------------------------------------


def test_the_ok_line_says_whose_keys_checked_the_signatures(
    export: Path, keyring: KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify(str(export), capsys=capsys)
    first = out.splitlines()[0]
    assert code == 0 and first.startswith(f"OK: {N} entries")
    assert "the export's own keys, which vouch for nothing" in first and "--keys" in first
    code, out = verify(str(export), "--keys", str(keyring.directory), capsys=capsys)
    first = out.splitlines()[0]
    assert code == 0 and f"checked with trusted keys from {keyring.directory}" in first
    assert "vouch for nothing" not in out
    code, out = verify(str(export), "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["key_source"] == "export"
    code, out = verify(str(export), "--json", "--keys", str(keyring.directory), capsys=capsys)
    assert code == 0 and json.loads(out)["key_source"] == "trusted"
    assert verify_export(export, public_keys=keyring.public_keys()).key_source == "trusted"


# -- (d) an unreadable key file is reported, and verification goes on ---------------------


def test_an_unreadable_key_file_is_a_warning_not_a_stop(
    export: Path, keyring: KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (pub,) = keyring.directory.glob("*.pub")
    (trusted / pub.name).write_bytes(pub.read_bytes())
    (trusted / "0123456789abcdef.pub").write_text("not base64 at all\n")
    (trusted / "fedcba9876543210.pub").write_bytes(pub.read_bytes())  # another key's id
    code, out = verify(str(export), "--keys", str(trusted), capsys=capsys)
    assert code == 0 and out.startswith("OK:"), out
    assert "warning: key file 0123456789abcdef.pub cannot be read" in out
    assert "warning: key file fedcba9876543210.pub does not hold the key of that id" in out
    code, out = verify(str(export), "--keys", str(trusted), "--json", capsys=capsys)
    assert code == 0 and len(json.loads(out)["warnings"]) == 2


def test_when_the_unreadable_key_is_the_signer_the_heads_fail(
    export: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (pub,) = (export / "keys").glob("*.pub")
    pub.write_text("AAAA\n")  # base64, but not 32 bytes
    report = verify_export(export)
    assert not report.ok and {p.kind for p in report.problems} >= {"unknown_key"}
    assert len(report.warnings) == 1 and pub.name in report.warnings[0]
    code, out = verify(str(export), capsys=capsys)
    assert code == 1 and out.startswith("FAILED:") and f"warning: key file {pub.name}" in out


def test_a_keys_directory_that_cannot_be_read_exits_2(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify(str(export), "--keys", str(tmp_path / "nowhere"), capsys=capsys)
    assert code == 2 and "is not a directory of public keys" in out
    with pytest.raises(KeyRingError):
        verify_export(export, keys_dir=tmp_path / "nowhere")


def test_read_public_keys_keeps_the_good_ones(keyring: KeyRing) -> None:
    (keyring.directory / "0000000000000000.pub").write_text("%%%\n")
    keys, problems = read_public_keys(keyring.directory)
    assert set(keys) == {keyring.active().key_id} and len(problems) == 1


def test_the_live_verifier_is_as_strict_as_the_offline_one(export: Path) -> None:
    """The same checker serves ``POST /v1/audit/verify`` (live) and the export: by default it
    parses every entry, so a relinked duplicate-key entry is malformed there too."""
    from audit.checker import Checker

    lines = entries(export)
    forged = lines[3].replace(b'"decision":"deny",', b'"decision":"deny","decision":"allow",')
    checker = Checker([], {})
    chain = GENESIS_HASH
    for line in [*lines[:3], forged, *lines[4:]]:
        _, old_prev = peek(line)
        line = line.replace(old_prev.hex().encode(), chain.hex().encode(), 1)
        chain, _ = checker.feed(line)
    problems = checker.finish().problems
    assert [(p.kind, p.seq) for p in problems] == [("malformed", 3)], problems
