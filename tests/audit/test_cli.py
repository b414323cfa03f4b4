"""``sandbox audit ...`` through Typer's runner, with settings passed in ``ctx.obj``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from audit import AuditTrail, EntryFilter, KeyRing
from sandbox.audit_errors import translate_audit_error
from sandbox.cli.audit import audit_app
from sandbox.core.errors import AuditUnavailable, InvalidInput, NotFound
from sandbox.core.settings import Settings
from tests.audit.conftest import fill


def make_app(settings: Settings) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = settings

    app.add_typer(audit_app, name="audit")
    return app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", audit_sign_every_n=4)
    settings.home.mkdir()
    with AuditTrail.open(settings.audit_db_url, KeyRing(settings.keys_dir), sign_every_n=4) as t:
        fill(t, 7)
    return settings


def run(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(make_app(settings), ["audit", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_export_then_verify_offline(settings: Settings, tmp_path: Path) -> None:
    code, out = run(settings, "export", "--out", str(tmp_path / "x"))
    assert code == 0 and "exported 7 entries" in out
    code, out = run(settings, "verify", str(tmp_path / "x"))
    assert code == 0 and out.startswith("OK: 7 entries")
    code, out = run(settings, "verify", str(tmp_path / "x"), "--json", "--strict",
                    "--keys", str(settings.keys_dir))  # fmt: skip
    assert code == 0 and json.loads(out)["ok"] is True


def test_verify_reports_the_first_bad_entry_and_exits_1(settings: Settings, tmp_path: Path) -> None:
    run(settings, "export", "--out", str(tmp_path / "x"))
    entries = tmp_path / "x" / "entries.jsonl"
    lines = entries.read_bytes().splitlines(keepends=True)
    entries.write_bytes(b"".join(lines[:3] + lines[4:]))
    code, out = run(settings, "verify", str(tmp_path / "x"))
    assert code == 1
    assert out.startswith("FAILED: entry 3: sequence:")


def test_verify_needs_a_readable_export(tmp_path: Path) -> None:
    code, out = run(Settings(home=tmp_path), "verify", str(tmp_path / "nothing"))
    assert code == 2 and "cannot verify" in out


def test_sign_head_and_proof(settings: Settings) -> None:
    code, out = run(settings, "sign")
    signed = json.loads(out)
    assert code == 0 and signed["tree_size"] == 7
    code, out = run(settings, "head")
    assert json.loads(out) == signed
    code, out = run(settings, "proof", "--seq", "2")
    body = json.loads(out)
    assert body["proof"]["tree_size"] == 7 and body["entry"]["seq"] == 2
    assert body["tree_head"] == signed
    code, out = run(settings, "proof", "--seq", "2", "--size", "3")
    assert code == 0 and json.loads(out)["proof"]["tree_size"] == 3


def test_queries(settings: Settings) -> None:
    code, out = run(settings, "entries", "--actor", "operator-1", "--limit", "2")
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 4]
    _, out = run(settings, "counts", "--by", "decision")
    # The seven entries, and the record of the `entries` command just before.
    assert json.loads(out) == [{"decision": "allow", "count": 7}, {"decision": "deny", "count": 1}]


def test_host_commands_that_read_or_sign_the_trail_are_recorded(
    settings: Settings, tmp_path: Path
) -> None:
    import getpass

    run(settings, "export", "--out", str(tmp_path / "x"))
    run(settings, "sign")
    run(settings, "head")
    run(settings, "proof", "--seq", "2")
    run(settings, "counts", "--by", "action")
    run(settings, "entries", "--limit", "3")
    with AuditTrail.open(settings.audit_db_url, KeyRing(settings.keys_dir)) as trail:
        recorded = trail.entries(EntryFilter(), offset=7, limit=100)
    assert [(e.action, e.details["command"]) for e in recorded] == [
        ("audit.export", "export"),
        ("audit.sign", "sign"),
        ("audit.read", "head"),
        ("audit.read", "proof"),
        ("audit.read", "counts"),
        ("audit.read", "entries"),
    ]
    for entry in recorded:
        assert entry.actor == f"host:{getpass.getuser()}" and entry.role == "admin"
        assert (entry.target, entry.decision, entry.rule) == ("platform", "allow", "host.console")
    assert recorded[0].details["entries"] == 7  # the export holds the entries before its record
    assert recorded[1].details["tree_size"] == 8  # the head signed covers the export's record
    assert recorded[3].details["seq"] == 2


def test_errors_are_sandbox_errors(settings: Settings) -> None:
    with pytest.raises(NotFound):
        run(settings, "proof", "--seq", "99")
    with pytest.raises(InvalidInput):
        run(settings, "entries", "--since", "tomorrow")
    with pytest.raises(InvalidInput):
        run(settings, "counts", "--by", "password")


def test_every_audit_error_maps_to_a_sandbox_error() -> None:
    import audit.errors as errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        exc = cls(b"\x00" * 32, b"\x01" * 32) if name == "RootMismatchError" else cls("x")
        mapped = translate_audit_error(exc)
        assert isinstance(mapped, AuditUnavailable | InvalidInput | NotFound), name


def test_counts_of_one_are_singular(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.home.mkdir()
    code, out = run(settings, "export", "--out", str(tmp_path / "empty"))
    assert code == 0 and out.startswith("exported 0 entries and 1 signed tree head to "), out
    code, out = run(settings, "verify", str(tmp_path / "empty"))
    assert code == 0 and out.startswith("OK: 0 entries, 1 signed tree head, 0 entries"), out
    with AuditTrail.open(settings.audit_db_url, KeyRing(settings.keys_dir)) as trail:
        size = trail.size()  # the export's own record
    assert size == 1
    code, out = run(settings, "export", "--out", str(tmp_path / "x"))
    assert code == 0 and out.startswith(f"exported {size} entry and "), out
    code, out = run(settings, "verify", str(tmp_path / "x"))
    assert code == 0 and out.startswith(f"OK: {size} entry, "), out
    assert f"{size} entry covered by a signed tree head" in out
