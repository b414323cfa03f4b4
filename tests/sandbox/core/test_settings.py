"""Settings are declared once, parsed strictly, bounded alike everywhere, and all documented."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa

from sandbox.api.models import MAX_SQL, SettingsIn, SettingsOut
from sandbox.core.errors import InvalidInput
from sandbox.core.runtime_settings import RUNTIME_SETTINGS, RuntimeSettings, platform_settings
from sandbox.core.settings import (
    SETTINGS,
    SETTINGS_BY_NAME,
    Settings,
    SettingSpec,
    load_settings,
    settings_table,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "settings.md"
BOUNDED = [spec for spec in SETTINGS if spec.bounds]


def test_every_field_is_a_declared_setting() -> None:
    assert [spec.name for spec in SETTINGS] == [f.name for f in fields(Settings)]
    for spec in SETTINGS:
        assert spec.env == "SANDBOX_" + spec.name.upper()
        assert spec.help.endswith("."), spec.name
        if spec.default_text is None:  # a computed default is not checked here
            assert spec.validate(spec.default) == spec.default, spec.name


def test_docs_table_is_exactly_the_generated_one() -> None:
    """docs/settings.md's table is `python -m sandbox.core.settings`, nothing added or lost."""
    rows = [line for line in DOCS.read_text().splitlines() if line.startswith("|")]
    assert rows == settings_table().splitlines()


def test_the_generator_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox.core.settings"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert proc.stdout == settings_table() and proc.stderr == ""
    assert "| `k_floor` | `SANDBOX_K_FLOOR` | `10` | ≥ 2 | yes |" in proc.stdout


def test_environment_is_injectable(tmp_path: Path) -> None:
    env = {"SANDBOX_HOME": str(tmp_path), "SANDBOX_K_FLOOR": "25", "SANDBOX_THREADS": "1"}
    settings = load_settings(env)
    assert settings.home == tmp_path.resolve() and settings.k_floor == 25 and settings.threads == 1
    assert settings.control_db_url == f"sqlite:///{tmp_path.resolve() / 'control.db'}"
    assert settings.enclave_path == tmp_path.resolve() / "enclave.duckdb"


def test_overrides_win_over_environment(tmp_path: Path) -> None:
    settings = load_settings({"SANDBOX_HOME": "/elsewhere"}, home=tmp_path)
    assert settings.home == tmp_path.resolve()


def test_unknown_override_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        load_settings({}, k_flor=12)
    assert info.value.rule == "settings.unknown" and "k_flor" in info.value.message


@pytest.mark.parametrize("value", ["0", "-3", "ten", "1", "2.5"])
def test_invalid_values_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        load_settings({"SANDBOX_K_FLOOR": value})
    assert info.value.rule == "settings.parse"
    assert "SANDBOX_K_FLOOR" in str(info.value)


def test_a_k_floor_of_one_is_refused_at_start_naming_the_variable() -> None:
    """The API always refused 1 at run time; the environment now refuses it too."""
    with pytest.raises(InvalidInput) as info:
        load_settings({"SANDBOX_K_FLOOR": "1"})
    assert info.value.message == (
        "setting SANDBOX_K_FLOOR is not valid: must be greater than or equal to 2 (got '1')"
    )
    assert load_settings({"SANDBOX_K_FLOOR": "2"}).k_floor == 2


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidInput) as info:
        load_settings({"SANDBOX_DP_DELTA": "1", "SANDBOX_QUERY_TIMEOUT_S": "inf"}, port=70_000)
    message = info.value.message
    assert "SANDBOX_DP_DELTA" in message and "must be less than 1" in message
    assert "SANDBOX_QUERY_TIMEOUT_S" in message and "finite" in message
    assert "setting port is not valid" in message


def test_settings_are_frozen_and_checked_when_built_directly(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, threads=2)
    with pytest.raises(AttributeError):
        settings.k_floor = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        Settings(home=tmp_path, k_floor=1)
    with pytest.raises(pydantic.ValidationError):
        replace(settings, max_sql_length=10)
    with pytest.raises(pydantic.ValidationError):
        Settings(home=tmp_path, k_flor=12)  # type: ignore[call-arg]


