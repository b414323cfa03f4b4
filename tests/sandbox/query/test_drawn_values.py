"""Values per entity drawn for a dataset that declares none (docs/disclosure.md, "Drawn
values per entity"): each groupable column's ``p``-quantile of an entity's distinct
values, drawn with the owner's ε beside the rows per entity, setting ``G`` and each
query's ``G_q`` (``sandbox.query.key_groups``)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from audit.queries import EntryFilter
from connectors.files import FileSource
from policies import Actor, Administration, GrantTerms, Licence, ReleaseMode, Role
from sandbox.core.classification import Level, parse_classification
from sandbox.core.db import derived_contribution
from sandbox.core.settings import Settings
from sandbox.platform import Platform
from sandbox.query.bounds_proposal import ACTION, owner_epsilon_spent
from sandbox.query.default_bounds import OUTCOME, stored_draw
from sandbox.query.guard import check_query
from sandbox.query.key_groups import declared_groups
from sandbox.query.noise import seeded_noise
from sandbox.query.parse import parse_query
from sandbox.query.service import QueryService
from tests.sandbox.query.test_guard import MAX_SQL_LENGTH, access

RATINGS = """
[dataset]
id = "univ.ratings"
title = "Ratings"
description = "One row per rating: student, semester, department, rating."
entity_key = "sid"

[columns.sid]
level = "L3"
role = "identifier"
type = "BIGINT"

[columns.semester]
level = "L1"
role = "dimension"
type = "BIGINT"

[columns.dept]
level = "L1"
role = "dimension"
type = "BIGINT"

