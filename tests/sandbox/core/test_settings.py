"""Settings are declared once, parsed strictly, and all documented."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from sandbox.core.errors import InvalidInput
from sandbox.core.settings import SETTINGS, Settings, load_settings

DOCS = Path(__file__).resolve().parents[3] / "docs" / "settings.md"


def test_every_setting_is_declared_and_documented() -> None:
    declared = {spec.name for spec in SETTINGS}
    assert declared == {f.name for f in fields(Settings)}
    text = DOCS.read_text()
    for spec in SETTINGS:
        assert f"`{spec.name}`" in text and f"`{spec.env}`" in text, spec.name


def test_environment_is_injectable(tmp_path: Path) -> None:
    env = {"SANDBOX_HOME": str(tmp_path), "SANDBOX_K_FLOOR": "25", "SANDBOX_THREADS": "1"}
    settings = load_settings(env)
    assert settings.home == tmp_path.resolve() and settings.k_floor == 25 and settings.threads == 1
    assert settings.control_db_url == f"sqlite:///{tmp_path.resolve() / 'control.db'}"


def test_overrides_win_over_environment(tmp_path: Path) -> None:
    settings = load_settings({"SANDBOX_HOME": "/elsewhere"}, home=tmp_path)
    assert settings.home == tmp_path.resolve()


@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_invalid_values_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        load_settings({"SANDBOX_K_FLOOR": value})
    assert "SANDBOX_K_FLOOR" in str(info.value)


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().k_floor = 1  # type: ignore[misc]
