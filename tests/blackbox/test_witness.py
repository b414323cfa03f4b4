"""Witnesses against the suite's live server: a bureau's witness cosigns the log's checkpoints
with `sandbox witness cosign`, the server collects and serves the cosigned checkpoint, and a
split view makes the witness refuse, keep the evidence and open an alert."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from audit import KeyRing
from audit.checkpoint import parse_checkpoint_text, sign_checkpoint
from audit.note import format_note, parse_note
from tests.blackbox.conftest import DemoHome, Server, call, sandbox


def _checkpoint(server: Server, token: str, query: str = "") -> str:
    request = urllib.request.Request(f"{server.url}/v1/audit/checkpoint{query}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode())


def _witness(demo: DemoHome, server: Server, account: str, state: Path) -> str:
    log_vkey = demo.run("witness", "log-key").out.strip()
    vkey = sandbox(
        "witness",
        "init",
        str(state),
        "--name",
        f"{account}.example.gov/witness",
        "--log-vkey",
        log_vkey,
    ).out.strip()
    assert (state / "witness.key").stat().st_mode & 0o777 == 0o600
    status, body = call(
        server, "PUT", f"/v1/admin/witnesses/{account}", demo.tokens["admin"], {"vkey": vkey}
    )
    assert status == 200, body
    return vkey


def test_a_bureau_witness_cosigns_and_the_server_serves_the_cosigned_checkpoint(
    server: Server, demo: DemoHome, tmp_path: Path
) -> None:
    token = demo.tokens["bureau-health"]
    state = tmp_path / "witness"
    _witness(demo, server, "bureau-health", state)
    first = sandbox("witness", "cosign", str(state), "--url", server.url, "--token", token)
    assert first.code == 0, first
    assert call(server, "POST", "/v1/audit/tree-head", demo.tokens["auditor"])[0] == 200
    second = sandbox("witness", "cosign", str(state), "--url", server.url, "--token", token)
    assert second.code == 0, second
    assert "(from " in second.out and "(from 0)" not in second.out  # checked a proof
    served = parse_note(_checkpoint(server, demo.tokens["auditor"], "?cosigned=true"))
    mine = parse_note((state / "checkpoint").read_text())
    assert served.text == mine.text
    assert "bureau-health.example.gov/witness" in [s.name for s in served.signatures]
    query = "action=audit.cosign&actor=bureau-health&newest_first=true&limit=1"
    status, page = call(server, "GET", f"/v1/audit/entries?{query}", demo.tokens["auditor"])
    assert status == 200 and page["entries"][0]["details"]["step"] == "cosign", page


def test_cosignatures_only_from_registered_witnesses(server: Server, demo: DemoHome) -> None:
    note = _checkpoint(server, demo.tokens["auditor"])
    body = {"checkpoint": note}
    status, answer = call(
        server, "POST", "/v1/audit/checkpoint/cosignatures", demo.tokens["bureau-transport"], body
    )
    assert status == 400 and answer["rule"] == "witness.not_registered", answer
    status, answer = call(server, "GET", "/v1/audit/checkpoint", demo.tokens["op-bank"])
    assert status == 403 and answer["rule"] == "role.not_permitted", answer


def test_a_split_view_is_refused_kept_and_alerted(
    server: Server, demo: DemoHome, tmp_path: Path
) -> None:
    state = tmp_path / "auditor-witness"
    _witness(demo, server, "auditor", state)
    token = demo.tokens["auditor"]
    assert sandbox("witness", "cosign", str(state), "--url", server.url, "--token", token).code == 0
    # The platform (its own key) showed this witness another tree of the same size.
    seen = parse_checkpoint_text(parse_note((state / "checkpoint").read_text()).text)
    fork = sign_checkpoint(
        KeyRing(demo.home / "keys").active(), seen.origin, seen.tree_size, b"\x42" * 32
    )
    (state / "checkpoint").write_text(format_note(fork))
    refused = sandbox("witness", "cosign", str(state), "--url", server.url, "--token", token)
    assert refused.code == 1 and "rule: witness.split_view" in refused.err, refused
    (evidence,) = (state / "evidence").glob("*.json")
    assert json.loads(evidence.read_text())["old_checkpoint"] == format_note(fork)
    status, alerts = call(server, "GET", "/v1/alerts?operator=auditor", token)
    assert status == 200, alerts
    found = [a for a in alerts if a["detector"] == "split_view"]
    assert found and found[0]["severity"] == "high", alerts
    # made-up evidence (not signed by the log) opens nothing and is refused by name
    body = {"old_checkpoint": "x\n1\n\n", "new_checkpoint": "y", "consistency_proof": []}
    status, answer = call(server, "POST", "/v1/audit/checkpoint/split-view", token, body)
    assert status == 400 and answer["rule"] == "witness.evidence_invalid", answer
