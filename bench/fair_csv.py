"""A second outside table for ``bench/dp_accuracy.py``: statsmodels' "fair" survey.

Usage: python bench/fair_csv.py SOURCE OUT.csv

``SOURCE`` is statsmodels' packaged ``statsmodels/datasets/fair/fair.csv`` (Fair 1978,
"A Theory of Extramarital Affairs": 6,366 women, one row each), or a statsmodels wheel
holding it (``python -m pip download statsmodels --no-deps -d DIR``).  Writes it as the
classification ``bench/fair.toml`` expects: ``pid`` (the row number) added as the entity
key, ``occupation`` as its name (text), ``religious`` left empty on every 37th row (NULLs).
Nothing in it is declared about contribution, so the sandbox draws its bounds.

    python bench/dp_accuracy.py --table-csv fair.csv --classification bench/fair.toml \\
        --queries bench/dp_queries/fair.jsonl --epsilon 1 --repetitions 10 --seed 14
"""

from __future__ import annotations

import csv
import io
import sys
import zipfile
from pathlib import Path

MEMBER = "statsmodels/datasets/fair/fair.csv"
OCCUPATIONS = {
    1: "student",
    2: "farming",
    3: "white-collar",
    4: "teacher",
    5: "managerial",
    6: "professional",
}
COLUMNS = [
    "pid",
    "rate_marriage",
    "age",
    "yrs_married",
    "children",
    "religious",
    "educ",
    "occupation",
    "occupation_husb",
    "affairs",
]


def source_text(source: Path) -> str:
    """The packaged CSV's text, from the file itself or from a wheel."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            return wheel.read(MEMBER).decode("utf-8")
    return source.read_text("utf-8")


def write(text: str, out: Path) -> int:
    """The table as ``bench/fair.toml`` classifies it; the number of rows written."""
    rows = list(csv.DictReader(io.StringIO(text)))
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i, row in enumerate(rows):
            writer.writerow(
                [
                    i + 1,
                    row["rate_marriage"],
                    row["age"],
                    row["yrs_married"],
                    row["children"],
                    "" if i % 37 == 0 else row["religious"],
                    row["educ"],
                    OCCUPATIONS[int(row["occupation"])],
                    row["occupation_husb"],
                    row["affairs"],
                ]
            )
    return len(rows)


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    n = write(source_text(Path(sys.argv[1])), Path(sys.argv[2]))
    print(f"{sys.argv[2]}: {n} rows")


if __name__ == "__main__":
    main()
