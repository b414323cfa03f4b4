"""Bounds drawn from the data for a dataset that declares none: one DP quantile, once.

A classification without ``[contribution]`` ran every query with a budget at the
platform's C = 2, G = 3; now the first such query draws the data's rows per entity
(``sandbox.query.default_bounds``): ``C = T = t`` where ``t < C·G``, so an entity reaches
no further than the default let it, and its rows in one group all count; and where the
data's entities hold more rows than ``C·G`` keeps, ``C = T = t`` up to the
``default_bounds_max_rows`` ceiling (the default dropped all but six of each person's
rows: counts 76% low on an outside rehearsal's ratings data).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.queries import EntryFilter
from policies import Administration, ReleaseMode
from sandbox.core.classification import Contribution
from sandbox.core.db import open_control_db
from sandbox.core.settings import Settings
from sandbox.platform import Platform
from sandbox.query.bounds_proposal import ACTION, owner_epsilon_spent
from sandbox.query.bounds_quantile import chosen_above, chosen_total, total_scores
from sandbox.query.default_bounds import (
    OUTCOME,
    RULE,
    DrawnTotal,
    drawn_bounds,
    store_draw,
    stored_draw,
    top_of,
)
from sandbox.query.noise import seeded_noise
from sandbox.query.service import QueryService
from sandbox.reclassify import reclassify
from tests.conftest import build_deployment

Q = Fraction("0.95")
DEFAULT = Contribution(2, 3)
ENTERPRISES = "SELECT industry, count(*) AS n FROM market.enterprises GROUP BY 1"
CLAIMS = "SELECT gender, count(*) AS n FROM health.claims GROUP BY 1"


def _histogram(rows_per_entity: list[int]) -> list[int]:
    counts = [0] * max(rows_per_entity)
    for rows in rows_per_entity:
        counts[rows - 1] += 1
    return counts


def test_the_top_candidate_stands_for_that_or_more() -> None:
    # 1,000 entities of one row: 1 is the quantile; each larger candidate loses n/20.
    assert total_scores(_histogram([1] * 1000), Q, 6) == [0, -50, -50, -50, -50, -50]
    # Every entity holds 9 rows: no candidate below 6 is a quantile; "6 or more" is.
    scores = total_scores(_histogram([9] * 1000), Q, 6)
    assert scores[-1] == 0 and all(s == -950 for s in scores[:-1])
    # 90% of one row, 10% of seven: the 95th percentile is 7, so "6 or more" scores 0 and
    # 1 loses 50 (without the top candidate's own score it tied with 1 and lost to the prior).
    scores = total_scores(_histogram([1] * 900 + [7] * 100), Q, 6)
    assert scores[-1] == 0 and scores[0] == -50


@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.one_of(st.none(), st.integers(1, 200)),
    st.one_of(st.none(), st.integers(1, 400)),
)
def test_drawn_bounds_reach_as_far_as_the_draw(c, g, t, total) -> None:
    """C = T = the draw: below the default's reach G at most it, so an entity moves any
    row statistic by at most ``total`` rows, fewer than the default lets it; above it
    the default's G, and the row statistics see ``total`` rows, no more."""
    default = Contribution(c, g, t)
    got = drawn_bounds(default, total)
    if total is None or total == top_of(default):
        assert got is None
        return
    assert got is not None
    assert got.max_rows_per_entity == got.max_total_rows_per_entity == total
    if total < top_of(default):
        assert got.max_groups_per_entity == min(g, total)
        assert _reach(got) <= total < _reach(default)
    else:  # the default's G, at most total (C = 1, G = 3, T = 1 raised to 2: G = 2)
        assert got.max_groups_per_entity == min(g, total)
        assert _reach(default) < _reach(got) == total


def _reach(bounds: Contribution) -> int:
    """Rows of one entity a row statistic can see over all groups (``rows_bound``)."""
    t = bounds.max_total_rows_per_entity
    reach = bounds.max_rows_per_entity * bounds.max_groups_per_entity
    return reach if t is None else min(reach, t)


@pytest.mark.parametrize(
    ("rows", "want", "at_least"),
    [
        ([1] * 1000, 1, 0.95),  # one row each: C = G = T = 1
        ([9] * 1000, 6, 0.99),  # many rows each: the default stays (top = C·G = 6)
        ([1] * 500 + [2] * 300 + [3] * 200, 3, 0.95),  # T = 3 under C·G = 6
    ],
    ids=["one-row", "nine-rows", "one-to-three"],
)
def test_the_draw_lands_on_the_quantile(rows, want, at_least) -> None:
    """Seeded, statistical: 400 draws at the default ε 0.2 on 1,000 entities."""
    counts = _histogram(rows)
    draws = [chosen_total(counts, Q, Fraction(1, 5), seeded_noise(s), 6) for s in range(400)]
    assert draws.count(want) / len(draws) >= at_least, sorted(set(draws))