def test_with_home_re_derives_the_paths(tmp_path: Path) -> None:
    moved = Settings(home=tmp_path / "a", threads=2).with_home(tmp_path / "b")
    assert moved.threads == 2
    assert moved.audit_db_url == f"sqlite:///{(tmp_path / 'b').resolve() / 'audit.db'}"


# -- one set of bounds: environment, run time, API ------------------------------------------


def _edges(spec: SettingSpec) -> tuple[list[Any], list[Any]]:
    """Values on each declared bound (accepted) and just past it (refused)."""
    step = 1 if spec.type is int else 1e-9
    inside, outside = [], []
    for key, bound in spec.bounds.items():
        below = key in ("ge", "gt")
        edge = bound if key in ("ge", "le") else bound + (step if below else -step)
        past = bound - step if key == "ge" else bound + step if key == "le" else bound
        inside.append(spec.type(edge))
        outside.append(spec.type(past))
    return inside, outside


@pytest.mark.parametrize("spec", BOUNDED, ids=[s.name for s in BOUNDED])
def test_bounds_are_the_same_in_the_environment_at_run_time_and_in_the_api(
    spec: SettingSpec,
) -> None:
    inside, outside = _edges(spec)
    for value in inside:
        assert getattr(load_settings({spec.env: str(value)}), spec.name) == value
        if spec.runtime:
            assert RuntimeSettings.validate({spec.name: value}) == {spec.name: value}
            assert getattr(SettingsIn(**{spec.name: value}), spec.name) == value
    for value in outside:
        with pytest.raises(InvalidInput, match=spec.env):
            load_settings({spec.env: str(value)})
        if spec.runtime:
            with pytest.raises(InvalidInput, match=spec.name) as info:
                RuntimeSettings.validate({spec.name: value})
            assert info.value.rule == "settings.invalid"
            with pytest.raises(pydantic.ValidationError):
                SettingsIn(**{spec.name: value})


def test_the_api_models_follow_the_declaration() -> None:
    assert tuple(SettingsIn.model_fields) == RUNTIME_SETTINGS
    assert set(RUNTIME_SETTINGS) >= {"k_floor", "max_sql_length", "rate_limit_per_minute"}
    public = {spec.name for spec in SETTINGS if spec.public}
    assert set(SettingsOut.model_fields) == public | {"overrides"}
    assert not {"home", "control_db_url", "audit_db_url"} & public  # never shown to accounts
    schema = SettingsIn.model_json_schema()["properties"]
    assert schema["k_floor"]["anyOf"][0]["minimum"] == 2
    assert schema["max_sql_length"]["anyOf"][0]["maximum"] == MAX_SQL
    assert MAX_SQL == SETTINGS_BY_NAME["max_sql_length"].le
    assert schema["max_sql_length"]["description"] == SETTINGS_BY_NAME["max_sql_length"].help
    with pytest.raises(pydantic.ValidationError):
        SettingsIn(threads=4)  # type: ignore[call-arg]  # not changeable at run time


def test_only_runtime_settings_change_at_run_time() -> None:
    with pytest.raises(InvalidInput) as info:
        RuntimeSettings.validate({"threads": 4, "k_floor": 1})
    assert "threads cannot be changed at run time" in info.value.message
    assert "k_floor: must be greater than or equal to 2" in info.value.message


def test_overrides_apply_and_an_out_of_bounds_row_is_ignored(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'control.db'}")
    base = Settings(home=tmp_path, threads=2, k_floor=12)
    runtime = RuntimeSettings(engine, base, refresh_s=0)
    assert runtime.update({"max_sql_length": 500}, by="admin").max_sql_length == 500
    with engine.begin() as conn:  # as a release with looser bounds could have left it
        conn.execute(
            sa.insert(platform_settings).values(
                name="k_floor", value=1, updated_at=datetime.now(UTC).isoformat(), updated_by="x"
            )
        )
    assert runtime.overrides() == {"max_sql_length": 500}
    current = runtime.current()
    assert current.k_floor == 12 and current.max_sql_length == 500 and current.threads == 2
