"""docs/policy.md documents every rule, action, audit action, grant field and statement
column; every public name is exported."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path

import pytest

import policies
from policies import ACTIONS, AUDIT_ACTIONS, RULES, GrantTerms
from policies.statements import STATEMENT_COLUMNS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text("utf-8")


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_is_documented(name: str) -> None:
    assert f"`{name}`" in DOC


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_every_action_is_documented(name: str) -> None:
    assert f"`{name}`" in DOC


@pytest.mark.parametrize("name", sorted(a for a in AUDIT_ACTIONS if not a.startswith("<")))
def test_every_audit_action_is_documented(name: str) -> None:
    assert f"`{name}`" in DOC


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(GrantTerms)])
def test_every_grant_field_is_documented(name: str) -> None:
    assert f"`{name}`" in DOC


@pytest.mark.parametrize("name", STATEMENT_COLUMNS)
def test_every_statement_column_is_documented(name: str) -> None:
    assert f"`{name}`" in DOC


def test_error_codes_are_documented() -> None:
    for code in ("budget_exhausted", "quota_exceeded", "audit_unavailable", "unauthenticated"):
        assert f"`{code}`" in DOC


def test_public_api_is_complete() -> None:
    for name in policies.__all__:
        assert hasattr(policies, name), name
    for info in pkgutil.iter_modules(policies.__path__):
        module = importlib.import_module(f"policies.{info.name}")
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"policies.{info.name}.{name}"
    public = {n for n in vars(policies) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(policies.__all__)
