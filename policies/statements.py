"""Reading the usage ledger, and monthly statements as CSV (可控可计量).

An operator's statement lists what it used and owes per grant; a bureau's
lists the use of its datasets and what it is owed: for a joined query, its
share under the split rule of :mod:`policies.pricing`.  The two views are
the same ledger rows, so what all operators owe equals what all bureaus are
owed, to the fen.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandbox.core.errors import InvalidInput
from sandbox.core.policy_tables import EPSILON_SCALE, grants, usage_daily

__all__ = ["STATEMENT_COLUMNS", "UsageRow", "read_usage", "statement_csv"]

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
STATEMENT_COLUMNS = (
    "month",
    "operator",
    "grant",
    "dataset",
    "bureau_domain",
    "purpose",
    "use",
    "queries",
    "joined_queries",
    "rows_scanned",
    "cpu_seconds",
    "epsilon_spent",
    "query_fee_cny",
    "row_fee_cny",
    "charge_cny",
)


@dataclass(frozen=True)
class UsageRow:
    operator: str
    grant: str
    dataset: str
    purpose: str
    use: str
    day: str  # a day, or a month for monthly totals
    queries: int
    joined_queries: int
    rows_scanned: int
    cpu_ms: int
    epsilon_spent: float
    query_fee: int
    row_fee: int

    @property
    def domain(self) -> str:
        return self.dataset.split(".", 1)[0]

    @property
    def charge(self) -> int:
        return self.query_fee + self.row_fee


def _filters(operator: str | None, domains: Sequence[str] | None) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if operator is not None:
        where.append(usage_daily.c.operator == operator)
    if domains is not None:
        where.append(
            sa.or_(sa.false(), *(usage_daily.c.dataset_id.startswith(f"{d}.") for d in domains))
        )
    return where


def read_usage(
    conn: Connection,
    *,
    operator: str | None = None,
    domains: Sequence[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    by_month: bool = False,
) -> list[UsageRow]:
    """Ledger rows per grant and day (``since``/``until`` inclusive ISO days), or per month."""
    for day in (since, until):
        if day is not None and not DAY.match(day):
            raise InvalidInput("days are YYYY-MM-DD", rule="usage.day")
    where = _filters(operator, domains)
    if since is not None:
        where.append(usage_daily.c.day >= since)
    if until is not None:
        where.append(usage_daily.c.day <= until)
    period = sa.func.substr(usage_daily.c.day, 1, 7) if by_month else usage_daily.c.day
    u = usage_daily.c
    totals = (u.queries, u.joined_queries, u.rows_scanned, u.cpu_ms, u.epsilon_spent)
    sums = [sa.func.sum(col).label(col.name) for col in (*totals, u.query_fee, u.row_fee)]
    query = (
        sa.select(
            u.operator,
            u.grant_id,
            u.dataset_id,
            grants.c.purpose_code,
            grants.c.use,
            period.label("period"),
            *sums,
        )
        .select_from(usage_daily.join(grants, grants.c.id == u.grant_id))
        .where(*where)
        .group_by(u.operator, u.grant_id, u.dataset_id, grants.c.purpose_code, grants.c.use, period)
        .order_by(period, u.operator, u.dataset_id, u.grant_id)
    )
    return [
        UsageRow(
            operator=row.operator,
            grant=row.grant_id,
            dataset=row.dataset_id,
            purpose=row.purpose_code,
            use=row.use,
            day=row.period,
            queries=int(row.queries),
            joined_queries=int(row.joined_queries),
            rows_scanned=int(row.rows_scanned),
            cpu_ms=int(row.cpu_ms),
            epsilon_spent=int(row.epsilon_spent) / EPSILON_SCALE,
            query_fee=int(row.query_fee),
            row_fee=int(row.row_fee),
        )
        for row in conn.execute(query)
    ]


def _cny(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def statement_csv(
    conn: Connection,
    month: str,
    *,
    operator: str | None = None,
    domains: Sequence[str] | None = None,
) -> str:
    """A month's statement: one line per grant, then a TOTAL line.

    For an operator the charge is what it owes; for a bureau (``domains``) what it is owed.
    """
    if not MONTH.match(month or ""):
        raise InvalidInput("a month is YYYY-MM", rule="statement.month")
    if (operator is None) == (domains is None):
        raise InvalidInput("a statement is for one operator or one bureau", rule="statement.scope")
    rows = read_usage(
        conn,
        operator=operator,
        domains=domains,
        since=f"{month}-01",
        until=f"{month}-31",
        by_month=True,
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(STATEMENT_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                month,
                r.operator,
                r.grant,
                r.dataset,
                r.domain,
                r.purpose,
                r.use,
                r.queries,
                r.joined_queries,
                r.rows_scanned,
                f"{r.cpu_ms / 1000:.3f}",
                f"{r.epsilon_spent:g}",
                _cny(r.query_fee),
                _cny(r.row_fee),
                _cny(r.charge),
            ]
        )
    writer.writerow(
        [
            month,
            operator or "*",
            "TOTAL",
            "",
            ",".join(domains or ()),
            "",
            "",
            sum(r.queries for r in rows),
            sum(r.joined_queries for r in rows),
            sum(r.rows_scanned for r in rows),
            f"{sum(r.cpu_ms for r in rows) / 1000:.3f}",
            f"{sum(r.epsilon_spent for r in rows):g}",
            _cny(sum(r.query_fee for r in rows)),
            _cny(sum(r.row_fee for r in rows)),
            _cny(sum(r.charge for r in rows)),
        ]
    )
    return out.getvalue()
