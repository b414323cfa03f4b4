"""The charge split rule (收益分配), as pure arithmetic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policies import PricedPart, Tariff, apportion, price_query

FREE = Tariff.free()


def commercial(per_query: int, per_million: int = 0) -> Tariff:
    return Tariff.commercial(per_query=per_query, per_million_rows=per_million)


def test_single_dataset_pays_its_own_tariff() -> None:
    (charge,) = price_query([PricedPart("health.claims", commercial(500, 2_000), 1_500_000)])
    assert (charge.query_fee, charge.row_fee, charge.total) == (500, 3_000, 3_500)


def test_joined_query_pays_one_fee_split_by_tariff() -> None:
    market = PricedPart("market.enterprises", commercial(200, 1_000), 50_000)
    hrss = PricedPart("hrss.social_insurance", commercial(300, 1_500), 600_000)
    charges = price_query([market, hrss])
    assert [c.query_fee for c in charges] == [120, 180]  # one fee of 300, split 2:3
    assert [c.row_fee for c in charges] == [50, 900]
    assert sum(c.total for c in charges) == 300 + 50 + 900


def test_public_interest_parts_are_free_and_get_no_share() -> None:
    charges = price_query(
        [
            PricedPart("transport.trips", FREE, 10**6),
            PricedPart("health.claims", commercial(500, 10), 10**6),
        ]
    )
    assert [(c.query_fee, c.row_fee) for c in charges] == [(0, 0), (500, 10)]
    assert [c.total for c in price_query([PricedPart("t.t", FREE, 10**9)])] == [0]


def test_row_fee_rounds_half_up() -> None:
    (charge,) = price_query([PricedPart("a.b", commercial(0, 1), 500_000)])
    assert charge.row_fee == 1
    (charge,) = price_query([PricedPart("a.b", commercial(0, 1), 499_999)])
    assert charge.row_fee == 0


def test_apportion_examples() -> None:
    assert apportion(100, [2, 1]) == [67, 33]
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(7, [0, 0]) == [0, 0]


@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**6), min_size=1, max_size=8))
def test_apportion_is_exact_and_fair(total: int, weights: list[int]) -> None:
    shares = apportion(total, weights)
    if sum(weights) == 0:
        assert shares == [0] * len(weights)
        return
    assert sum(shares) == total
    for share, weight in zip(shares, weights, strict=True):
        exact = total * weight / sum(weights)
        assert abs(share - exact) < 1 and (weight > 0 or share == 0)


parts = st.lists(
    st.builds(
        PricedPart,
        dataset=st.sampled_from(["a.x", "b.x", "c.x", "d.x"]),
        tariff=st.one_of(
            st.just(FREE), st.builds(commercial, st.integers(0, 10**5), st.integers(0, 10**5))
        ),
        rows_scanned=st.integers(0, 10**9),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda p: p.dataset,
)


@given(parts)
def test_a_join_costs_the_dearest_query_fee_plus_rows(priced: list[PricedPart]) -> None:
    charges = price_query(priced)
    fees = [p.tariff.price_per_query for p in priced if p.tariff.use.value == "commercial"]
    assert sum(c.query_fee for c in charges) == max(fees, default=0)
    for part, charge in zip(priced, charges, strict=True):
        assert charge.dataset == part.dataset
        if part.tariff.use.value != "commercial":
            assert charge.total == 0
