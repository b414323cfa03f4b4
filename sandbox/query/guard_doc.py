"""The guard's generated documentation: its rules in order and the role-by-clause table.

``python -m sandbox.query.guard_doc`` prints each section between the markers
``docs/guard.md`` holds it in; ``--write docs/guard.md`` replaces the sections there.
A test checks the doc holds exactly these sections, so the doc is the code.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from sandbox.query import uses
from sandbox.query.guard import RULES, SCOPE_RULES

__all__ = ["begin", "end", "rules_markdown", "sections", "splice"]


def _summary(step: Callable[..., None]) -> str:
    doc = (step.__doc__ or "").strip()
    return " ".join(doc.split("\n\n", 1)[0].split())


def rules_markdown() -> str:
    """``RULES`` in order, each with its docstring's summary; ``SCOPE_RULES`` under ``scopes``."""
    lines = []
    for number, rule in enumerate(RULES, 1):
        lines.append(f"{number}. `{rule.__name__}`: {_summary(rule)}")
        if rule.__name__ == "scopes":
            for inner, step in enumerate(SCOPE_RULES, 1):
                lines.append(f"   {inner}. `{step.__name__}`: {_summary(step)}")
    return "\n".join(lines) + "\n"


def sections() -> dict[str, str]:
    """Each generated section of docs/guard.md by name."""
    return {"rules": rules_markdown(), "uses": uses.markdown()}


def begin(name: str) -> str:
    return f"<!-- generated: {name} (python -m sandbox.query.guard_doc) -->"


def end(name: str) -> str:
    return f"<!-- end generated: {name} -->"


def splice(text: str) -> str:
    """``text`` with every generated section replaced by the current one."""
    for name, body in sections().items():
        pattern = re.compile(re.escape(begin(name)) + r"\n.*?" + re.escape(end(name)), re.S)
        if not pattern.search(text):
            raise ValueError(f"no generated section {name!r} in the text")
        section = f"{begin(name)}\n{body}{end(name)}"
        text = pattern.sub(lambda _match: section, text)  # noqa: B023 (used at once)
    return text


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write"] and len(argv) == 2:
        path = Path(argv[1])
        path.write_text(splice(path.read_text("utf-8")), "utf-8")
        return 0
    if argv:
        print("usage: python -m sandbox.query.guard_doc [--write docs/guard.md]", file=sys.stderr)
        return 2
    for name, body in sections().items():
        print(f"{begin(name)}\n{body}{end(name)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
