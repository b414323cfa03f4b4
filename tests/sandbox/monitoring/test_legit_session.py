"""A legitimate analyst's week raises no alert above ``info`` (issue 16, done means).

The utility corpus (tests/utility/queries.jsonl), run twice as its operators on a demo
deployment, each grant given a dp budget large enough for a year of such weeks.  The
decisions recorded in the audit trail are then re-timed over a simulated working week
(the first run Monday to Wednesday, the second Thursday and Friday, 09:00-17:00 local,
in seq order) and re-evaluated by every detector (:func:`scan`).  The findings per
severity are printed (the false-positive count); none may be above ``info``.
"""

from __future__ import annotations

import collections
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audit import Entry, EntryFilter
from policies import Administration, ReleaseMode
from policies import grants as grant_store
from sandbox.core.errors import SandboxError
from sandbox.monitoring import Budget, event_from_entry, scan, thresholds_of
from sandbox.monitoring.detectors import severity_rank
from sandbox.monitoring.monitor import entry_fields
from sandbox.query.service import QueryService
from tests.conftest import build_deployment

pytestmark = pytest.mark.slow

CORPUS = Path(__file__).parents[2] / "utility" / "queries.jsonl"
MONDAY_9H_LOCAL = datetime(2026, 11, 30, 1, 0, tzinfo=UTC).timestamp()  # 09:00 UTC+8
DAY, HOUR = 86400.0, 3600.0
BUDGET = 100_000.0


def _week_time(run: int, k: int, n: int) -> float:
    """The k-th of n queries of one run, spread over its days' working hours."""
    days = (0, 1, 2) if run == 0 else (3, 4)
    slot = k * len(days) / n
    day = days[int(slot)]
    return MONDAY_9H_LOCAL + day * DAY + (slot - int(slot)) * 8 * HOUR


def test_the_utility_corpus_twice_over_a_week_raises_nothing_above_info(tmp_path: Path) -> None:
    platform, tokens = build_deployment(tmp_path / "home")
    try:
        actors = {n: platform.authority.authenticate(t) for n, t in tokens.items()}
        admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
        bureaus = {
            "health": "bureau-health",
            "market": "bureau-market",
            "hrss": "bureau-hrss",
            "transport": "bureau-transport",
        }
        budgets: dict[tuple[str, str], Budget] = {}
        with platform.engine.connect() as conn:
            granted = grant_store.list_grants(conn)
        for grant in granted:  # a dp grant's budget only narrows: a new grant instead
            bureau = actors[bureaus[grant.dataset.split(".")[0]]]
            admin.revoke_grant(bureau, grant.id, reason="replaced for the legitimate week")
            terms = replace(
                grant.terms,
                release_mode=ReleaseMode.DP,
                epsilon_total=BUDGET,
                epsilon_per_query=1.0,
            )
            done = admin.issue_grant(
                bureau, grant.dataset, grant.operator, terms, reason="a year of legitimate weeks"
            )
            budgets[(done.operator, done.dataset)] = Budget(
                BUDGET, done.valid_from.timestamp(), done.valid_until.timestamp()
            )
        service = QueryService(platform)
        lines = [json.loads(x) for x in CORPUS.read_text().splitlines() if x.strip()]
        runs: dict[int, list[int]] = {0: [], 1: []}
        first = platform.audit.size()
        for run in (0, 1):
            for line in lines:
                try:
                    service.run(actors[line["as"]], line["sql"])
                except SandboxError:
                    pass
            runs[run].append(platform.audit.size())
        entries = [
            Entry.from_bytes(raw)
            for raw in platform.audit.store.select_entries(
                EntryFilter(action="dataset.query").conditions(),
                offset=0,
                limit=10_000,
                newest_first=False,
            )
        ]
    finally:
        platform.close()
    assert len(entries) >= 2 * len(lines)
    boundary = runs[0][0]
    by_operator: dict[str, list] = collections.defaultdict(list)
    for entry in entries:
        if entry.seq < first:
            continue
        event = event_from_entry(entry_fields(entry), datasets=[d for _o, d in budgets])
        assert event is not None
        by_operator[event.operator].append((0 if entry.seq < boundary else 1, event))
    answered = [e for tagged in by_operator.values() for _r, e in tagged if e.allowed]
    assert answered and all(e.shape and e.sets for e in answered)  # every answer fingerprinted
    th = thresholds_of(platform.settings)
    found = []
    for operator, tagged in by_operator.items():
        week = []
        for run in (0, 1):
            mine = [e for r, e in tagged if r == run]
            week.extend(replace(e, at=_week_time(run, k, len(mine))) for k, e in enumerate(mine))
        own = {d: b for (o, d), b in budgets.items() if o == operator}
        found.extend(scan(operator, week, th, own))
    counts = collections.Counter(f.severity for f in found)
    detectors = collections.Counter((f.detector, f.severity) for f in found)
    print(
        f"\nlegitimate week: {sum(len(v) for v in by_operator.values())} decisions, "
        f"findings by severity {dict(counts)}, by detector {dict(detectors)}"
    )
    above_info = [f for f in found if severity_rank(f.severity) > 0]
    assert not above_info, [(f.detector, f.severity, f.summary) for f in above_info[:5]]
