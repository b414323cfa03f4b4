"""DP accuracy of correlation and regression: each output against DuckDB's own value.

Usage::

    python bench/comoments_accuracy.py                   # 1,000 persons, 20 runs
    python bench/comoments_accuracy.py --persons 20000 --repetitions 20 --epsilon 1

The census-like table of ``bench/census.py`` (one row per person) is registered with
``bench/census.toml`` through the real registration path, one ``dp`` grant per run
(``dp_accuracy.SandboxSide``: a fresh operator is a fresh draw), and one query of
``corr``, ``regr_slope``, ``regr_intercept`` and ``regr_avgx`` of income on age runs
through ``QueryService``.  For each output it prints how many runs answered (a
correlation is NULL where a noisy variance is not positive) and the median absolute
error against the same aggregate in raw DuckDB over the rows clamped to the declared
bounds (what the sandbox answers about), with the true value.  SmartNoise SQL has no
``corr`` or ``covar``: nothing to set beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.census import write_csv
from bench.dp_accuracy import SandboxSide
from bench.dp_metrics import Query
from sandbox.core.classification import parse_classification

OUTPUTS = {
    "r": "corr(age, income)",
    "slope": "regr_slope(income, age)",
    "intercept": "regr_intercept(income, age)",
    "mean_age": "regr_avgx(income, age)",
}
SQL = "SELECT " + ", ".join(f"{f} AS {n}" for n, f in OUTPUTS.items()) + " FROM census.persons"
CLAMPED = (
    "SELECT greatest({alo}, least({ahi}, age)) AS age, "
    "greatest({ilo}, least({ihi}, income)) AS income FROM census.persons"
)


def main(argv: list[str] | None = None) -> dict[str, tuple[int, float | None, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=1000)
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    toml = Path(__file__).parent / "census.toml"
    spec = parse_classification(toml.read_text("utf-8"), source_name=toml.name)
    (alo, ahi), (ilo, ihi) = spec.column("age").bounds, spec.column("income").bounds
    out: dict[str, tuple[int, float | None, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        side = SandboxSide(Path(tmp) / "home", {})
        try:
            side.register_csv(spec, write_csv(Path(tmp) / "census.csv", args.persons, 14))
            clamped = CLAMPED.format(alo=alo, ahi=ahi, ilo=ilo, ihi=ihi)
            (truth,) = side.truth(SQL.replace("FROM census.persons", f"FROM ({clamped})"))
            actors = side.operators(spec, args.repetitions, args.epsilon, 1)
            answers = side.run(actors, [Query("comoments", SQL)], args.seed, args.epsilon)
        finally:
            side.close()
    runs = answers["comoments"]
    print(
        f"census, {args.persons} persons; ε = {args.epsilon:g} per query; "
        f"{args.repetitions} runs, seed {args.seed}"
    )
    for i, (name, form) in enumerate(OUTPUTS.items()):
        values = [a.rows[0][i] for a in runs if a.rows and a.rows[0][i] is not None]
        errors = [abs(float(v) - float(truth[i])) for v in values]
        median = statistics.median(errors) if errors else None
        out[name] = (len(values), median, float(truth[i]))
        shown = "-" if median is None else f"{median:.4g}"
        print(
            f"{form:30} answered {len(values):3}/{len(runs)}  median abs error {shown:>10}  "
            f"true {float(truth[i]):.4g}"
        )
    return out


if __name__ == "__main__":
    main()
