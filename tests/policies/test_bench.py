"""The authorization benchmark runs (tiny sizes: it must not rot)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "authz_bench.py"


def test_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("authz_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--operators", "5", "--grants", "20", "--seconds", "0.05", "--threads", "2"])
    out = capsys.readouterr().out
    assert "warm decisions:" in out and "first decision after a Casbin rule change" in out
