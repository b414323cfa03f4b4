"""The README's quality table ("Quality of the demo data") is what the enclave computes for
the demo data: each row compared with a fresh evaluation (the demo deployment the tests
share, scale 0.01; every rate in the table is independent of the scale).

``python -m tests.test_readme_quality`` prints the table from a fresh demo home.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from sandbox.governance.quality_view import latest_quality

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- quality-table -->", "<!-- /quality-table -->"
HEADER = (
    "| dataset | update frequency | completeness | validity | uniqueness | consistency "
    "| certified score |"
)
DIMENSIONS = ("completeness", "validity", "uniqueness", "consistency")


def _rate(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def table(platform: Any) -> list[str]:
    rows = [HEADER, "|---|---|---|---|---|---|---|"]
    with platform.engine.connect() as conn:
        for dataset in (
            "health.claims",
            "hrss.social_insurance",
            "market.enterprises",
            "transport.trips",
        ):
            found = latest_quality(conn, dataset)
            assert found is not None, dataset
            report = found[2]
            cells = [dataset, report["update_frequency"]]
            cells += [_rate(report[d]["rate"]) for d in DIMENSIONS]
            cells.append(f"{report['score']:.1f}")
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def readme_table() -> list[str]:
    text = (ROOT / "README.md").read_text()
    match = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    assert match, "README.md has no quality table between the markers"
    return match.group(1).strip().splitlines()


def test_the_readme_table_is_the_demo_datas_quality(demo_deployment: Any) -> None:
    platform, _ = demo_deployment
    assert readme_table() == table(platform)


if __name__ == "__main__":  # pragma: no cover - a maintainer's helper
    from sandbox.core.settings import Settings
    from sandbox.platform import Platform

    with tempfile.TemporaryDirectory() as tmp:
        plat = Platform(Settings(home=Path(tmp) / "home", threads=2))
        plat.init()
        plat.load_demo_data(scale=0.01)
        sys.stdout.write("\n".join(table(plat)) + "\n")
        plat.close()