[columns.y]
level = "L1"
role = "dimension"
type = "BIGINT"
measure = { bounds = [1, 5] }
"""

#: 1,500 students (enough for a quantile per column), each in one semester, rating 12
#: lectures in 6 of 8 departments.
STUDENTS = 1_500
LINES = ["sid,semester,dept,y"] + [
    f"{s},{2 * (1 + s % 4)},{(s + i % 6) % 8},{1 + (s + i) % 5}"
    for s in range(STUDENTS)
    for i in range(12)
]


def dp_platform(
    home: Path, toml: str, lines: list[str], **settings: object
) -> tuple[Platform, Actor]:
    """A platform with one dataset registered from ``lines`` and an operator holding a dp
    grant on it (ε 1 a query, 10 in all, up to L3)."""
    spec = parse_classification(toml)
    csv = home.parent / f"{spec.table}.csv"
    csv.write_text("\n".join(lines) + "\n")
    platform = Platform(Settings(home=home, threads=2, **settings))  # type: ignore[arg-type]
    platform.init()
    platform.register(spec, FileSource(csv, platform.settings.staging_dir), registered_by="t")
    admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
    host, now = Actor.host("test"), datetime.now(UTC)
    bureau_name = f"bureau-{spec.domain}"
    admin.create_account(
        host, bureau_name, role=Role.BUREAU, organisation="s", domains=(spec.domain,)
    )
    licence = Licence(number="L-1", valid_until=now + timedelta(days=1))
    admin.create_account(host, "op-a", role=Role.OPERATOR, organisation="a", licence=licence)

    def enrolled(account: str) -> Actor:
        code = admin.issue_enrolment(host, account, token_ttl=timedelta(hours=1)).code
        return platform.authority.authenticate(admin.redeem_enrolment(code).token)

    terms = GrantTerms(
        purpose_code="study",
        purpose_text="drawn values",
        valid_from=now - timedelta(minutes=1),
        valid_until=now + timedelta(days=1),
        max_level=Level.L3,  # count(DISTINCT sid) reads the entity key
        epsilon_total=10,
        epsilon_per_query=1,
        release_mode=ReleaseMode.DP,
    )
    admin.issue_grant(enrolled(bureau_name), spec.id, "op-a", terms, reason="t")
    return platform, enrolled("op-a")


def _entries(platform: Platform, action: str) -> list:
    found = platform.audit.entries(EntryFilter(action=action, dataset="univ.ratings"), limit=100)
    return sorted(found, key=lambda e: e.seq)


def test_students_by_department_keep_their_departments(tmp_path: Path) -> None:
    platform, operator = dp_platform(tmp_path / "home", RATINGS, LINES, default_bounds_epsilon=2.0)
    try:
        service = QueryService(platform, noise=seeded_noise(7))
        by_dept = "SELECT dept, count(DISTINCT sid) AS n FROM univ.ratings GROUP BY dept"
        bounds = service.explain(operator, by_dept)["contribution"]
        drawn = stored_draw(platform.engine, "univ.ratings")
        assert drawn is not None and drawn.values is not None
        values = dict(drawn.values)
        assert set(values) == {"semester", "dept", "y"}  # the groupable columns
        assert values["semester"] == 1 and values["dept"] == 6 and values["y"] == 5
        assert drawn.total == 12  # 12 ratings a student
        assert bounds["max_groups_per_entity"] == 6  # a student's departments
        # Each department has 1,125 students (6 of 8): at the default G = 3 half would be cut.
        result = service.run(operator, by_dept).table.to_pylist()
        assert len(result) == 8 and all(abs(r["n"] - 1_125) <= 60 for r in result), result
        by_semester = "SELECT semester, count(*) AS n FROM univ.ratings GROUP BY 1"
        assert service.explain(operator, by_semester)["contribution"]["max_groups_per_entity"] == 1
        # Spent and recorded: T's quantile, then whether there are enough students (a
        # quarter of ε), then the three columns' quantiles (ε each).
        spends = _entries(platform, ACTION)
        gate, columns = spends[-2].details, spends[-1].details
        assert gate["entities_at_least"] == 60 and gate["epsilon"] == 0.5  # ε 2: 6/(0.05·2)
        assert columns["values_per_entity"] == ["semester", "dept", "y"]
        assert columns["quantiles"] == 3 and columns["epsilon"] == 6.0
        (outcome,) = _entries(platform, OUTCOME)
        assert outcome.details["values_per_entity"] == values
        assert all(e.seq < outcome.seq for e in spends)
        spent = owner_epsilon_spent(platform, "univ.ratings")
        assert spent == sum(e.details["epsilon"] for e in spends)
    finally:
        platform.close()
    # Another process reads the stored draw: nothing more is spent.
    platform = Platform(Settings(home=tmp_path / "home", threads=2, default_bounds_epsilon=2.0))
    try:
        again = QueryService(platform).explain(operator, by_dept)["contribution"]
        assert again == bounds and owner_epsilon_spent(platform, "univ.ratings") == spent
    finally:
        platform.close()
    command = [sys.executable, "-m", "sandbox.cli", "--home", str(tmp_path / "home")]
    shown = subprocess.run(
        [*command, "dataset", "show", "univ.ratings"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=True,
    ).stdout
    assert "values per entity drawn: dept 6, semester 1, y 5" in shown


def test_a_draw_stored_before_values_is_completed_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    platform, operator = dp_platform(home, RATINGS, LINES, default_bounds_epsilon=2.0)
    by_dept = "SELECT dept, count(*) AS n FROM univ.ratings GROUP BY dept"
    try:
        QueryService(platform, noise=seeded_noise(3)).explain(operator, by_dept)
        with platform.engine.begin() as conn:  # as a draw stored by an older release
            conn.execute(sa.update(derived_contribution).values(values_per_entity=None))
        before = len(_entries(platform, ACTION))
    finally:
        platform.close()
    platform = Platform(Settings(home=home, threads=2, default_bounds_epsilon=2.0))
    try:
        bounds = QueryService(platform).explain(operator, by_dept)["contribution"]
        assert bounds["max_groups_per_entity"] == 6
        spends = _entries(platform, ACTION)
        assert len(spends) == before + 2 and spends[-1].details["values_per_entity"]
        drawn = stored_draw(platform.engine, "univ.ratings")
        assert drawn is not None and dict(drawn.values or ())["dept"] == 6
        QueryService(platform).explain(operator, by_dept)
        assert len(_entries(platform, ACTION)) == before + 2  # once
    finally:
        platform.close()


def test_declared_values_count_towards_g_beside_drawn_ones(tmp_path: Path) -> None:
    """dept declares 6 values per student, semester is drawn (1): G is 6, not 1 (a review
    found the drawn ones alone set G = 1 and a count by department 71-91% low)."""
    declared = RATINGS.replace(
        '[columns.dept]\nlevel = "L1"', '[columns.dept]\nvalues_per_entity = 6\nlevel = "L1"'
    )
    assert "values_per_entity = 6" in declared
    home = tmp_path / "home"
    platform, operator = dp_platform(home, declared, LINES, default_bounds_epsilon=2.0)
    try:
        service = QueryService(platform, noise=seeded_noise(9))
        by_dept = "SELECT dept, count(DISTINCT sid) AS n FROM univ.ratings GROUP BY dept"
        assert service.explain(operator, by_dept)["contribution"]["max_groups_per_entity"] == 6
        result = service.run(operator, by_dept).table.to_pylist()
        assert len(result) == 8 and all(abs(r["n"] - 1_125) <= 60 for r in result), result
        drawn = stored_draw(platform.engine, "univ.ratings")
        assert drawn is not None and "dept" not in dict(drawn.values or ())  # declared
    finally:
        platform.close()


def test_too_few_entities_draw_no_values(tmp_path: Path) -> None:
    """30 students: a quantile per column would be noise (``least_entities``: 60 at ε 2),
    so only the test of their number is spent, and G stays the default's."""
    few = LINES[:1] + LINES[1 : 1 + 30 * 12]
    platform, operator = dp_platform(tmp_path / "home", RATINGS, few, default_bounds_epsilon=2.0)
    try:
        sql = "SELECT dept, count(*) AS n FROM univ.ratings GROUP BY dept"
        bounds = QueryService(platform, noise=seeded_noise(5)).explain(operator, sql)
        assert bounds["contribution"]["max_groups_per_entity"] == 3
        drawn = stored_draw(platform.engine, "univ.ratings")
        assert drawn is not None and drawn.total == 12 and drawn.values == ()
        gate = _entries(platform, ACTION)[-1].details
        assert gate["entities_at_least"] == 60 and "quantiles" not in gate
    finally:
        platform.close()