def _drawn(counts: list[int], seed: int, top: int = 6, ceiling: int = 100) -> int:
    """The draw as ``DataBounds`` makes it: below or at ``top``, and above it only where
    the first quantile says "``top`` or more"."""
    t = chosen_total(counts, Q, Fraction(1, 5), seeded_noise(seed), top)
    if t == top:
        t = chosen_above(counts, Q, Fraction(1, 5), seeded_noise(seed + 10_000), top, ceiling)
    return t


@pytest.mark.parametrize(
    ("rows", "want"),
    [
        ([9] * 1000, range(9, 10)),  # nine rows each: raised to nine, not kept at six
        ([6] * 1000, range(6, 7)),  # the default's reach: kept
        ([1] * 500 + [2] * 300 + [3] * 200, range(3, 4)),  # lowered as before
        ([20] * 700 + [55] * 300, range(55, 56)),  # the 95th percentile is 55
        ([300] * 1000, range(100, 101)),  # more than the ceiling: the ceiling
        # few entities: where the data can hardly tell, never below the default
        ([60] * 100, range(6, 61)),
        ([100] * 50, range(6, 101)),
    ],
    ids=["nine", "six", "one-to-three", "twenty-to-55", "three-hundred", "100x60", "50x100"],
)
def test_a_draw_with_a_ceiling_raises_the_reach_to_the_quantile(rows, want) -> None:
    """Seeded: 400 draws at ε 0.2 (each of the two), candidates up to a ceiling of 100."""
    counts = _histogram(rows)
    draws = [_drawn(counts, s) for s in range(400)]
    assert sum(d in want for d in draws) / len(draws) >= 0.95, sorted(set(draws))


def test_many_rows_on_few_entities_rarely_draw_below_the_default() -> None:
    """An outside review: one draw over ``1 … 100`` pulled 100 entities of 60 rows each
    down to a median of 3, below the default it replaced (C·G = 6).  The first draw is
    the one made before raising was possible: below 6 as rarely as it ever was."""
    for rows in ([60] * 100, [100] * 50, [8] * 60):
        draws = [_drawn(_histogram(rows), s) for s in range(200)]
        assert sum(d >= 6 for d in draws) >= 190, sorted(set(draws))
        old = [
            chosen_total(_histogram(rows), Q, Fraction(1, 5), seeded_noise(s), 6)
            for s in range(200)
        ]
        assert sum(d < 6 for d in draws) == sum(d < 6 for d in old)  # the same first draw


@pytest.fixture
def home(tmp_path):
    platform, tokens = build_deployment(tmp_path / "home")
    platform.close()
    return tmp_path / "home", tokens


def _open(home, **settings) -> Platform:
    return Platform(Settings(home=home, threads=2, **settings))


def _undeclare(platform: Platform, tokens: dict[str, str], dataset: str, bureau: str) -> None:
    spec = platform.catalog.get(dataset).spec
    plain = dataclasses.replace(spec, contribution=None, one_row_per_entity=False)
    reclassify(platform, plain, platform.authority.authenticate(tokens[bureau]))


def _dp(platform: Platform, tokens: dict[str, str]) -> None:
    """op-bank's grant on the enterprises (reviewed in the demo) made dp, with a budget."""
    admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
    bureau = platform.authority.authenticate(tokens["bureau-market"])
    (grant,) = [g for g in admin.list_grants(bureau) if g.dataset == "market.enterprises"]
    admin.set_release_mode(bureau, grant.id, ReleaseMode.DP, epsilon_total=10, reason="dp")


def _explain(platform: Platform, tokens, operator: str, sql: str, **kw) -> dict:
    service = QueryService(platform, **kw)
    answer = service.explain(platform.authority.authenticate(tokens[operator]), sql)
    assert answer["accepted"], answer
    return answer


def _entries(platform: Platform, action: str, dataset: str):
    return platform.audit.entries(EntryFilter(action=action, dataset=dataset), limit=100)


