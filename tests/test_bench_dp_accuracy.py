"""Smoke test of ``bench/dp_accuracy.py``: the sandbox side on a tiny census, and its scoring.

No SmartNoise virtualenv needed (``--no-smartnoise``); seconds, not minutes.  The
figures of a 300-person table mean nothing; what is checked is that the bench runs the
real path (registration, dp grant, ``QueryService``), scores what it released against
raw DuckDB, and that its pieces (generator, scoring, the peer's metadata) say what the
report claims they do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import census, dp_accuracy
from sandbox.core.classification import parse_classification

BENCH = Path(dp_accuracy.__file__).parent
Answer, score, summarise = dp_accuracy.Answer, dp_accuracy.score, dp_accuracy.summarise


def test_sandbox_side_on_a_tiny_census(tmp_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                {"id": "n", "sql": "SELECT COUNT(*) AS n FROM census.persons"},
                {"id": "sex", "sql": "SELECT sex, COUNT(*) AS n FROM census.persons GROUP BY sex"},
                {"id": "mean", "sql": "SELECT AVG(age) AS a FROM census.persons"},
                {"id": "exact-age", "sql": "SELECT COUNT(*) FROM census.persons WHERE age = 37"},
                # another dialect's spelling: its truth is the DuckDB form it is read as
                {"id": "std", "sql": "SELECT sex, STD(income) AS s FROM census.persons GROUP BY 1"},
                # a query raw DuckDB cannot run has no truth: left out, not a crash
                {"id": "typo", "sql": "SELECT COUNTT(*) FROM census.persons"},
            ]
        ),
        "utf-8",
    )
    out = tmp_path / "out.json"
    args = ["--persons", "400", "--repetitions", "2", "--no-smartnoise"]
    result = dp_accuracy.main([*args, "--queries", str(queries), "--json", str(out)])
    assert json.loads(out.read_text("utf-8")) == json.loads(json.dumps(result))
    figures = result["figures"]["sandbox"]
    per_query = result["queries"]
    # A total over 400 persons is released in every repetition, close to the truth.
    assert per_query["n"]["sandbox"]["answered"] == 1.0
    assert figures["error_cells"] is not None and figures["error_cells"] < 0.5
    # Both sexes hold ~200 persons: far above any release threshold at ε = 1.
    assert per_query["sex"]["sandbox"]["group_share"] == 1.0
    # An exact age cuts inside the declared band: refused, by a named rule.
    assert per_query["exact-age"]["sandbox"]["answered"] == 0.0
    assert "guard.generalisation" in per_query["exact-age"]["sandbox"]["note"]
    assert result["contribution"]["max_ids"] == 1  # one row per person
    assert per_query["std"]["sandbox"]["answered"] == 1.0
    assert per_query["std"]["sandbox"]["group_share"] == 1.0  # keyed by sex, not by STD
    assert "typo" not in per_query


def test_census_is_deterministic_and_shaped() -> None:
    rows = census.generate(500, seed=3)
    assert rows == census.generate(500, seed=3)
    assert rows != census.generate(500, seed=4)
    assert len({r["person_id"] for r in rows}) == 500
    assert all(18 <= int(r["age"]) <= 90 for r in rows)  # type: ignore[call-overload]
    assert {r["education"] for r in rows} <= set(census.EDUCATION)
    assert {r["marital"] for r in rows} <= set(census.MARITAL)
    widowed = [r for r in rows if r["marital"] == "widowed"]
    assert widowed and min(int(r["age"]) for r in widowed) >= 35  # type: ignore[call-overload]


def test_score_matches_groups_across_engines() -> None:
    truth = [(30, "F", 10), (30, "M", 20), (40, "F", 0)]
    answer = Answer(rows=((30.0, "F", 11), ("30", "M", 10.0), (50, "F", 4)))
    s = score(answer, truth, keys=(0, 1))
    assert (s.groups_true, s.groups_released, s.spurious) == (3, 2, 1)
    assert s.errors == pytest.approx((0.1, 0.5))
    assert s.group_share == pytest.approx(2 / 3)
    zero = score(Answer(rows=((40, "F", 3),)), truth, keys=(0, 1))
    assert zero.errors == () and zero.zero_cells == 1


def test_matched_errors_compare_the_same_cells_on_both_sides() -> None:
    """A side that releases only the largest group is scored against the other on it alone."""
    truth = [("F", 100), ("M", 10)]
    wide = [score(Answer(rows=(("F", 101), ("M", 15))), truth, keys=(0,))] * 2
    narrow = [
        score(Answer(rows=(("F", 104),)), truth, keys=(0,)),
        score(Answer(rows=()), truth, keys=(0,)),
    ]
    matched = dp_accuracy.matched_errors({"wide": wide, "narrow": narrow})
    assert matched["wide"] == pytest.approx([0.01, 0.01])  # M (50% off) is not compared
    assert matched["narrow"] == pytest.approx([0.04])
    assert dp_accuracy.matched_errors({"wide": wide, "none": [narrow[1]]}) == {
        "wide": [],
        "none": [],
    }


def test_all_null_answers_and_unkeyed_groups_are_scored_as_such() -> None:
    truth = [("F", 10), ("M", 12)]
    # every value withheld: not an answer
    assert not score(Answer(rows=(("F", None),)), truth, (0,)).answered
    # GROUP BY sex without sex among the outputs: answered, but no row can be matched
    unkeyed = score(Answer(rows=((11,), (13,))), [(10,), (12,)], ())
    assert unkeyed.answered and unkeyed.groups_released == 0 and unkeyed.spurious == 0
    assert unkeyed.errors == ()
    # one true row and no key: scored as before
    assert score(Answer(rows=((11,),)), [(10,)], ()).errors == pytest.approx((0.1,))


def test_refusals_and_empty_results_are_unanswered() -> None:
    truth = [("F", 5), ("M", 7)]
    refused = score(Answer(error="guard.x: no"), truth, keys=(0,))
    empty = score(Answer(rows=()), truth, keys=(0,))
    full = score(Answer(rows=(("F", 5), ("M", 14))), truth, keys=(0,))
    assert not refused.answered and not empty.answered and full.answered
    figures = summarise({"a": [refused, full], "b": [empty, empty]}, grouped={"a", "b"})
    assert figures["answered"] == 0.25
    assert figures["groups_mean"] == pytest.approx((0.5 + 0.0) / 2)
    assert figures["error_cells"] == pytest.approx(0.5)  # cells 0.0 and 1.0


def test_key_positions_are_the_select_items_without_aggregates() -> None:
    sql = "SELECT FLOOR(age / 10) * 10 AS b, sex, COUNT(*), AVG(income) FROM t GROUP BY 1, 2"
    assert dp_accuracy.key_positions(sql) == (0, 1)
    assert dp_accuracy.key_positions("SELECT COUNT(*) FROM t") == ()
    assert dp_accuracy.key_positions("SELECT sex, STD(income), VAR(age) FROM t GROUP BY 1") == (0,)


def test_smartnoise_metadata_takes_the_classification_bounds() -> None:
    spec = parse_classification((BENCH / "census.toml").read_text("utf-8"))
    schema = {c: "BIGINT" for c in ("person_id", "age", "income")} | {
        c: "VARCHAR" for c in ("sex", "education", "marital")
    }
    meta = dp_accuracy.smartnoise_metadata(spec, schema, rows=1000, max_ids=1)
    table = meta["Collection"]["census"]["persons"]
    assert table["max_ids"] == 1 and table["row_privacy"] is False
    assert table["person_id"] == {"type": "int", "private_id": True}
    assert (table["income"]["lower"], table["income"]["upper"]) == spec.column("income").bounds
    assert (table["age"]["lower"], table["age"]["upper"]) == spec.column("age").bounds
    assert table["sex"] == {"type": "string"}


def test_query_files_parse() -> None:
    for path in (BENCH / "dp_queries").glob("*.jsonl"):
        queries = dp_accuracy.read_queries(path)
        assert queries and len({q.id for q in queries}) == len(queries)
        for q in queries:
            dp_accuracy.key_positions(q.sql)


def test_spread_is_each_repetition_alone() -> None:
    truth = [("F", 10), ("M", 10)]
    first = score(Answer(rows=(("F", 11),)), truth, keys=(0,))  # half the groups, 10% off
    second = score(Answer(rows=(("F", 10), ("M", 13))), truth, keys=(0,))  # all, 0% and 30%
    low, mid, high = dp_accuracy.spread({"q": [first, second]}, grouped={"q"})["groups_mean"]
    assert (low, mid, high) == pytest.approx((0.5, 0.75, 1.0))
    assert dp_accuracy.spread({"q": [first, second]}, {"q"})["error_cells"] == pytest.approx(
        (0.1, 0.125, 0.15)
    )


def test_the_fair_survey_table_matches_its_classification_and_queries(tmp_path: Path) -> None:
    """``bench/fair_csv.py`` writes statsmodels' layout as ``bench/fair.toml`` declares it;
    run through the sandbox side, every query of ``dp_queries/fair.jsonl`` is answered."""
    from bench import fair_csv

    header = '"rate_marriage","age","yrs_married","children","religious","educ",'
    header += '"occupation","occupation_husb","affairs"'
    rows = [
        f"{1 + i % 5},{22 + i % 20}.5,{i % 15}.5,{i % 4}.5,{1 + i % 4},{12 + i % 6},"
        f"{1 + i % 6},{1 + i % 6},{(i % 7) / 2}"
        for i in range(600)
    ]
    source = tmp_path / "fair_source.csv"
    source.write_text("\n".join([header, *rows]) + "\n", "utf-8")
    out = tmp_path / "fair.csv"
    assert fair_csv.write(fair_csv.source_text(source), out) == 600
    lines = out.read_text("utf-8").splitlines()
    assert lines[0].split(",") == fair_csv.COLUMNS
    first = lines[1].split(",")
    assert first[0] == "1" and first[5] == "" and first[7] == "student"  # NULL, a name
    spec = parse_classification((BENCH / "fair.toml").read_text("utf-8"))
    assert [c.name for c in spec.columns] == fair_csv.COLUMNS
    assert spec.contribution is None  # nothing declared: the draw decides
    figures = dp_accuracy.main(
        [
            "--table-csv",
            str(out),
            "--classification",
            str(BENCH / "fair.toml"),
            "--queries",
            str(BENCH / "dp_queries" / "fair.jsonl"),
            "--repetitions",
            "1",
            "--no-smartnoise",
        ]
    )
    assert figures["figures"]["sandbox"]["answered"] == 1.0, figures["queries"]


def test_the_ratings_table_is_drawn_above_the_default_and_answered(tmp_path: Path) -> None:
    """``bench/insteval.toml`` declares nothing about contribution and its students hold
    many rows each (as lme4's InstEval, ``bench/rdatasets_csv.py``): the draw raises the
    default's reach (``C·G = 6``), and no query of ``dp_queries/insteval.jsonl`` is refused
    by the sandbox side (on this small table some come back empty: each student rates in
    every department, and the entity counts keep three departments a student)."""
    from bench import rdatasets_csv

    spec = parse_classification((BENCH / "insteval.toml").read_text("utf-8"))
    assert [c.name for c in spec.columns] == rdatasets_csv.COLUMNS
    assert spec.contribution is None
    lines = [",".join(rdatasets_csv.COLUMNS)]
    for s in range(1, 401):
        for r in range(24 + s % 9):
            lines.append(f"{s},{1000 + r % 50},{2 + 2 * (s % 4)},{1 + r % 6},{r % 2},"
                         f"{1 + (s + r) % 14},{1 + (s * r) % 5}")  # fmt: skip
    out = tmp_path / "ratings.csv"
    out.write_text("\n".join(lines) + "\n", "utf-8")
    figures = dp_accuracy.main(
        [
            "--table-csv",
            str(out),
            "--classification",
            str(BENCH / "insteval.toml"),
            "--queries",
            str(BENCH / "dp_queries" / "insteval.jsonl"),
            "--repetitions",
            "1",
            "--no-smartnoise",
            "--setting",
            "default_bounds_epsilon=2",
        ]
    )
    assert all(q["sandbox"]["note"] == "" for q in figures["queries"].values())
    assert figures["queries"]["count-all"]["sandbox"]["answered"] == 1.0
    assert figures["contribution"]["C"] > 6  # raised, not the default C = 2
    # SmartNoise's max_ids is the drawn T (rows per student over a query's groups), the
    # bound it has the same meaning as, not the smallest (C, G) a query reports
    assert figures["contribution"]["max_ids"] >= figures["contribution"]["C"]
