"""What analysts write in outputs and ORDER BY is answered as DuckDB would answer it.

ORDER BY over released outputs, keys and aggregates; constants; functions of
aggregates and of keys (issue 13, utility fixes).  Each is checked against raw
DuckDB on the demo data, so "accepted" also means "computed right".
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from sandbox.core.errors import QueryRefused
from tests.sandbox.query.test_guard import guard
from tests.sandbox.query.test_rewrite import raw, release

ANSWERED = [
    "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 ORDER BY -n",
    "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 ORDER BY count(*) DESC",
    "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 ORDER BY 2 DESC, 1",
    "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 ORDER BY -count(*), district",
    "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 "
    "ORDER BY n * 2 + length(district) DESC",
    "SELECT board_station, count(*) AS n FROM transport.trips GROUP BY 1 "
    "ORDER BY CAST(board_station AS VARCHAR) DESC",
    "SELECT board_station, sum(fare) AS s FROM transport.trips GROUP BY 1 "
    "ORDER BY round(s / 1000) DESC, 1 LIMIT 5",
    "SELECT district, count(*) AS n, pi() AS p, 2 AS two FROM health.claims GROUP BY 1 ORDER BY 1",
    "SELECT board_station, round(ln(sum(fare)), 6) AS l, round(sqrt(avg(fare)), 6) AS r, "
    "exp(-count(*) / 1e6) AS e FROM transport.trips GROUP BY 1 ORDER BY 1",
    "SELECT district, CASE WHEN count(*) > 500 THEN 'many' ELSE 'few' END AS size "
    "FROM health.claims GROUP BY 1 ORDER BY 1",
    "SELECT lower(district) AS d, count(*) AS n FROM health.claims GROUP BY 1 ORDER BY d",
    "SELECT district, gender, count(*) AS n FROM health.claims GROUP BY ALL ORDER BY ALL",
    "SELECT district, count(*) AS n FROM health.claims GROUP BY ALL ORDER BY ALL DESC",
    "SELECT district, count(*) AS n FROM health.claims GROUP BY 1 ORDER BY n DESC LIMIT ALL",
    "SELECT CASE WHEN starts_with(diagnosis_code, 'J') THEN 'j' ELSE 'other' END AS g, "
    "count(*) AS n FROM health.claims GROUP BY 1 ORDER BY 1",
    "SELECT year(claim_date) AS y, count(*) AS n FROM health.claims GROUP BY 1 ORDER BY y",
    "SELECT strftime(claim_date, '%Y-%m') AS m, count(*) AS n FROM health.claims "
    "GROUP BY 1 ORDER BY 1",
    "SELECT district, count(*) AS n FROM health.claims WHERE claim_amount::DOUBLE > 100 "
    "GROUP BY 1 ORDER BY 1",
    # conditional aggregates, read as their FILTER form (sandbox/query/dialects.py)
    "SELECT gender, sum(CASE WHEN claim_amount > 1000 THEN 1 ELSE 0 END) AS large "
    "FROM health.claims GROUP BY 1 ORDER BY 1",
    "SELECT district, count(CASE WHEN gender = 'F' THEN 1 END) AS f, "
    "count(DISTINCT CASE WHEN gender = 'F' THEN person_id END) AS women "
    "FROM health.claims GROUP BY 1 ORDER BY 1",
    "SELECT gender, sum(CASE WHEN diagnosis_code LIKE 'J%' THEN claim_amount ELSE 0 END) "
    "AS j FROM health.claims WHERE claim_amount < 5000 GROUP BY 1 ORDER BY 1",
    "SELECT alight_station, avg(CASE WHEN fare > 2 THEN fare END) AS dear, "
    "sum(if(fare > 2, fare, NULL)) AS s FROM transport.trips GROUP BY 1 ORDER BY 1",
]


def _same(released: list[tuple], expected: list[tuple]) -> None:
    assert len(released) == len(expected)
    for got, want in zip(released, expected, strict=True):
        for g, w in zip(got, want, strict=True):
            if isinstance(w, int | float | Decimal) and not isinstance(w, bool):
                assert float(g) == pytest.approx(float(w), rel=1e-9)
            else:
                assert g == w


@pytest.mark.parametrize("sql", ANSWERED)
def test_outputs_and_order_by_are_answered_as_duckdb_answers(demo_platform, sql: str) -> None:
    _, _, released = release(demo_platform, sql)
    _same(released, raw(demo_platform, sql))


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        # ORDER BY reaches only what is released: not a column outside the keys,
        ("SELECT district, count(*) FROM health.claims GROUP BY 1 ORDER BY hospital_id", None),
        # nor an identifier or the L4 column, however wrapped,
        (
            "SELECT district, count(*) FROM health.claims GROUP BY 1 ORDER BY length(name)",
            "guard.identifier",
        ),
        (
            "SELECT district, count(*) FROM health.claims GROUP BY 1 "
            "ORDER BY max(CAST(id_number AS VARCHAR))",
            "guard.l4_column",
        ),
        # nor a measure outside an aggregate.
        (
            "SELECT district, count(*) FROM health.claims GROUP BY 1 ORDER BY -claim_amount",
            "guard.measure",
        ),
    ],
)
def test_order_by_reaches_only_released_values(sql: str, rule: str | None) -> None:
    with pytest.raises(QueryRefused) as info:
        guard(sql)
    if rule is None:
        assert info.value.rule in ("guard.not_aggregated", "guard.dimension")
    else:
        assert info.value.rule == rule, info.value.message
