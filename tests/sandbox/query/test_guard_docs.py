"""Every function on the allowlist is documented in docs/guard.md, and every guard rule too."""

from __future__ import annotations

import re
from pathlib import Path

from sqlglot import exp

from sandbox.query.parse import AGGREGATES, ALLOWED_NODES, RECORD_VALUE_AGGREGATES

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "guard.md").read_text().lower()


def test_every_allowed_function_is_documented() -> None:
    # Record-value aggregates are on the allowlist only to be refused with a precise rule.
    documented = (ALLOWED_NODES - set(RECORD_VALUE_AGGREGATES)) | set(AGGREGATES)
    for cls in sorted(documented, key=lambda c: c.__name__):
        if not issubclass(cls, exp.Func) or cls in (exp.DataType, exp.DataTypeParam):
            continue
        names = [n.lower() for n in cls.sql_names()]
        if cls is exp.TimestampTrunc:
            names = ["date_trunc"]
        if cls is exp.TimeToStr:
            names = ["strftime"]
        assert any(name in DOC for name in names), cls.__name__


def test_every_guard_rule_is_documented() -> None:
    rules = set()
    for path in (
        "sandbox/query/parse.py",
        "sandbox/query/guard.py",
        "sandbox/query/nodes.py",
        "sandbox/query/closure.py",
        "sandbox/query/lineage.py",
    ):
        rules |= set(re.findall(r'"(guard\.[a-z_]+|grant\.[a-z_]+)"', (ROOT / path).read_text()))
    for rule in sorted(rules):
        assert f"`{rule}`" in DOC, rule