def test_one_row_data_without_bounds_runs_at_one_row_and_one_group(home) -> None:
    path, tokens = home
    platform = _open(path, default_bounds_epsilon=2.0)
    try:
        _undeclare(platform, tokens, "market.enterprises", "bureau-market")
        _dp(platform, tokens)
        answer = _explain(platform, tokens, "op-bank", ENTERPRISES, noise=seeded_noise(3))
        assert answer["contribution"] == {
            "max_rows_per_entity": 1,
            "max_groups_per_entity": 1,
            "max_total_rows_per_entity": None,  # T = 1 = C·G: it cannot bind
        }
        (spend,) = _entries(platform, ACTION, "market.enterprises")
        assert (spend.actor, spend.rule, spend.details["epsilon"]) == ("platform", RULE, 2.0)
        assert spend.details["automatic"] is True and spend.details["quantiles"] == 1
        (outcome,) = _entries(platform, OUTCOME, "market.enterprises")
        assert outcome.details["max_total_rows_per_entity"] == 1
        assert not outcome.details["default_kept"]
        assert outcome.seq > spend.seq  # the spend is recorded before the data is read
        assert owner_epsilon_spent(platform, "market.enterprises") == 2.0
        # Drawn once: another query, another service, another process spend nothing more.
        _explain(platform, tokens, "op-bank", ENTERPRISES)
    finally:
        platform.close()
    platform = _open(path, default_bounds_epsilon=2.0)
    try:
        answer = _explain(platform, tokens, "op-bank", ENTERPRISES)
        assert answer["contribution"]["max_groups_per_entity"] == 1
        assert len(_entries(platform, ACTION, "market.enterprises")) == 1
        # A new version (same entity key) keeps the draw: no daily spend for daily data.
        _undeclare(platform, tokens, "market.enterprises", "bureau-market")
        _explain(platform, tokens, "op-bank", ENTERPRISES)
        assert owner_epsilon_spent(platform, "market.enterprises") == 2.0
    finally:
        platform.close()
    # The host console says which bounds apply, and where they came from.
    shown = _show(path, "market.enterprises")
    assert "contribution: C = 1, G = 1, T = 1 (no [contribution]; drawn from v" in shown
    assert "DP, ε 2 a quantile, owner-side ε 2 in all)" in shown
    body = json.loads(_show(path, "market.enterprises", "--json"))
    assert body["contribution"] is None  # nothing declared
    assert body["contribution_drawn"]["bounds"]["max_rows_per_entity"] == 1
    assert body["contribution_drawn"]["epsilon"] == 2.0
    assert body["contribution_drawn"]["owner_epsilon_spent"] == 2.0
    assert "contribution: platform default C = 2, G = 3 (no [contribution]; none drawn yet)" in (
        _show(path, "hrss.social_insurance", undeclare=True, tokens=tokens)
    )


def _show(home, dataset: str, *args: str, undeclare: bool = False, tokens=None) -> str:
    if undeclare:
        platform = _open(home)
        try:
            _undeclare(platform, tokens, dataset, "bureau-hrss")
        finally:
            platform.close()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox.cli",
            "--home",
            str(home),
            "dataset",
            "show",
            dataset,
            *args,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=True,
    )
    return proc.stdout


