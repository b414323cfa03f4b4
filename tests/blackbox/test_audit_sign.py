"""``POST /v1/audit/tree-head`` on the suite's live server: an auditor has a tree head
signed on demand, it covers everything committed, and the act is recorded."""

from __future__ import annotations

import base64

from audit import TreeHead, verify_tree_head
from audit.keys import public_key_from_b64
from tests.blackbox.conftest import DemoHome, Server, call


def test_an_auditor_has_a_tree_head_signed_on_demand(server: Server, demo: DemoHome) -> None:
    auditor = demo.tokens["auditor"]
    status, body = call(server, "POST", "/v1/audit/tree-head", auditor)
    assert status == 200, body
    head = TreeHead.from_dict(body)
    status, keys = call(server, "GET", "/v1/audit/keys", auditor)
    assert status == 200
    verify_tree_head(head, {k: public_key_from_b64(v) for k, v in keys.items()})
    assert base64.b64decode(body["signature"]) == head.signature
    # It is the newest head, and its own act is recorded after it.
    status, newest = call(server, "GET", "/v1/audit/tree-head", auditor)
    assert status == 200 and newest["tree_size"] >= head.tree_size
    query = "action=audit.sign&newest_first=true&limit=1"
    status, page = call(server, "GET", f"/v1/audit/entries?{query}", auditor)
    assert status == 200, page
    (entry,) = page["entries"]
    assert entry["actor"] == "auditor" and entry["decision"] == "allow"
    assert entry["details"]["tree_size"] == head.tree_size
    assert entry["details"]["authorized_as"] == "audit.export"


def test_an_operator_may_not_have_heads_signed(server: Server, demo: DemoHome) -> None:
    status, body = call(server, "POST", "/v1/audit/tree-head", demo.tokens["op-bank"])
    assert status == 403 and body["rule"] == "role.not_permitted", body
