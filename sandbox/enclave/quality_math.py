"""Quality evaluation (数据质量评测) from aggregates: the report and its score (pure).

The enclave counts (:mod:`sandbox.enclave.quality`); this module turns the counts into
the report a catalog shows and a certificate binds.  It sees counts only, never a
value, and shows no count between 1 and ``k - 1``: such a count is reported as
``null`` with ``"below_k": true`` (it could single out a few rows), and enters the
rates as ``k / 2``, the middle of what "below k" already says.

Five dimensions, each a rate in [0, 1] (``null``: not assessable for this dataset):

- completeness: 1 - the mean null rate over the columns;
- validity: 1 - the share of non-null values outside their declared bounds or
  ``values`` domain, over the columns that declare one;
- uniqueness: 1 - duplicate rows / rows, where ``one_row_per_entity`` is declared;
- consistency: the mean share of distinct join keys found in each declared partner
  (``joinable``) that is registered;
- timeliness: 1 while a version is younger than its declared update period, then
  period / age.  It changes with time, so it is computed when read, not certified.

The score is 100 x the mean of the assessable rates, to one decimal.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import rfc8785

__all__ = [
    "DIMENSIONS",
    "PERIOD_DAYS",
    "ColumnCounts",
    "PartnerCounts",
    "QualityCounts",
    "build_report",
    "recompute",
    "report_sha256",
    "score",
    "timeliness",
    "with_timeliness",
    "withhold",
]

#: Days in one declared update period.
PERIOD_DAYS: Mapping[str, int] = {
    "daily": 1,
    "weekly": 7,
    "monthly": 31,
    "quarterly": 92,
    "yearly": 366,
}
DIMENSIONS = ("completeness", "validity", "uniqueness", "consistency", "timeliness")


@dataclass(frozen=True)
class ColumnCounts:
    """One column's counts: non-null values, and (if it declares a rule) values breaking it."""

    name: str
    non_null: int
    rule: str | None = None  # "bounds" | "values" | None
    invalid: int = 0


@dataclass(frozen=True)
class PartnerCounts:
    """Distinct non-null keys of ``column`` and how many of them ``target`` holds.

    ``matched`` ``None``: the partner is not registered (not assessable).
    """

    column: str
    target: str
    keys: int
    matched: int | None


@dataclass(frozen=True)
class QualityCounts:
    rows: int
    columns: tuple[ColumnCounts, ...]
    entities: int
    one_row_per_entity: bool
    partners: tuple[PartnerCounts, ...] = field(default_factory=tuple)


def _shown(count: int, k: int) -> tuple[int | None, float]:
    """What a count shows (``None`` below k) and what it weighs in a rate."""
    if 0 < count < k:
        return None, k / 2
    return count, float(count)


def _rate(part: float, whole: float) -> float | None:
    return None if whole <= 0 else round(min(1.0, max(0.0, part / whole)), 4)


def _mean(rates: Sequence[float | None]) -> float | None:
    known = [r for r in rates if r is not None]
    return None if not known else round(sum(known) / len(known), 4)


def build_report(
    counts: QualityCounts,
    *,
    k: int,
    update_frequency: str,
    evaluated_at: str,
    data_as_of: str | None = None,
) -> dict[str, Any]:
    """The certified report: counts and rates, small counts withheld, no timeliness.

    ``data_as_of``: when the rows were loaded (timeliness counts from it); the evaluation's
    own time unless the rows are an earlier version's (a reclassification)."""
    rows = counts.rows
    completeness_cols: dict[str, Any] = {}
    null_rates: list[float | None] = []
    validity_cols: dict[str, Any] = {}
    checked_total = 0.0
    invalid_total = 0.0
    for col in counts.columns:
        nulls, nulls_w = _shown(rows - col.non_null, k)
        rate = None if nulls is None and rows else _rate(nulls_w, rows)
        null_rates.append(_rate(nulls_w, rows))
        completeness_cols[col.name] = {
            "nulls": nulls,
            "null_rate": rate,
            **({"below_k": True} if nulls is None else {}),
        }
        if col.rule is not None:
            invalid, invalid_w = _shown(col.invalid, k)
            checked_total += col.non_null
            invalid_total += invalid_w
            validity_cols[col.name] = {
                "rule": col.rule,
                "checked": col.non_null,
                "invalid": invalid,
                "invalid_rate": None if invalid is None else _rate(invalid_w, col.non_null),
                **({"below_k": True} if invalid is None else {}),
            }
    mean_null = _mean(null_rates)
    completeness = None if mean_null is None else round(1 - mean_null, 4)
    validity_rate = _rate(invalid_total, checked_total)
    uniqueness: dict[str, Any] = {"declared": counts.one_row_per_entity, "rate": None}
    if counts.one_row_per_entity:
        duplicates, duplicates_w = _shown(max(0, rows - counts.entities), k)
        bad = _rate(duplicates_w, rows)
        uniqueness.update(
            entities=counts.entities,
            duplicate_rows=duplicates,
            rate=None if bad is None else round(1 - bad, 4),
            **({"below_k": True} if duplicates is None else {}),
        )
    partners: dict[str, Any] = {}
    for p in counts.partners:
        label = f"{p.column} -> {p.target}"
        if p.matched is None:
            partners[label] = {"status": "partner not registered", "match_rate": None}
            continue
        unmatched, unmatched_w = _shown(p.keys - p.matched, k)
        miss = _rate(unmatched_w, p.keys)
        partners[label] = {
            "status": "measured",
            "keys": p.keys,
            "unmatched": unmatched,
            "match_rate": None if miss is None else round(1 - miss, 4),
            **({"below_k": True} if unmatched is None else {}),
        }
    report: dict[str, Any] = {
        "evaluated_at": evaluated_at,
        "rows": rows,
        "k": k,
        "completeness": {"rate": completeness, "columns": completeness_cols},
        "validity": {
            "rate": None if validity_rate is None else round(1 - validity_rate, 4),
            "columns": validity_cols,
        },
        "uniqueness": uniqueness,
        "consistency": {
            "rate": _mean([v["match_rate"] for v in partners.values()]),
            "partners": partners,
        },
        "update_frequency": update_frequency,
        "data_as_of": data_as_of or evaluated_at,
    }
    report["score"] = score(report)
    return report