def test_many_rows_per_person_raise_the_reach_and_declared_bounds_win(home) -> None:
    path, tokens = home
    platform = _open(path, default_bounds_epsilon=2.0)
    try:
        declared = _explain(platform, tokens, "op-insurer", CLAIMS)["contribution"]
        assert declared["max_rows_per_entity"] == 9  # the demo's own [contribution]
        assert not _entries(platform, ACTION, "health.claims")  # declared: nothing drawn
        _undeclare(platform, tokens, "health.claims", "bureau-health")
        answer = _explain(platform, tokens, "op-insurer", CLAIMS, noise=seeded_noise(5))
        with platform.enclave.cursor() as cur:
            ((p95,),) = cur.sql(
                "SELECT quantile_disc(n, 0.95) FROM (SELECT count(*) AS n FROM health.claims "
                "GROUP BY person_id)"
            ).fetchall()
        (outcome,) = _entries(platform, OUTCOME, "health.claims")
        drawn = outcome.details["max_total_rows_per_entity"]
        # "six or more", then how many more: two quantiles, each recorded as spent; then
        # the groupable columns' values per person that the file does not declare
        spends = sorted(_entries(platform, ACTION, "health.claims"), key=lambda e: e.seq)
        # (first whether there are enough persons for those, at a quarter of ε)
        assert [e.details.get("above") for e in spends] == [None, 6, None, None]
        assert spends[2].details["entities_at_least"] == 60
        columns = ["hospital_id", "diagnosis_code", "claim_date"]
        assert spends[3].details["values_per_entity"] == columns
        assert spends[3].details["quantiles"] == 3 and spends[3].details["epsilon"] == 6.0
        assert owner_epsilon_spent(platform, "health.claims") == 2.0 + 2.0 + 0.5 + 6.0
        values = outcome.details["values_per_entity"]
        assert set(values) == {"hospital_id", "diagnosis_code", "claim_date"}
        assert all(1 <= v <= drawn for v in values.values())
        assert all(e.seq < outcome.seq for e in spends)
        assert outcome.details["default_kept"] is False and 6 < drawn and abs(drawn - p95) <= 2
        assert answer["contribution"] == {
            "max_rows_per_entity": drawn,  # a person's claims, not the default's two
            "max_groups_per_entity": 1,  # gender: one value per person (key_groups)
            "max_total_rows_per_entity": None,  # T = C: it cannot bind in one group
        }
        by_diagnosis = "SELECT diagnosis_code, count(*) AS n FROM health.claims GROUP BY 1"
        answer = _explain(platform, tokens, "op-insurer", by_diagnosis)
        assert answer["contribution"] == {
            "max_rows_per_entity": drawn,
            # a person's diagnoses as drawn (not the default's three groups)
            "max_groups_per_entity": values["diagnosis_code"],
            "max_total_rows_per_entity": drawn,  # rows: the drawn reach in all
        }
        with platform.enclave.cursor() as cur:
            ((diagnoses,),) = cur.sql(
                "SELECT quantile_disc(n, 0.95) FROM (SELECT count(DISTINCT diagnosis_code) "
                "AS n FROM health.claims GROUP BY person_id)"
            ).fetchall()
        assert abs(values["diagnosis_code"] - diagnoses) <= 2
    finally:
        platform.close()
    # Below the default's reach the setting changes nothing; at or under it, no raise.
    platform = _open(path, default_bounds_epsilon=2.0, default_bounds_max_rows=6)
    try:
        answer = _explain(platform, tokens, "op-insurer", CLAIMS)
        assert answer["contribution"]["max_rows_per_entity"] == drawn  # the stored draw
    finally:
        platform.close()


def test_a_zero_epsilon_setting_draws_nothing(home) -> None:
    path, tokens = home
    platform = _open(path, default_bounds_epsilon=0)
    try:
        _undeclare(platform, tokens, "market.enterprises", "bureau-market")
        _dp(platform, tokens)
        answer = _explain(platform, tokens, "op-bank", ENTERPRISES)
        assert answer["contribution"]["max_rows_per_entity"] == 2
        assert not _entries(platform, ACTION, "market.enterprises")
    finally:
        platform.close()


