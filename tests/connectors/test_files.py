"""File connectors load each format, record provenance, and fail atomically."""

from __future__ import annotations

import hashlib

import pytest

from connectors.files import FileSource
from sandbox.core.errors import ConnectorError, SandboxError
from tests.connectors.helpers import SECRET_IDS, visits_spec, visits_table, write

FORMATS = {
    "csv": "csv",
    "parquet": "parquet",
    "json": "jsonl",
    "arrow": "arrow",
    "arrows": "arrows",
}


def _count(platform, sql="SELECT count(*) AS n FROM health.visits"):
    return platform.enclave.query(sql).column(0).to_pylist()[0]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_loads_with_provenance(platform, tmp_path, fmt: str) -> None:
    path = write(visits_table(), tmp_path / f"visits.{FORMATS[fmt]}", fmt)
    reg = platform.register(visits_spec(), FileSource(path, platform.settings.staging_dir))
    assert reg.record.row_count == 40
    assert reg.record.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert reg.record.connector == ("arrow" if fmt == "arrows" else fmt)
    assert reg.record.source_uri == path.name, "the source's own name, never a server path"
    assert reg.certificate["certificate"]["source"]["uri"] == path.name
    assert _count(platform) == 40
    assert _count(platform, "SELECT sum(amount) FROM health.visits") == sum(
        i * 10 for i in range(40)
    )
    types = {c.name: c.type for c in reg.record.spec.columns}
    assert types["amount"] in {"DOUBLE", "BIGINT"}  # CSV writes 10.0 as 10
    left = [p for p in platform.settings.staging_dir.rglob("*") if not p.is_dir()]
    assert not left, "staged copy and work files must be removed"


def test_explicit_format_overrides_suffix(platform, tmp_path) -> None:
    path = write(visits_table(), tmp_path / "visits.dat", "csv")
    with pytest.raises(ConnectorError, match="cannot tell the format"):
        platform.register(visits_spec(), FileSource(path, platform.settings.staging_dir))
    reg = platform.register(visits_spec(), FileSource(path, platform.settings.staging_dir, "csv"))
    assert reg.record.row_count == 40


def test_malformed_csv_leaves_the_enclave_unchanged(platform, tmp_path) -> None:
    good = write(visits_table(20), tmp_path / "good.csv", "csv")
    platform.register(visits_spec(), FileSource(good, platform.settings.staging_dir))
    bad = tmp_path / "bad.csv"
    lines = good.read_text().splitlines()
    lines.insert(5, f'"{SECRET_IDS[30]}","D01"')  # a row with a missing column
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConnectorError) as info:
        platform.register(visits_spec(), FileSource(bad, platform.settings.staging_dir))
    assert info.value.rule == "connector.parse"
    assert "Expected 3 columns, got 2" in str(info.value)
    assert SECRET_IDS[30] not in str(info.value), "errors never echo a data value"
    assert _count(platform) == 20
    assert platform.catalog.get("health.visits").version == 1


def test_failed_first_load_leaves_no_table(platform, tmp_path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ConnectorError):
        platform.register(visits_spec(), FileSource(bad, platform.settings.staging_dir))
    assert not platform.catalog.exists("health.visits")
    with pytest.raises(SandboxError):
        _count(platform)


def test_classification_mismatch_rolls_back(platform, tmp_path) -> None:
    table = visits_table().append_column("extra", visits_table().column("district"))
    path = write(table, tmp_path / "extra.parquet", "parquet")
    with pytest.raises(SandboxError, match="'extra' is in the data but not classified"):
        platform.register(visits_spec(), FileSource(path, platform.settings.staging_dir))
    assert not platform.catalog.exists("health.visits")


def test_reregistering_replaces_atomically_and_is_recorded(platform, tmp_path) -> None:
    first = write(visits_table(10), tmp_path / "v1.csv", "csv")
    second = write(visits_table(30), tmp_path / "v2.parquet", "parquet")
    platform.register(visits_spec(), FileSource(first, platform.settings.staging_dir))
    reg = platform.register(visits_spec(), FileSource(second, platform.settings.staging_dir))
    assert reg.replaced and reg.record.version == 2
    assert _count(platform) == 30
    history = platform.catalog.versions("health.visits")
    assert [h["version"] for h in history] == [1, 2]
    assert [h["connector"] for h in history] == ["csv", "parquet"]
    assert history[1]["certificate"]["certificate"]["row_count"] == 30


def test_blank_csv_text_is_missing_as_a_blank_number_is(platform, tmp_path) -> None:
    # As DuckDB's read_csv reads it: `district IS NULL` finds the blank ones (pyarrow's
    # default kept them as '', and an outside rehearsal's IS NULL found none).
    path = tmp_path / "blanks.csv"
    path.write_text('person_id,district,amount\nP1,D01,10\nP2,,20\nP3,"",\nP4,NA,30\nP5,D02,NA\n')
    platform.register(visits_spec(), FileSource(path, platform.settings.staging_dir))
    assert _count(platform, "SELECT count(*) FROM health.visits WHERE district IS NULL") == 3
    assert _count(platform, "SELECT count(*) FROM health.visits WHERE district = ''") == 0
    assert _count(platform, "SELECT count(*) FROM health.visits WHERE amount IS NULL") == 2
    assert _count(platform, "SELECT sum(amount) FROM health.visits") == 60


def test_missing_file(platform, tmp_path) -> None:
    with pytest.raises(ConnectorError, match="does not exist"):
        platform.register(
            visits_spec(), FileSource(tmp_path / "nope.csv", platform.settings.staging_dir)
        )


def test_registering_outside_allowed_domains_is_forbidden(platform, tmp_path) -> None:
    path = write(visits_table(), tmp_path / "visits.csv", "csv")
    with pytest.raises(SandboxError) as info:
        platform.register(
            visits_spec(),
            FileSource(path, platform.settings.staging_dir),
            allowed_domains=frozenset({"market"}),
        )
    assert info.value.rule == "registry.domain"
    assert not platform.catalog.exists("health.visits")
