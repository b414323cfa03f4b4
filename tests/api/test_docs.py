"""docs/api.md documents every route, every rule the API and jobs add, and every audit action."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandbox.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "api.md").read_text("utf-8")
SOURCES = (
    [
        ROOT / "sandbox" / name
        for name in ("enclave/shared.py", "query/service.py", "services.py", "ratelimit.py")
    ]
    + sorted((ROOT / "sandbox" / "jobs").glob("*.py"))
    + sorted((ROOT / "sandbox" / "api").glob("*.py"))
)


def _routes() -> list[tuple[str, str]]:
    from sandbox.api.app import create_app

    app = create_app(Settings(home=Path("/nonexistent/never-opened")))
    spec = app.openapi()
    return sorted((m.upper(), p) for p, ops in spec["paths"].items() for m in ops)


def _normal(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


@pytest.mark.parametrize(("method", "path"), _routes())
def test_every_route_is_documented(method: str, path: str) -> None:
    assert f"{method} {_normal(path)}" in _normal(DOC), f"{method} {path}"


def _quoted(pattern: str) -> set[str]:
    found: set[str] = set()
    for source in SOURCES:
        found |= set(re.findall(pattern, source.read_text("utf-8")))
    return found


@pytest.mark.parametrize(
    "rule",
    sorted(
        r
        for r in _quoted(r'rule="((?:api|job|jobs|review)\.[a-z_]+)"')
        | _quoted(r'"((?:job|review)\.[a-z_]+)", "')
    ),
)
def test_every_api_rule_is_documented(rule: str) -> None:
    assert f"`{rule}`" in DOC


@pytest.mark.parametrize(
    "action",
    [
        "job.cancel",
        "job.review",
        "result.read",
        "receipt.read",
        "dataset.upload",
        "dataset.classify",
        "settings.update",
        "api.rate_limit",
        "api.internal_error",
        "audit.export",
    ],
)
def test_every_api_audit_action_is_documented(action: str) -> None:
    assert f"`{action}`" in DOC
