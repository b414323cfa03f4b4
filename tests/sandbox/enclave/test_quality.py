"""Quality evaluation inside the enclave, on real DuckDB: what a registration measures,
what its certificate binds, what a later version keeps, and that no value leaks."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from audit.keys import load_public_keys
from connectors.files import FileSource
from sandbox.core.classification import parse_classification
from sandbox.core.db import dataset_versions
from sandbox.enclave.certificates import verify_certificate
from sandbox.enclave.quality_math import report_sha256
from sandbox.governance.quality_view import latest_quality, quality_history
from sandbox.platform import Platform

FIRMS = """
[dataset]
id = "trade.firms"
entity_key = "code"
update_frequency = "quarterly"
one_row_per_entity = true

[columns.code]
level = "L2"
role = "identifier"
joinable = ["trade.payrolls.code"]

[columns.sector]
level = "L1"
role = "dimension"
values = ["farming", "mining", "retail"]

[columns.staff]
level = "L2"
role = "measure"
bounds = [0, 1000]
"""

PAYROLLS = """
[dataset]
id = "trade.payrolls"
entity_key = "code"

[columns.code]
level = "L2"
role = "identifier"
joinable = ["trade.firms.code"]

[columns.wages]
level = "L2"
role = "measure"
bounds = [0, 100000]
"""

# Values a report must never contain (rare ones especially: they are the risky ones).
SECRET_SECTOR = "zz-smuggling"
SECRET_STAFF = 987654


def _firms(tmp: Path) -> Path:
    n = 200
    codes = [f"F{i:04d}" for i in range(n)] + ["F0000"] * 20  # 20 duplicate rows
    sectors = (["farming", "mining", "retail", None] * 55)[: n + 20]
    sectors[5] = SECRET_SECTOR  # one value outside the declared domain
    staff = [i % 900 for i in range(n + 20)]
    for i in range(30):
        staff[i] = None  # 30 nulls
    staff[40] = SECRET_STAFF  # one value out of bounds
    path = tmp / "firms.csv"
    pacsv.write_csv(pa.table({"code": codes, "sector": sectors, "staff": staff}), path)
    return path


def _payrolls(tmp: Path) -> Path:
    codes = [f"F{i:04d}" for i in range(150)] + [f"X{i:04d}" for i in range(50)]
    path = tmp / "payrolls.csv"
    pacsv.write_csv(pa.table({"code": codes, "wages": [1000.0] * 200}), path)
    return path


def test_a_registration_measures_binds_and_keeps_its_report(
    platform: Platform, tmp_path: Path
) -> None:
    staging = platform.settings.staging_dir
    payrolls = parse_classification(PAYROLLS)
    firms = parse_classification(FIRMS)
    platform.register(payrolls, FileSource(_payrolls(tmp_path), staging))
    reg = platform.register(firms, FileSource(_firms(tmp_path), staging))
    with platform.engine.connect() as conn:
        version, _, report = latest_quality(conn, "trade.firms")
    assert version == reg.record.version == 1
    assert report["rows"] == 220
    cols = report["completeness"]["columns"]
    assert cols["code"]["nulls"] == 0
    assert cols["sector"]["nulls"] == 55  # every fourth of 220
    assert cols["staff"]["nulls"] == 30
    validity = report["validity"]["columns"]
    # One value outside the domain and one out of bounds: below k, withheld.
    assert validity["sector"]["invalid"] is None and validity["sector"]["below_k"]
    assert validity["staff"]["invalid"] is None and validity["staff"]["rule"] == "bounds"
    assert report["uniqueness"]["duplicate_rows"] == 20 and report["uniqueness"]["rate"] == round(
        1 - 20 / 220, 4
    )
    partner = report["consistency"]["partners"]["code -> trade.payrolls.code"]
    assert partner["keys"] == 200 and partner["unmatched"] == 50
    assert partner["match_rate"] == 0.75
    assert report["update_frequency"] == "quarterly"

    text = json.dumps(report)
    assert SECRET_SECTOR not in text and str(SECRET_STAFF) not in text
    assert "F0000" not in text and "farming" not in text

    body = verify_certificate(reg.certificate, load_public_keys(platform.settings.keys_dir))
    assert body["quality"] == {"sha256": report_sha256(report), "score": report["score"]}

    # A new version is measured anew; the first one's report stays in the history.
    clean = tmp_path / "clean.csv"
    pacsv.write_csv(
        pa.table(
            {
                "code": [f"F{i:04d}" for i in range(150)],
                "sector": ["retail"] * 150,
                "staff": [5] * 150,
            }
        ),
        clean,
    )
    platform.register(firms, FileSource(clean, staging))
    with platform.engine.connect() as conn:
        history = quality_history(conn, "trade.firms")
        _, _, second = latest_quality(conn, "trade.firms")
    assert [h["version"] for h in history] == [1, 2]
    assert history[0]["sha256"] == report_sha256(report)
    assert second["score"] == 100.0 and history[1]["score"] == 100.0
    assert history[0]["score"] < 100.0


def test_a_reclassification_is_evaluated_anew_with_the_rows_age(
    platform: Platform, tmp_path: Path
) -> None:
    from policies import Actor
    from sandbox.reclassify import reclassify

    staging = platform.settings.staging_dir
    firms = parse_classification(FIRMS.replace('joinable = ["trade.payrolls.code"]\n', ""))
    platform.register(firms, FileSource(_firms(tmp_path), staging))
    narrower = parse_classification(
        FIRMS.replace('joinable = ["trade.payrolls.code"]\n', "").replace(
            "bounds = [0, 1000]", "bounds = [0, 100]"
        )
    )
    reg = reclassify(platform, narrower, Actor.host("tests"))
    with platform.engine.connect() as conn:
        history = quality_history(conn, "trade.firms")
        version, _, report = latest_quality(conn, "trade.firms")
        first = conn.execute(
            sa.select(dataset_versions.c.quality).where(dataset_versions.c.version == 1)
        ).scalar_one()
    assert version == reg.record.version == 2 and [h["version"] for h in history] == [1, 2]
    staff = report["validity"]["columns"]["staff"]
    assert first["validity"]["columns"]["staff"]["invalid"] is None  # one value: below k
    assert staff["invalid"] >= 100  # values above 100 are out of the narrower bounds
    assert report["data_as_of"] == first["data_as_of"]  # the same rows, as old as before
    assert reg.certificate["certificate"]["quality"]["sha256"] == report_sha256(report)
