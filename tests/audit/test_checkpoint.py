"""Checkpoints, signed notes and cosignatures against the C2SP specs' published examples
(tests/audit/vectors/c2sp/examples.json) and against an independent parser written here
from the spec text alone (signed-note, tlog-checkpoint, tlog-cosignature), sharing no code
with ``audit/``."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import KeyRing
from audit.checkpoint import log_verifier, open_checkpoint, parse_checkpoint_text, sign_checkpoint
from audit.cosignature import cosign, cosignatures_by, cosigned_message, witness_verifier
from audit.errors import ProofError, SignatureError
from audit.note import ED25519, Note, format_note, key_id, parse_note, parse_vkey, vkey

VECTORS = json.loads((Path(__file__).parent / "vectors" / "c2sp" / "examples.json").read_text())


# -- the independent parser: from the spec text, nothing imported from audit/ ----------------


def spec_split(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """signed-note "Format": text ending in newline, a blank line, then lines
    "— <key name> <base64(4-byte key ID || signature)>"; the text is separated from the
    signatures by the last empty line."""
    assert note.endswith("\n")
    lines = note.split("\n")[:-1]
    last_blank = max(i for i, line in enumerate(lines) if line == "")
    text = "".join(line + "\n" for line in lines[:last_blank])
    sigs = []
    for line in lines[last_blank + 1 :]:
        assert line.startswith("\u2014 ")
        name, blob = line[2:].split(" ")
        raw = base64.standard_b64decode(blob)
        sigs.append((name, raw[:4], raw[4:]))
    return text, sigs


def spec_key_id(name: str, kind: int, public: bytes) -> bytes:
    """key ID = SHA-256(key name || 0x0A || signature type || public key)[:4]"""
    return hashlib.sha256(name.encode("utf-8") + b"\x0a" + bytes([kind]) + public).digest()[:4]


def spec_vkey(text: str) -> tuple[str, bytes, int, bytes]:
    """<key name>+hex(32-bit key ID)+base64(signature type || public key)"""
    name, hex_id, blob = text.split("+", 2)
    raw = base64.standard_b64decode(blob)
    return name, bytes.fromhex(hex_id), raw[0], raw[1:]


def spec_checkpoint(text: str) -> tuple[str, int, bytes]:
    """tlog-checkpoint "Note text": origin, decimal size, base64 root hash."""
    origin, size, root = text.split("\n")[:3]
    assert size == "0" or not size.startswith("0")
    return origin, int(size), base64.standard_b64decode(root)


def spec_ed25519_ok(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def spec_cosignature_ok(public: bytes, name: str, text: str, sig: tuple[str, bytes, bytes]) -> bool:
    """tlog-cosignature: key ID with type 0x04; u64 timestamp || Ed25519 signature over
    "cosignature/v1\\ntime <t>\\n" || the checkpoint text."""
    if sig[0] != name or sig[1] != spec_key_id(name, 0x04, public):
        return False
    (timestamp,) = struct.unpack(">Q", sig[2][:8])
    message = b"cosignature/v1\ntime %d\n" % timestamp + text.encode()
    return spec_ed25519_ok(public, sig[2][8:], message)


# -- the published examples ------------------------------------------------------------------


def test_signed_note_example_verifies_in_both_parsers() -> None:
    vector = VECTORS["signed_note"]
    name, kid, kind, public = spec_vkey(vector["vkey"])
    assert kind == ED25519 and kid == spec_key_id(name, kind, public)
    text, sigs = spec_split(vector["note"])
    assert text == vector["text"] and spec_ed25519_ok(public, sigs[0][2], text.encode())

    verifier = parse_vkey(vector["vkey"])
    note = parse_note(vector["note"])
    assert note.text == vector["text"] and format_note(note) == vector["note"]
    assert verifier.key_id == kid and verifier.matches(note.signatures[0])
    assert verifier.verify(note.text.encode(), note.signatures[0].signature)
    assert vkey(verifier.name, verifier.sig_type, verifier.public_key) == vector["vkey"]
    forged = vector["note"].replace("example message", "example massage")
    assert not verifier.verify(parse_note(forged).text.encode(), note.signatures[0].signature)


def test_a_vkey_whose_id_does_not_match_its_key_is_refused() -> None:
    good = VECTORS["signed_note"]["vkey"]
    with pytest.raises(ProofError, match="key id does not match"):
        parse_vkey(good.replace("+530d903a+", "+530d903b+"))


def test_the_text_ends_at_the_last_blank_line() -> None:
    vector = VECTORS["note_without_key"]
    note = parse_note(vector["note"])
    assert note.text == vector["text"] == spec_split(vector["note"])[0]
    assert [s.name for s in note.signatures] == ["quasimodo.example/salvatore"]


def test_checkpoint_and_cosignature_examples_parse_alike() -> None:
    vector, cosigned = VECTORS["checkpoint"], VECTORS["cosigned_checkpoint"]
    checkpoint = parse_checkpoint_text(parse_note(vector["note"]).text)
    assert (checkpoint.origin, checkpoint.tree_size) == (vector["origin"], vector["tree_size"])
    assert checkpoint.root_hash == base64.b64decode(vector["root_hash_b64"])
    assert spec_checkpoint(spec_split(vector["note"])[0]) == (
        checkpoint.origin,
        checkpoint.tree_size,
        checkpoint.root_hash,
    )
    note = parse_note(cosigned["note"])
    witness_line = note.signatures[1]
    assert witness_line.name == cosigned["witness"] and len(witness_line.signature) == 8 + 64
    (timestamp,) = struct.unpack(">Q", witness_line.signature[:8])
    assert timestamp == cosigned["cosignature_timestamp"]
    assert cosigned_message(note.text, timestamp).decode() == cosigned["cosigned_message"]
    # the example log and witness keys are not published: their lines are unknown keys,
    # ignored by the rules, so the note is rejected for want of a known log signature
    someone = log_verifier(vector["origin"], Ed25519PrivateKey.generate().public_key())
    with pytest.raises(SignatureError, match="no known log key"):
        open_checkpoint(cosigned["note"], [someone])


# -- what we sign, read by the independent parser -----------------------------------------------


@pytest.fixture(scope="module")
def log_key(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return KeyRing(tmp_path_factory.mktemp("log") / "keys").ensure()


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    origin=st.from_regex(r"[a-z0-9.-]{1,20}/[a-z0-9-]{1,12}", fullmatch=True),
)
def test_our_checkpoints_verify_with_the_independent_parser(
    log_key, size: int, root: bytes, origin: str
) -> None:  # type: ignore[no-untyped-def]
    note = sign_checkpoint(log_key, origin, size, root)
    text, sigs = spec_split(format_note(note))
    assert spec_checkpoint(text) == (origin, size, root)
    public = log_verifier(origin, log_key.public_key).public_key
    ((name, kid, signature),) = sigs
    assert name == origin and kid == spec_key_id(origin, 0x01, public)
    assert spec_ed25519_ok(public, signature, text.encode())
    assert open_checkpoint(format_note(note), [log_verifier(origin, log_key.public_key)])


def test_our_cosignatures_verify_with_the_independent_parser(log_key) -> None:  # type: ignore[no-untyped-def]
    note = sign_checkpoint(log_key, "sandbox.test/audit", 7, bytes(range(32)))
    witness = Ed25519PrivateKey.generate()
    line = cosign(note.text, "bureau.test/w1", witness, 1_796_198_462)
    full = format_note(Note(note.text, (*note.signatures, line)))
    text, sigs = spec_split(full)
    public = witness_verifier("bureau.test/w1", witness).public_key
    assert spec_cosignature_ok(public, "bureau.test/w1", text, sigs[1])
    assert not spec_cosignature_ok(public, "bureau.test/w1", text.replace("7\n", "8\n"), sigs[1])
    found, bad = cosignatures_by(parse_note(full), [witness_verifier("bureau.test/w1", witness)])
    assert [c.timestamp for c in found] == [1_796_198_462] and bad == []


def test_a_known_key_that_fails_rejects_the_note_and_unknown_keys_are_ignored(
    log_key, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    origin = "sandbox.test/audit"
    note = sign_checkpoint(log_key, origin, 3, b"\x01" * 32)
    log = log_verifier(origin, log_key.public_key)
    stranger = Ed25519PrivateKey.generate()
    extra = cosign(note.text, "elsewhere.test/w", stranger, 1)
    assert open_checkpoint(format_note(Note(note.text, (extra, *note.signatures))), [log])
    tampered = format_note(note).replace("\n3\n", "\n4\n")
    with pytest.raises(SignatureError, match="does not verify"):
        open_checkpoint(tampered, [log])
    # same name, another key: its key id differs, so it is ignored, and nothing known signed
    other = KeyRing(tmp_path / "other").ensure()
    with pytest.raises(SignatureError, match="no known log key"):
        open_checkpoint(format_note(sign_checkpoint(other, origin, 3, b"\x01" * 32)), [log])


@pytest.mark.parametrize(
    ("note", "why"),
    [
        ("a\n3\nAAAA\n\n\u2014 x AAAAAAA=\n", "root hash must be 32 bytes"),
        ("a\n03\n" + "A" * 43 + "=\n\n\u2014 x AAAAAAA=\n", "without leading zeroes"),
        ("a\n3\n\n\u2014 x AAAAAAA=\n", "at least three"),
    ],
)
def test_malformed_checkpoints_are_refused(note: str, why: str) -> None:
    with pytest.raises(ProofError, match=why):
        parse_checkpoint_text(parse_note(note).text)


@pytest.mark.parametrize(
    ("note", "why"),
    [
        ("text\n\u2014 x AAAAAAA=\n", "no blank line"),
        ("text\n\n- x AAAAAAA=\n", "em dash"),
        ("text\n\n\u2014 x A\n", "base64"),
        ("text\n\n\u2014 a+b AAAAAAA=\n", "key name"),
        ("te\x07xt\n\n\u2014 x AAAAAAA=\n", "control characters"),
        ("text\n\n", "at least one signature"),
    ],
)
def test_malformed_notes_are_refused(note: str, why: str) -> None:
    with pytest.raises(ProofError, match=why):
        parse_note(note)


def test_key_id_is_the_spec_formula() -> None:
    public = bytes(range(32))
    assert key_id("a.example/b", 4, public) == spec_key_id("a.example/b", 4, public)
