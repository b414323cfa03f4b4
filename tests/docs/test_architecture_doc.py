"""docs/architecture.md names real files and real functions in its "where" answers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text("utf-8")
TICKED = re.compile(r"`([^`]+)`")
PATH = re.compile(r"^[\w./]+\.py$")
NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)?$")


def _where_rows() -> list[tuple[str, str]]:
    section = DOC.split("## Where does it happen", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("question", "---"):
            rows.append((cells[0], cells[1]))
    return rows


def test_every_where_question_is_answered() -> None:
    asked = {q for q, _ in _where_rows()}
    for question in (
        "identifiers refused",
        "k applied",
        "dominance",
        "noise drawn",
        "ε spent",
        "audit entry appended",
        "receipt signed",
        "freeze checked",
    ):
        assert question in asked


def test_every_path_in_the_doc_exists() -> None:
    paths = {t for t in TICKED.findall(DOC) if PATH.match(t)}
    assert paths, "the doc names no files"
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def _settings() -> set[str]:
    """Setting names, as docs/settings.md lists their environment variables."""
    text = (ROOT / "docs" / "settings.md").read_text("utf-8")
    return {name.lower() for name in re.findall(r"SANDBOX_([A-Z0-9_]+)", text)}


@pytest.mark.parametrize(("question", "answer"), _where_rows())
def test_every_named_function_is_in_the_file_named_before_it(question: str, answer: str) -> None:
    """After a path, `name` and `Class.method` are defined there, `rule.name` is raised there."""
    current: Path | None = None
    checked = 0
    for token in TICKED.findall(answer):
        if PATH.match(token):
            current = ROOT / token
            continue
        if current is None or not NAME.match(token) or token in _settings():
            continue
        text = current.read_text("utf-8")
        where = current.relative_to(ROOT)
        if token.split(".")[0].islower() and "." in token:  # a rule name
            assert f'"{token}"' in text, f"{question}: rule `{token}` is not in {where}"
        else:
            last = token.split(".")[-1]
            defined = re.search(rf"^\s*(async\s+)?(def|class)\s+{re.escape(last)}\b", text, re.M)
            assert defined, f"{question}: `{token}` is not defined in {where}"
        checked += 1
    assert checked, f"{question}: the answer names no function"
