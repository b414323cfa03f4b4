"""`sandbox registration|catalog` and `sandbox grant apply|approve|reject` as users run them.

The first registration of ``health.visits`` goes through the Python procedure with a
test clock (its publicity period passes without sleeping); the re-registration, in the
short form, and the grant application then run as subprocesses of the installed command.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from policies import Actor
from sandbox.core.settings import Settings
from sandbox.governance.registration_states import RegStep
from sandbox.governance.registrations import Registrations, SourceFile
from sandbox.platform import Platform
from tests.api.test_governance import CSV, VISITS, Clock
from tests.conftest import build_deployment
from tests.sandbox.cli.commands import ok, refused


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("cli-governance")
    home = root / "home"
    platform, tokens = build_deployment(home)
    platform.close()
    (root / "visits.toml").write_text(VISITS)
    (root / "visits.csv").write_text(CSV)
    # The first registration, full form, with a clock the test moves.
    clock = Clock()
    platform = Platform(Settings(home=home, threads=2))
    try:
        procedure = Registrations(platform, clock=clock)
        bureau = platform.authority.authenticate(tokens["bureau-health"])
        host = Actor.host("tests")
        app = procedure.apply(
            bureau,
            classification=VISITS,
            source=SourceFile(path=root / "visits.csv", name="visits.csv"),
            update_frequency="weekly",
        )
        procedure.step(host, app["id"], RegStep.ACCEPT)
        procedure.step(host, app["id"], RegStep.APPROVE, comment="fine")
        clock.now += timedelta(days=8)
        procedure.issue(host, app["id"])
    finally:
        platform.close()
    return home, tokens


def test_registration_short_form_and_catalog_over_the_command_line(
    home: tuple[Path, dict[str, str]],
) -> None:
    path, tokens = home
    files = path.parent
    out = ok(
        path,
        "registration",
        "apply",
        str(files / "visits.toml"),
        "--source",
        str(files / "visits.csv"),
        "--update-frequency",
        "weekly",
        "--commercial",
        "--price-per-query",
        "2.50",
        token=tokens["bureau-health"],
    )
    assert "(short form), applied" in out
    app_id = out.split()[1].rstrip(":")
    # A bureau does not accept (管运分离).
    refused(
        path, "registration.role", "registration", "accept", app_id, token=tokens["bureau-health"]
    )
    assert "accepted" in ok(path, "registration", "accept", app_id)
    assert "reviewed" in ok(path, "registration", "review", app_id, "--comment", "same columns")
    out = ok(path, "registration", "issue", app_id)
    assert "issued health.visits v2" in out
    shown = json.loads(ok(path, "registration", "show", app_id))
    assert [s["step"] for s in shown["steps"]] == ["apply", "accept", "approve", "issue"]

    listed = ok(path, "catalog", "list", token=tokens["op-bank"])
    assert "health.visits" in listed and "weekly" in listed
    shown_text = ok(path, "catalog", "show", "health.visits", token=tokens["op-bank"])
    assert "id_number        L4    identifier" in shown_text
    assert "5000" not in shown_text  # a declared bound is not shown


def test_grant_application_over_the_command_line(home: tuple[Path, dict[str, str]]) -> None:
    path, tokens = home
    ask = [
        "grant",
        "apply",
        "health.claims",
        "--purpose",
        "clinic-planning",
        "--purpose-text",
        "claims by district",
        "--column",
        "district",
        "--days",
        "30",
        "--use",
        "public_interest",
    ]
    refused(path, "application.role", *ask, token=tokens["bureau-health"])
    out = ok(path, *ask, token=tokens["op-planner"])
    app_id = out.split()[1].rstrip(":")
    refused(path, "application.unknown", "grant", "approve", app_id, token=tokens["bureau-market"])
    out = ok(path, "grant", "approve", app_id, "--k", "15", token=tokens["bureau-health"])
    assert f"{app_id} approved: grant gr_" in out
    second = ok(path, *ask, token=tokens["op-planner"]).split()[1].rstrip(":")
    refused(
        path,
        "application.reason",
        "grant",
        "reject",
        second,
        "--reason",
        " ",
        token=tokens["bureau-health"],
    )
    assert "rejected" in ok(
        path,
        "grant",
        "reject",
        second,
        "--reason",
        "one grant per purpose",
        token=tokens["bureau-health"],
    )
    third = ok(path, *ask, token=tokens["op-planner"]).split()[1].rstrip(":")
    assert "withdrawn" in ok(
        path, "grant", "withdraw-application", third, token=tokens["op-planner"]
    )
    mine = json.loads(ok(path, "grant", "applications", "--json", token=tokens["op-planner"]))
    states = {a["id"]: a["state"] for a in mine}
    assert states == {app_id: "approved", second: "rejected", third: "withdrawn"}
    assert json.loads(ok(path, "grant", "applications", "--json", token=tokens["op-bank"])) == []


def test_a_revision_without_a_file_over_the_command_line(
    home: tuple[Path, dict[str, str]],
) -> None:
    """`sandbox registration apply` without --source: a tightening is the short form, a
    loosening the revision form, with publicity."""
    path, tokens = home
    files = path.parent
    bureau = tokens["bureau-health"]
    tighter = VISITS.replace('[columns.district]\nlevel = "L1"', '[columns.district]\nlevel = "L2"')
    (files / "tighter.toml").write_text(tighter)
    (files / "looser.toml").write_text(tighter.replace("bounds = [0, 5000]", "bounds = [0, 9000]"))
    apply = ["registration", "apply", "--update-frequency", "weekly"]
    out = ok(path, *apply, str(files / "tighter.toml"), token=bureau)
    assert "(short form), applied" in out
    app_id = out.split()[1].rstrip(":")
    ok(path, "registration", "accept", app_id)
    assert "reviewed" in ok(path, "registration", "review", app_id, "--comment", "L2")
    assert "issued health.visits" in ok(path, "registration", "issue", app_id)
    out = ok(path, *apply, str(files / "looser.toml"), token=bureau)
    assert "(revision form), applied" in out
    app_id = out.split()[1].rstrip(":")
    ok(path, "registration", "accept", app_id)
    assert "publicity" in ok(path, "registration", "review", app_id, "--comment", "wider")
    ok(path, "registration", "withdraw", app_id, "--comment", "later", token=bureau)