def test_a_failed_values_draw_keeps_g_and_is_not_stored(tmp_path: Path, monkeypatch) -> None:
    from sandbox.core.errors import EnclaveError
    from sandbox.query import default_bounds

    real = default_bounds.per_entity_histogram

    def distinct_broken(run, table, entity, expr):  # type: ignore[no-untyped-def]
        if "DISTINCT" in expr:
            raise EnclaveError("the enclave is busy", rule="enclave.busy")
        return real(run, table, entity, expr)

    monkeypatch.setattr(default_bounds, "per_entity_histogram", distinct_broken)
    platform, operator = dp_platform(tmp_path / "home", RATINGS, LINES, default_bounds_epsilon=2.0)
    try:
        sql = "SELECT dept, count(*) AS n FROM univ.ratings GROUP BY dept"
        bounds = QueryService(platform).explain(operator, sql)["contribution"]
        assert bounds["max_groups_per_entity"] == 3  # the default's G
        assert _entries(platform, ACTION)[-1].details["values_per_entity"]  # spent, recorded
        drawn = stored_draw(platform.engine, "univ.ratings")
        assert drawn is not None and drawn.total == 12 and drawn.values is None
    finally:
        platform.close()


def test_key_groups_take_a_drawn_value_where_nothing_is_declared() -> None:
    grants = access(frozenset({"age", "gender", "diagnosis_code", "hospital_id"}))
    claims = grants["health.claims"]
    drawn = {
        "health.claims": type(claims)(
            **{**claims.__dict__, "drawn_groups": (("diagnosis_code", 5), ("gender", 7))}
        )
    }
    for sql, expected in (
        ("SELECT diagnosis_code, count(*) FROM health.claims GROUP BY 1", 5),
        ("SELECT gender, count(*) FROM health.claims GROUP BY 1", 1),  # declared wins
        ("SELECT age, diagnosis_code, count(*) FROM health.claims GROUP BY 1, 2", 10),
        ("SELECT hospital_id, count(*) FROM health.claims GROUP BY 1", None),
    ):
        checked = check_query(parse_query(sql, max_length=MAX_SQL_LENGTH), drawn)
        assert declared_groups(checked, drawn) == expected, sql


def test_the_entity_test_is_right_far_from_its_threshold() -> None:
    from fractions import Fraction

    from sandbox.query.bounds_quantile import enough_entities, least_entities

    q, eps = Fraction(95, 100), Fraction(1, 5)
    assert least_entities(q, eps) == 600  # (1 - q)·n·ε/2 ≥ 3 temperatures
    assert least_entities(q, Fraction(2)) == 60
    gate = eps / 4  # temperature 40
    said = {
        n: sum(enough_entities(n, 600, gate, seeded_noise(seed)) for seed in range(200))
        for n in (312, 600, 2_972)
    }
    assert said[312] <= 2 and said[2_972] >= 198  # InstEval's students; pbcseq's patients
    assert 60 <= said[600] <= 140  # at the threshold: either, about evenly