def _weight(entry: Mapping[str, Any], key: str, k: int) -> float:
    shown = entry.get(key)
    return k / 2 if shown is None else float(shown)


def recompute(report: Mapping[str, Any]) -> dict[str, Any]:
    """The dimension rates and score from the report's own entries (what it shows), as
    :func:`build_report` computed them: after entries are withheld, the rates describe
    only what is shown."""
    out = copy.deepcopy(dict(report))
    rows, k = out["rows"], out["k"]
    columns = out["completeness"]["columns"].values()
    mean_null = _mean([_rate(_weight(e, "nulls", k), rows) for e in columns])
    out["completeness"]["rate"] = None if mean_null is None else round(1 - mean_null, 4)
    checks = out["validity"]["columns"].values()
    bad = _rate(sum(_weight(e, "invalid", k) for e in checks), sum(e["checked"] for e in checks))
    out["validity"]["rate"] = None if bad is None else round(1 - bad, 4)
    partners = out["consistency"]["partners"].values()
    out["consistency"]["rate"] = _mean([p["match_rate"] for p in partners])
    out["score"] = score({d: out[d] for d in DIMENSIONS if d in out})
    return out


def withhold(
    report: Mapping[str, Any], columns: Iterable[str], *, entity_key: str
) -> dict[str, Any]:
    """The report without any figure of ``columns`` (lower-case names: items on the
    negative list, whose figures are never released, not even in aggregate), its rates
    recomputed over what remains; the entity key's withholding takes uniqueness along."""
    hidden = {c.lower() for c in columns}
    if not hidden:
        return dict(report)
    out = copy.deepcopy(dict(report))
    for dim in ("completeness", "validity"):
        out[dim]["columns"] = {
            n: e for n, e in out[dim]["columns"].items() if n.lower() not in hidden
        }
    out["consistency"]["partners"] = {
        label: e
        for label, e in out["consistency"]["partners"].items()
        if label.split(" -> ", 1)[0].lower() not in hidden
        and label.split(" -> ", 1)[1].lower() not in hidden
    }
    if entity_key.lower() in hidden:
        out["uniqueness"] = {"declared": out["uniqueness"]["declared"], "rate": None}
    withheld = recompute(out)
    withheld["withheld"] = "figures of items on the negative list are not shown"
    return withheld


def report_sha256(report: Mapping[str, Any]) -> str:
    """Digest of the report (RFC 8785 canonical JSON), as the certificate binds it."""
    return hashlib.sha256(rfc8785.dumps(dict(report))).hexdigest()


def score(report: Mapping[str, Any]) -> float | None:
    """100 x the mean of the assessable dimension rates (timeliness if present)."""
    rates = [report[d]["rate"] for d in DIMENSIONS if isinstance(report.get(d), Mapping)]
    mean = _mean(rates)
    return None if mean is None else round(100 * mean, 1)


def timeliness(update_frequency: str, registered_at: datetime, now: datetime) -> dict[str, Any]:
    """A version's age against its declared update period."""
    period = PERIOD_DAYS.get(update_frequency)
    age_days = max(0.0, (now - registered_at).total_seconds() / 86_400)
    if period is None:
        rate = None
    else:
        rate = 1.0 if age_days <= period else round(period / age_days, 4)
    return {
        "rate": rate,
        "age_days": round(age_days, 1),
        "period_days": period,
        "update_frequency": update_frequency,
    }


def with_timeliness(
    report: Mapping[str, Any], registered_at: datetime, now: datetime
) -> dict[str, Any]:
    """The certified report plus timeliness as of ``now``, and the score over all five."""
    out = {key: value for key, value in report.items() if key != "score"}
    out["certified_score"] = report.get("score")
    out["timeliness"] = timeliness(str(report["update_frequency"]), registered_at, now)
    out["score"] = score(out)
    return out
