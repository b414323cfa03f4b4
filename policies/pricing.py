"""Charges for one query, and how a joined query's charge is split between bureaus (收益分配).

Pure integer arithmetic in fen (0.01 CNY); no I/O.  The rule, also stated in
``docs/policy.md``:

1. **Row fee.**  Each dataset the query scans costs its rows scanned times its
   grant's price per million rows, rounded half up to the fen.  It is credited
   to the bureau owning that dataset.
2. **Query fee.**  A query pays one query fee, however many datasets it
   joins: the highest per-query price among its commercial grants.  It is
   split between the commercial grants in proportion to their own per-query
   prices (largest remainder, ties to the dataset first in name order), so
   every bureau keeps the ratio of its own tariff and the shares add up to the
   fee exactly.  A single-dataset query pays its grant's per-query price.
3. **Public interest.**  A grant for public-interest use (有条件无偿使用) is free:
   it adds no fee and receives no share.

Joining therefore never costs more than the dearest single query plus the rows
scanned, which keeps data fusion across bureaus affordable, and no bureau is
paid for data it did not contribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .grant_terms import Tariff, Use

__all__ = ["PartCharge", "PricedPart", "apportion", "price_query"]


@dataclass(frozen=True)
class PricedPart:
    """One dataset's part of a query: its grant's tariff and the rows scanned."""

    dataset: str
    tariff: Tariff
    rows_scanned: int


@dataclass(frozen=True)
class PartCharge:
    dataset: str
    query_fee: int
    row_fee: int

    @property
    def total(self) -> int:
        return self.query_fee + self.row_fee


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` into integer shares proportional to ``weights`` (largest remainder).

    >>> apportion(100, [2, 1])
    [67, 33]
    >>> apportion(10, [1, 1, 1])
    [4, 3, 3]
    """
    if total < 0 or any(w < 0 for w in weights):
        raise ValueError("total and weights must be non-negative")
    whole = sum(weights)
    if whole == 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    left = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def _row_fee(part: PricedPart) -> int:
    if part.tariff.use is not Use.COMMERCIAL:
        return 0
    return (part.rows_scanned * part.tariff.price_per_million_rows + 500_000) // 1_000_000


def price_query(parts: Sequence[PricedPart]) -> list[PartCharge]:
    """Charge of one query per part, in the order given (see the module's rule)."""
    if any(p.rows_scanned < 0 for p in parts):
        raise ValueError("rows scanned cannot be negative")
    order = sorted(range(len(parts)), key=lambda i: parts[i].dataset)
    weights = [
        parts[i].tariff.price_per_query if parts[i].tariff.use is Use.COMMERCIAL else 0
        for i in order
    ]
    fee = max(weights, default=0)
    shares = dict(zip(order, apportion(fee, weights), strict=True))
    return [
        PartCharge(dataset=part.dataset, query_fee=shares[i], row_fee=_row_fee(part))
        for i, part in enumerate(parts)
    ]
