"""docs/api.md lists every console page (with the API routes it uses) and every rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandbox.console import ROUTERS

ROOT = Path(__file__).resolve().parents[2]
SECTION = (ROOT / "docs" / "api.md").read_text("utf-8").split("## The web console", 1)[1]
SECTION = SECTION.split("\n## ", 1)[0]


def _normal(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


PAGES = sorted(
    (method, route.path)
    for router in ROUTERS
    for route in router.routes
    for method in getattr(route, "methods", set()) - {"HEAD"}
)


@pytest.mark.parametrize(("method", "path"), PAGES)
def test_every_console_page_is_documented(method: str, path: str) -> None:
    assert f"`{method} {_normal(path)}" in _normal(SECTION), f"{method} {path}"


RULES = sorted(
    {
        rule
        for module in (ROOT / "sandbox" / "console").glob("*.py")
        for rule in re.findall(r'rule="(console\.[a-z_]+)"', module.read_text())
    }
)


@pytest.mark.parametrize("rule", RULES)
def test_every_console_rule_is_documented(rule: str) -> None:
    assert f"`{rule}`" in SECTION


def test_the_section_names_its_rules() -> None:
    assert RULES == ["console.csrf", "console.form", "console.role", "console.sign_in"]
