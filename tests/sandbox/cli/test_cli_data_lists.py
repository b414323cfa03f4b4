"""`sandbox negative-list`, `sandbox dataset important` and `sandbox grant co-approve` as
users run them: the installed command as a subprocess, each role with its own token (the
host console, an admin, without one), each refusal by its rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies import Actor, Administration, Use
from sandbox.core.data_controls import ItemKind
from sandbox.core.settings import Settings
from sandbox.governance.applications import Applications, Asked
from sandbox.governance.data_lists import DataLists
from sandbox.platform import Platform
from tests.conftest import build_deployment
from tests.sandbox.cli.commands import ok, refused


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    home = tmp_path_factory.mktemp("cli-lists") / "home"
    platform, tokens = build_deployment(home)
    platform.close()
    return home, tokens


def test_negative_list_by_its_owners(home: tuple[Path, dict[str, str]]) -> None:
    path, tokens = home
    item = "health.claims.claim_amount"
    out = ok(path, "negative-list", "add", item, "--reason", "payment details",
             token=tokens["bureau-health"])  # fmt: skip
    assert f"{item} is prohibited" in out
    listed = json.loads(ok(path, "negative-list", "list", "--json", token=tokens["op-insurer"]))
    assert [(i["item"], i["kind"], i["added_by"]) for i in listed] == [
        (item, "prohibited", "bureau-health")
    ]
    item_id = listed[0]["id"]
    # The host console is an admin: it takes the item off, with a reason.
    assert "no longer prohibited" in ok(path, "negative-list", "remove", item_id, "--reason", "ok")


def test_important_data_and_co_approval(home: tuple[Path, dict[str, str]]) -> None:
    path, tokens = home
    out = ok(path, "dataset", "important", "mark", "market.enterprises", "--reason", "registry",
             token=tokens["bureau-market"])  # fmt: skip
    assert "market.enterprises is important" in out
    # The operator's application, waiting for both approvals (made in-process: the
    # commands it uses are tested in test_cli_governance.py).
    platform = Platform(Settings(home=path, threads=2))
    try:
        DataLists(platform).add(Actor.host("test"), ItemKind.LIMITED,
                                "health.claims.diagnosis_code", reason="diagnoses")  # fmt: skip
        operator = platform.authority.authenticate(tokens["op-insurer"])
        admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
        asked = Asked(dataset="health.claims", purpose_code="diagnosis-study",
                      purpose_text="claims by diagnosis", columns=("age", "diagnosis_code"),
                      duration_days=30, use=Use.PUBLIC_INTEREST)  # fmt: skip
        app_id = Applications(platform, admin).apply(operator, asked)["id"]
    finally:
        platform.close()
    refused(path, "negative.limited", "grant", "approve", app_id, token=tokens["bureau-health"])
    assert "co-approved" in ok(path, "grant", "co-approve", app_id, "--reason", "public health")
    ok(path, "grant", "approve", app_id, token=tokens["bureau-health"])