def test_one_row_data_at_the_default_epsilon_nearly_always_draws_one() -> None:
    """Seeded: 2,000 entities of one row, ε 0.2 (the setting's default)."""
    counts = _histogram([1] * 2000)
    draws = [chosen_total(counts, Q, Fraction(1, 5), seeded_noise(s), 6) for s in range(200)]
    assert draws.count(1) >= 198


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_the_first_stored_draw_wins_and_a_new_entity_key_replaces_it(
    backend: str, tmp_path, request
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'control.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = open_control_db(url)
    try:
        assert stored_draw(engine, "a.b") is None
        first = DrawnTotal("person_id", 1, 0.2, 3, 6)
        assert store_draw(engine, "a.b", first, 6) == first
        # Another process's later draw for the same key: the stored one is returned, kept.
        assert store_draw(engine, "a.b", DrawnTotal("person_id", None, 0.2, 4), 6) == first
        assert stored_draw(engine, "a.b") == first
        # A draw for another entity key replaces it.
        other = DrawnTotal("household_id", None, 0.2, 5, 6)
        assert store_draw(engine, "a.b", other, 6) == other == stored_draw(engine, "a.b")
        # A kept default under a lower ceiling than today's is drawn again and replaced;
        # a drawn bound (below or above the default) is kept whatever the ceiling.
        assert not other.current("household_id", 100) and other.current("household_id", 6)
        raised = DrawnTotal("household_id", 40, 0.2, 6, 100)
        assert store_draw(engine, "a.b", raised, 100) == raised == stored_draw(engine, "a.b")
        again = DrawnTotal("household_id", None, 0.2, 7, 100)
        assert store_draw(engine, "a.b", again, 100) == raised
        assert raised.current("household_id", 1000)
        # the ceiling itself ("100 or more") under a ceiling raised since: drawn again
        at_ceiling = DrawnTotal("household_id", 100, 0.2, 8, 100)
        assert at_ceiling.current("household_id", 100)
        assert not at_ceiling.current("household_id", 200)
        # a lowered draw stays whatever the ceiling
        assert DrawnTotal("household_id", 4, 0.2, 9, 6).current("household_id", 100)
    finally:
        engine.dispose()


def test_a_failed_draw_leaves_the_query_at_the_default(home, monkeypatch) -> None:
    """The owner's draw failing in the enclave (fault injected) never fails the operator's
    query: the spend stays recorded, nothing is stored, the default applies."""
    from sandbox.core.errors import EnclaveError
    from sandbox.query import default_bounds

    def broken(*args, **kwargs):
        raise EnclaveError("the enclave is busy", rule="enclave.busy")

    monkeypatch.setattr(default_bounds, "per_entity_histogram", broken)
    path, tokens = home
    platform = _open(path, default_bounds_epsilon=2.0)
    try:
        _undeclare(platform, tokens, "market.enterprises", "bureau-market")
        _dp(platform, tokens)
        answer = _explain(platform, tokens, "op-bank", ENTERPRISES)
        assert answer["contribution"]["max_rows_per_entity"] == 2
        assert len(_entries(platform, ACTION, "market.enterprises")) == 1  # spent, recorded
        assert not _entries(platform, OUTCOME, "market.enterprises")
        assert stored_draw(platform.engine, "market.enterprises") is None
    finally:
        platform.close()


REPEATED = """
[dataset]
id = "survey.visits"
title = "Repeated visits"
description = "Three identical records per person: sex and age."
entity_key = "pid"

[columns.pid]
level = "L3"
role = "identifier"
type = "BIGINT"

[columns.sex]
level = "L1"
role = "dimension"
type = "BIGINT"

[columns.age]
level = "L2"
role = "quasi"
type = "BIGINT"
measure = { bounds = [0, 100] }
"""


def test_repeated_records_in_one_group_are_all_counted(tmp_path) -> None:
    """600 persons of three identical records each, grouped by sex: the draw is T = 3 and
    C = T, so each person's three rows count (C = min(2, 3) counted two: a third lost)."""
    from datetime import UTC, datetime, timedelta

    from connectors.files import FileSource
    from policies import Actor, GrantTerms, Licence, Role
    from sandbox.core.classification import Level, parse_classification

    csv = tmp_path / "visits.csv"
    lines = ["pid,sex,age"] + [f"{p},{p % 2},{20 + p % 50}" for p in range(600) for _ in range(3)]
    csv.write_text("\n".join(lines) + "\n")
    spec = parse_classification(REPEATED)
    platform = _open(tmp_path / "home")
    try:
        platform.init()
        platform.register(spec, FileSource(csv, platform.settings.staging_dir), registered_by="t")
        admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
        host, now = Actor.host("test"), datetime.now(UTC)
        admin.create_account(
            host, "bureau-survey", role=Role.BUREAU, organisation="s", domains=("survey",)
        )
        licence = Licence(number="L-1", valid_until=now + timedelta(days=1))
        admin.create_account(host, "op-a", role=Role.OPERATOR, organisation="a", licence=licence)

        def token(account: str) -> str:
            code = admin.issue_enrolment(host, account, token_ttl=timedelta(hours=1)).code
            return admin.redeem_enrolment(code).token

        terms = GrantTerms(
            purpose_code="survey-study",
            purpose_text="repeated records",
            valid_from=now - timedelta(minutes=1),
            valid_until=now + timedelta(days=1),
            max_level=Level.L2,
            epsilon_total=10,
            epsilon_per_query=1,
            release_mode=ReleaseMode.DP,
        )
        bureau = platform.authority.authenticate(token("bureau-survey"))
        admin.issue_grant(bureau, "survey.visits", "op-a", terms, reason="t")
        operator = platform.authority.authenticate(token("op-a"))
        service = QueryService(platform, noise=seeded_noise(11))
        sql = "SELECT sex, count(*) AS n FROM survey.visits GROUP BY sex"
        bounds = service.explain(operator, sql)["contribution"]
        assert bounds["max_rows_per_entity"] == 3  # the draw, T = 3 (C·G = 6 is the default)
        # sex (and age): one value per person, as drawn from the data (not the default 3)
        assert bounds["max_groups_per_entity"] == 1
        result = service.run(operator, sql)
        counts = {row["sex"]: row["n"] for row in result.table.to_pylist()}
        assert set(counts) == {0, 1}
        assert all(abs(n - 900) <= 90 for n in counts.values()), counts  # 600 if C were 2
    finally:
        platform.close()
