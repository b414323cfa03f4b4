"""Quality arithmetic over counts (pure): rates, withheld small counts, score, timeliness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from sandbox.enclave.quality_math import (
    ColumnCounts,
    PartnerCounts,
    QualityCounts,
    build_report,
    recompute,
    report_sha256,
    score,
    timeliness,
    with_timeliness,
    withhold,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _report(counts: QualityCounts, k: int = 10) -> dict:
    return build_report(
        counts, k=k, update_frequency="monthly", evaluated_at="2026-01-01T00:00:00Z"
    )


def test_rates_of_each_dimension() -> None:
    counts = QualityCounts(
        rows=1000,
        columns=(
            ColumnCounts("id", 1000),
            ColumnCounts("age", 900, "bounds", 100),  # 100 nulls, 100 out of bounds
            ColumnCounts("gender", 1000, "values", 0),
        ),
        entities=950,
        one_row_per_entity=True,
        partners=(
            PartnerCounts("id", "b.t.id", 950, 760),
            PartnerCounts("id", "c.t.id", 950, None),  # partner not registered
        ),
    )
    report = _report(counts)
    assert report["completeness"]["rate"] == round(1 - 0.1 / 3, 4)
    assert report["completeness"]["columns"]["age"] == {"nulls": 100, "null_rate": 0.1}
    assert report["validity"]["rate"] == round(1 - 100 / 1900, 4)
    assert report["validity"]["columns"]["age"]["invalid_rate"] == round(100 / 900, 4)
    assert "id" not in report["validity"]["columns"]  # declares no rule
    assert report["uniqueness"]["duplicate_rows"] == 50
    assert report["uniqueness"]["rate"] == 0.95
    assert report["consistency"]["rate"] == 0.8  # the unregistered partner is not assessable
    assert report["consistency"]["partners"]["id -> c.t.id"]["match_rate"] is None
    rates = [report[d]["rate"] for d in ("completeness", "validity", "uniqueness", "consistency")]
    assert report["score"] == round(100 * sum(rates) / 4, 1)


def test_counts_below_k_are_withheld_and_weigh_k_over_2() -> None:
    counts = QualityCounts(
        rows=100,
        columns=(ColumnCounts("x", 97, "bounds", 3),),
        entities=98,
        one_row_per_entity=True,
    )
    report = _report(counts, k=10)
    col = report["completeness"]["columns"]["x"]
    assert col == {"nulls": None, "null_rate": None, "below_k": True}
    assert report["validity"]["columns"]["x"]["invalid"] is None
    assert report["uniqueness"]["duplicate_rows"] is None and report["uniqueness"]["below_k"]
    # 3 nulls are shown as below k and weigh 5 (k / 2): what "below k" already says.
    assert report["completeness"]["rate"] == 0.95
    assert report["validity"]["rate"] == round(1 - 5 / 97, 4)


def test_nothing_to_assess_gives_no_score() -> None:
    report = _report(
        QualityCounts(rows=0, columns=(ColumnCounts("x", 0),), entities=0, one_row_per_entity=False)
    )
    assert report["score"] is None
    assert report["uniqueness"] == {"declared": False, "rate": None}


def test_timeliness_against_the_declared_period() -> None:
    assert timeliness("monthly", T0, T0 + timedelta(days=20))["rate"] == 1.0
    assert timeliness("monthly", T0, T0 + timedelta(days=62))["rate"] == 0.5
    assert timeliness("weekly", T0, T0 + timedelta(days=70))["rate"] == 0.1
    assert timeliness("sometimes", T0, T0 + timedelta(days=1))["rate"] is None


def test_timeliness_joins_the_score_when_read_and_the_certified_digest_stays() -> None:
    counts = QualityCounts(
        rows=100, columns=(ColumnCounts("x", 100),), entities=100, one_row_per_entity=False
    )
    report = _report(counts)
    digest = report_sha256(report)
    later = with_timeliness(report, T0, T0 + timedelta(days=62))
    assert later["certified_score"] == 100.0
    assert later["timeliness"]["rate"] == 0.5
    assert later["score"] == 75.0 == score(later)
    assert report_sha256(report) == digest  # the certified report is not changed by reading


@given(
    rows=st.integers(0, 10_000),
    data=st.data(),
    k=st.integers(2, 50),
)
def test_no_count_between_1_and_k_minus_1_is_ever_shown(rows: int, data, k: int) -> None:
    non_null = data.draw(st.lists(st.integers(0, rows), min_size=1, max_size=5))
    columns = tuple(
        ColumnCounts(f"c{i}", n, "bounds", data.draw(st.integers(0, n)))
        for i, n in enumerate(non_null)
    )
    entities = data.draw(st.integers(min(rows, 1), max(rows, 1)))
    keys = data.draw(st.integers(0, 1000))
    partner = PartnerCounts("c0", "a.b.c", keys, data.draw(st.integers(0, keys)))
    report = _report(QualityCounts(rows, columns, entities, True, (partner,)), k=k)
    shown: list[int] = []

    def walk(node: object, key: str = "") -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, name)
        elif (
            isinstance(node, int)
            and not isinstance(node, bool)
            and key in ("nulls", "invalid", "duplicate_rows", "unmatched")
        ):
            shown.append(node)

    walk(report)
    assert all(n == 0 or n >= k for n in shown)
    for dim in ("completeness", "validity", "uniqueness", "consistency"):
        rate = report[dim]["rate"]
        assert rate is None or 0.0 <= rate <= 1.0
    json.dumps(report)  # JSON as it is stored and certified
    # The rates follow from what the report shows: recomputing them changes nothing.
    assert recompute(report) == report


def test_withheld_columns_leave_no_figure_and_no_trace_in_the_rates() -> None:
    counts = QualityCounts(
        rows=1000,
        columns=(
            ColumnCounts("id", 1000),
            ColumnCounts("secret", 500, "bounds", 300),
            ColumnCounts("ok", 1000, "values", 0),
        ),
        entities=990,
        one_row_per_entity=True,
        partners=(PartnerCounts("id", "b.t.id", 990, 500), PartnerCounts("id", "c.t.k", 990, 990)),
    )
    report = _report(counts)
    shown = withhold(report, {"secret", "b.t.id"}, entity_key="id")
    assert "secret" not in json.dumps(shown) and "b.t.id" not in json.dumps(shown)
    assert shown["completeness"]["rate"] == 1.0 and shown["validity"]["rate"] == 1.0
    assert shown["consistency"]["rate"] == 1.0 and shown["uniqueness"]["rate"] == 0.99
    clean = _report(
        QualityCounts(
            1000,
            (ColumnCounts("id", 1000), ColumnCounts("ok", 1000, "values", 0)),
            990,
            True,
            (PartnerCounts("id", "c.t.k", 990, 990),),
        )
    )
    assert shown["score"] == clean["score"]  # as if the column had never been there
    by_key = withhold(report, {"id"}, entity_key="id")
    assert by_key["uniqueness"] == {"declared": True, "rate": None}
    assert by_key["consistency"]["partners"] == {}
    assert withhold(report, set(), entity_key="id") == report
