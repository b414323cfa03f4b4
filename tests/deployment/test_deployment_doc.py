"""docs/deployment.md, Several hosts: what it names exists.

Every file it cites, every ``SANDBOX_*`` variable, every setting, rule, HTTP route and
``sandbox`` command it names.  (What it claims about behaviour is tested in
``test_several_hosts.py``.)
"""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest

from tests.blackbox.conftest import SANDBOX, clean_env

ROOT = Path(__file__).resolve().parents[2]
SECTION = (
    (ROOT / "docs" / "deployment.md")
    .read_text("utf-8")
    .split("\n## Several hosts\n", 1)[1]
    .split("\n## ", 1)[0]
)
TICKED = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", SECTION, flags=re.S))
SOURCES = "\n".join(
    p.read_text("utf-8") for d in ("sandbox", "audit") for p in (ROOT / d).rglob("*.py")
)
#: Settings the section names by their own name.
SETTINGS = ("sync_inline_rows", "rate_limit_per_minute", "ingest_concurrency")


def _settings_doc() -> str:
    return (ROOT / "docs" / "settings.md").read_text("utf-8")


def test_every_file_it_cites_exists() -> None:
    paths = {t for t in TICKED if re.fullmatch(r"[\w./-]+\.(py|md)", t)}
    assert len(paths) >= 10
    assert not sorted(p for p in paths if not (ROOT / p).is_file())


def test_every_variable_and_setting_it_names_is_a_setting() -> None:
    documented = _settings_doc()
    variables = set(re.findall(r"SANDBOX_[A-Z0-9_]+", SECTION))
    assert {"SANDBOX_CONTROL_DB_URL", "SANDBOX_WAREHOUSE", "SANDBOX_SPARK_MASTER"} <= variables
    assert not sorted(v for v in variables if f"`{v}`" not in documented)
    for name in SETTINGS:
        assert f"`{name}`" in SECTION and f"| `{name}` |" in documented


def test_every_rule_it_names_is_raised_somewhere() -> None:
    rules = {t for t in TICKED if re.fullmatch(r"[a-z_]+\.[a-z_]+", t) and "/" not in t}
    assert {"startup.enclave", "job.interrupted", "keys.unknown_data_key"} <= rules
    startup = (ROOT / "sandbox" / "startup.py").read_text("utf-8")
    for rule in sorted(rules):
        kind, _, name = rule.partition(".")
        made_by_startup = kind == "startup" and re.search(rf'_fail\(\s*"{name}"', startup)
        assert f'"{rule}"' in SOURCES or made_by_startup, rule


def test_every_route_it_names_is_served() -> None:
    routes = set(re.findall(r'@router\.\w+\(\s*"([^"]+)"', SOURCES))
    named = {re.sub(r"^(GET|POST|PUT) ", "", t).rstrip("…") for t in TICKED if "/v1/" in t}
    named |= {t for t in TICKED if t.startswith("/health")}
    assert len(named) >= 5
    for path in sorted(named):
        prefix = path.split("{")[0]
        assert any(r.startswith(prefix) for r in routes) or path == "/health", path


def _commands() -> list[str]:
    return sorted({t for t in TICKED if t.startswith("sandbox ")})


@pytest.mark.parametrize("command", _commands())
def test_every_command_it_names_exists(command: str) -> None:
    words = command.split()[1:]
    if words[0] == "--home":
        words = words[2:]
    path = list(itertools.takewhile(lambda w: not w.startswith("-"), words))[:2]
    assert path, command
    done = subprocess.run(
        [SANDBOX, *path, "--help"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stderr[-500:]}"


def test_it_names_the_commands_an_operator_runs() -> None:
    named = {" ".join(c.split()[:3]) for c in _commands()}
    assert {"sandbox keys rotate", "sandbox keys reencrypt", "sandbox audit verify"} <= named
