"""A deterministic census-like table: one row per person, for ``bench/dp_accuracy.py``.

Usage: python bench/census.py [--persons 1000] [--seed 14] [--out census.csv]

Columns: ``person_id`` (the entity key), ``age`` (18-90), ``sex``, ``education``,
``marital``, ``income`` (yuan per year).  The marginals are shaped like an adult
population register: an ageing pyramid; more schooling among the young; marital
status that follows age; income log-normal, rising with schooling and peaking in the
late forties, about 7% with none, and a thin tail above the classification's clamping
bound (500,000).  Small cells exist on purpose (doctorates, widowed under 40), as in
real tables.  Same ``--persons`` and ``--seed``: the same file, byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path

__all__ = ["COLUMNS", "EDUCATION", "MARITAL", "generate", "write_csv"]

COLUMNS = ("person_id", "age", "sex", "education", "marital", "income")
EDUCATION = (
    "primary",
    "lower_secondary",
    "upper_secondary",
    "vocational",
    "bachelor",
    "master",
    "doctorate",
)
MARITAL = ("never_married", "married", "divorced", "widowed", "separated")
# Share of adults by age band (18-29, 30-39, ..., 80-90): an ageing population.
_AGE_BANDS = ((18, 29, 0.17), (30, 39, 0.17), (40, 49, 0.16), (50, 59, 0.18),
              (60, 69, 0.15), (70, 79, 0.11), (80, 90, 0.06))  # fmt: skip
# Education weights for the oldest and the youngest cohort; interpolated by birth year.
_EDU_OLD = (0.30, 0.30, 0.22, 0.10, 0.06, 0.015, 0.005)
_EDU_YOUNG = (0.03, 0.12, 0.30, 0.17, 0.28, 0.08, 0.02)
_EDU_INCOME = (0.62, 0.75, 0.92, 1.0, 1.35, 1.7, 2.0)


def _age(rng: random.Random) -> int:
    low, high, _ = rng.choices(_AGE_BANDS, weights=[w for *_, w in _AGE_BANDS])[0]
    return rng.randint(low, high)


def _education(rng: random.Random, age: int) -> str:
    young = min(1.0, max(0.0, (80 - age) / 55))
    weights = [o + (y - o) * young for o, y in zip(_EDU_OLD, _EDU_YOUNG, strict=True)]
    if age < 23:  # still studying: no higher degrees yet
        weights = [w if i < 4 else (w * 0.3 if i == 4 else 0.0) for i, w in enumerate(weights)]
    return rng.choices(EDUCATION, weights=weights)[0]


def _marital(rng: random.Random, age: int) -> str:
    never = max(0.04, 0.95 - 0.045 * (age - 18))
    widowed = 0.0 if age < 35 else min(0.5, 0.0002 * (age - 35) ** 2)
    divorced = 0.0 if age < 22 else min(0.12, 0.004 * (age - 22))
    separated = 0.0 if age < 22 else 0.02
    married = max(0.0, 1.0 - never - widowed - divorced - separated)
    return rng.choices(MARITAL, weights=[never, married, divorced, widowed, separated])[0]


def _income(rng: random.Random, age: int, education: str) -> int:
    if (age < 25 and rng.random() < 0.25) or rng.random() < 0.05:
        return 0  # students, unemployed, no declared income
    career = math.exp(-(((age - 48) / 22) ** 2))  # peaks in the late forties
    pension = 0.55 if age >= 63 else 1.0
    median = 48_000 * _EDU_INCOME[EDUCATION.index(education)] * (0.55 + 0.6 * career) * pension
    if rng.random() < 0.01:  # owners and executives: a Pareto tail, some above the bound
        return int(round(250_000 * rng.paretovariate(1.5), -2))
    return int(round(median * math.exp(rng.gauss(0, 0.6)), -2))


def generate(persons: int = 1000, seed: int = 14) -> list[dict[str, object]]:
    """The rows, in person_id order (a pure function of ``persons`` and ``seed``)."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(persons):
        age = _age(rng)
        education = _education(rng, age)
        rows.append(
            {
                "person_id": 100_000 + i,
                "age": age,
                "sex": "F" if rng.random() < 0.508 else "M",
                "education": education,
                "marital": _marital(rng, age),
                "income": _income(rng, age, education),
            }
        )
    return rows


def write_csv(path: Path, persons: int = 1000, seed: int = 14) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(generate(persons, seed))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path, default=Path("census.csv"))
    args = parser.parse_args()
    print(write_csv(args.out, args.persons, args.seed))


if __name__ == "__main__":
    main()
