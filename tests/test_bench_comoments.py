"""Smoke test of ``bench/comoments_accuracy.py``: it runs the real path and scores it.

A 400-person table and three runs: the figures mean little; what is checked is that
each output is answered through ``QueryService`` and scored against DuckDB's own
aggregate over the clamped rows (a true value that is a correlation, a mean age).
"""

from __future__ import annotations

import math

from bench import comoments_accuracy


def test_the_bench_answers_and_scores_each_output() -> None:
    figures = comoments_accuracy.main(["--persons", "400", "--repetitions", "3"])
    assert set(figures) == {"r", "slope", "intercept", "mean_age"}
    answered, error, truth = figures["r"]
    assert -1 <= truth <= 1 and 0 <= answered <= 3
    answered, error, truth = figures["mean_age"]
    assert answered == 3 and error is not None and math.isfinite(error)
    assert 18 <= truth <= 100  # the generator's ages
