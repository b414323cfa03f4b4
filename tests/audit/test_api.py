"""The public API is deliberate and documented."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import audit
from audit.checker import PROBLEM_KINDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


def test_all_is_complete_and_importable() -> None:
    for name in audit.__all__:
        assert hasattr(audit, name), name
    modules = [m.name for m in pkgutil.iter_modules(audit.__path__)]
    for name in modules:
        module = importlib.import_module(f"audit.{name}")
        assert hasattr(module, "__all__"), name
        for item in module.__all__:
            assert hasattr(module, item), f"audit.{name}.{item}"


def test_every_problem_kind_is_documented() -> None:
    text = DOC.read_text()
    for kind in PROBLEM_KINDS:
        assert re.search(rf"`{kind}`", text), f"problem kind {kind} missing from docs/audit.md"


def test_modules_stay_small() -> None:
    for path in Path(audit.__file__).parent.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name


def _doc_verifier() -> dict[str, object]:
    """Run the small independent verifier of docs/audit.md: the format is specified well enough."""
    text = DOC.read_text()
    section = text[text.index("## 11. A small independent verifier") :]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    code = section[section.index("```python") + len("```python") : section.rindex("```")]
    namespace: dict[str, object] = {"__name__": "doc_verifier"}
    exec(compile(code, "docs/audit.md", "exec"), namespace)
    return namespace


def test_the_documented_verifier_agrees_with_ours(tmp_path: Path) -> None:
    from audit import AuditTrail, KeyRing, verify_export
    from tests.audit.conftest import fill

    verify = _doc_verifier()["verify"]
    assert callable(verify)
    with AuditTrail.open(
        f"sqlite:///{tmp_path / 'a.db'}", KeyRing(tmp_path / "k"), sign_every_n=3
    ) as trail:
        fill(trail, 8)
        trail.export(tmp_path / "x")
    assert verify(tmp_path / "x") is None and verify_export(tmp_path / "x").ok
    entries = tmp_path / "x" / "entries.jsonl"
    lines = entries.read_bytes().splitlines(keepends=True)
    for edited, want in [
        ([*lines[:2], lines[2].replace(b"operator-", b"intruder-"), *lines[3:]], "entry 2"),
        ([*lines[:2], *lines[3:]], "position 2"),
        (lines[:6], "truncated"),
    ]:
        entries.write_bytes(b"".join(edited))
        assert want in str(verify(tmp_path / "x"))
        assert not verify_export(tmp_path / "x").ok


def test_the_library_stands_alone() -> None:
    """``audit`` never imports the server side (``sandbox`` or ``server``)."""
    for path in Path(audit.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(sandbox|server)\b", text, re.M), path.name
