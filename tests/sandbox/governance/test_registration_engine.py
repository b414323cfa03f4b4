"""The engine a bureau applies with travels with the application to the issued version."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from audit import EntryFilter
from policies import Actor
from sandbox.core.errors import SandboxError
from sandbox.enclave.warehouse import dataset_dir, version_row_count
from sandbox.governance.catalog_view import read_catalog
from sandbox.governance.registration_states import RegStep
from sandbox.governance.registrations import Registrations, SourceFile
from sandbox.platform import Platform
from tests.api.test_governance import CSV, VISITS, Clock
from tests.conftest import build_deployment


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, dict[str, str]]]:
    home = tmp_path_factory.mktemp("registration-engine") / "home"
    platform, tokens = build_deployment(home)
    (home.parent / "visits.csv").write_text(CSV)
    yield platform, tokens
    platform.close()


def _apply(
    platform: Platform, tokens: dict[str, str], clock: Clock, name: str, **kwargs: object
) -> dict[str, object]:
    bureau = platform.authority.authenticate(tokens["bureau-health"])
    source = SourceFile(path=platform.settings.home.parent / "visits.csv", name="visits.csv")
    return Registrations(platform, clock=clock).apply(
        bureau,
        classification=VISITS.replace("health.visits", f"health.{name}"),
        source=kwargs.pop("source", source),  # type: ignore[arg-type]
        update_frequency="monthly",
        **kwargs,  # type: ignore[arg-type]
    )


def _issue(platform: Platform, clock: Clock, app_id: str) -> int:
    procedure = Registrations(platform, clock=clock)
    host = Actor.host("tests")
    procedure.step(host, app_id, RegStep.ACCEPT)
    procedure.step(host, app_id, RegStep.APPROVE, comment="fine")
    clock.now += timedelta(days=8)
    _, reg = procedure.issue(host, app_id)
    return reg.record.version


def test_an_application_for_spark_is_issued_into_the_warehouse(
    world: tuple[Platform, dict[str, str]],
) -> None:
    platform, tokens = world
    clock = Clock()
    app = _apply(platform, tokens, clock, "sparked", engine="spark")
    assert app["engine"] == "spark"
    version = _issue(platform, clock, str(app["id"]))
    record = platform.catalog.get("health.sparked")
    assert record.engine == "spark" and record.version == version == 1
    v1 = dataset_dir(platform.settings.warehouse_dir, "health.sparked", 1)
    assert version_row_count(v1) == record.row_count == 60
    history = platform.catalog.versions("health.sparked")[-1]
    assert history["engine"] == "spark"
    cert = history["certificate"]["certificate"]
    assert cert["engine"] == "spark" and "procedure" in cert
    operator = platform.authority.authenticate(tokens["op-bank"])
    (entry,) = read_catalog(platform, operator, "health.sparked")
    assert entry["engine"] == "spark"  # operators see where it runs
    applied = platform.audit.entries(EntryFilter(action="registration.apply"), limit=1000)
    assert [e.details["engine"] for e in applied if e.details.get("application") == app["id"]] == [
        "spark"
    ]
    # A revision without a file would reclassify rows the enclave does not hold.
    with pytest.raises(SandboxError) as refused:
        _apply(platform, tokens, clock, "sparked", source=None)
    assert refused.value.rule == "registry.engine"


def test_a_revision_without_a_file_does_not_move_engines(
    world: tuple[Platform, dict[str, str]],
) -> None:
    platform, tokens = world
    clock = Clock()
    app = _apply(platform, tokens, clock, "ducked")
    assert app["engine"] == "duckdb"
    _issue(platform, clock, str(app["id"]))
    with pytest.raises(SandboxError) as raised:
        _apply(platform, tokens, clock, "ducked", source=None, engine="spark")
    assert raised.value.rule == "registry.engine" and "takes the data file" in raised.value.message
    with pytest.raises(SandboxError) as raised:
        _apply(platform, tokens, clock, "other", engine="parquet")
    assert raised.value.rule == "registry.engine"
