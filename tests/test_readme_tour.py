"""The README's five-minute tour runs verbatim on a fresh demo home, and prints what it shows.

Every ```sh block of the section "Five-minute tour" runs, in order, in one bash
session opened at a copy of the repository root (`.venv` and `examples/` linked), with
a fresh `demo-home` built like `make demo` builds it (scale 1) and served on a free
port (`PORT`, as `make demo PORT=…` would).  A block of `$ ` lines is a transcript:
each command (continued on `> ` lines) must exit 0 (or the status its `# exit N`
comment names) and print exactly the lines under it.  Before comparing, identifiers,
hashes, tokens, times and audit positions are masked (they differ on every run); in
the README, `…` stands for any text within a line and a line `...` for any lines.
A block without `$ ` lines runs as it is and must exit 0.

`python -m tests.test_readme_tour` prints the tour with this run's outputs, to
refresh the README after a change of behaviour.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import LiveServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## Five-minute tour"


@dataclass(frozen=True)
class Step:
    command: str
    expected: tuple[str, ...] | None  # None: not a transcript, output not checked
    status: int
    block: int


@dataclass(frozen=True)
class Outcome:
    step: Step
    output: str
    status: int


def tour_steps(text: str) -> list[Step]:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end > 0 else len(text)]
    steps: list[Step] = []
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)
    for number, block in enumerate(blocks):
        lines = block.rstrip("\n").split("\n")
        if not any(line.startswith("$ ") for line in lines):
            steps.append(Step(block, None, 0, number))
            continue
        command: list[str] = []
        output: list[str] = []
        for line in [*lines, "$ "]:
            if line.startswith("$ ") or line == "$":
                if command:
                    wanted = re.search(r"#\s*exit (\d+)\s*$", command[0])
                    status = int(wanted.group(1)) if wanted else 0
                    steps.append(Step("\n".join(command), tuple(output), status, number))
                command, output = [line[2:]], []
            elif line.startswith("> ") and not output:
                command.append(line[2:])
            else:
                output.append(line)
        assert steps and steps[-1].block == number, f"block {number} has no command"
    return steps


_MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?"), "<time>"),
    (re.compile(r"sbx_[A-Za-z0-9_-]{20,}"), "<token>"),
    (re.compile(r"\b((?:job|tk|gr|up|en)_)?[0-9a-f]{16,}\b"), r"\1<hex>"),
    (re.compile(r"\b[0-9a-f]{4,15}…"), "<hex>"),  # a hash the README shortens
    (re.compile(r"[^\s\"']*/demo-home\b"), "<home>"),
    (
        re.compile(
            r"(audit seq |\"(?:seq|entries|tree_size|tree_heads|covered|path_length)\":)\d+"
        ),
        r"\1<n>",
    ),
    (re.compile(r"(OK: |, )\d+(?= (?:entries|entry|signed tree heads?)\b)"), r"\1<n>"),
]


def mask(line: str) -> str:
    for pattern, replacement in _MASKS:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def matches(expected: tuple[str, ...], actual: list[str]) -> bool:
    """``expected`` against ``actual`` line by line; ``...`` skips lines, ``…`` text."""
    patterns = [
        None if line.strip() == "..." else re.compile(".*".join(map(re.escape, line.split("…"))))
        for line in (mask(e) for e in expected)
    ]

    def walk(i: int, j: int) -> bool:
        if i == len(patterns):
            return j == len(actual)
        pattern = patterns[i]
        if pattern is None:
            return any(walk(i + 1, k) for k in range(j, len(actual) + 1))
        return j < len(actual) and pattern.fullmatch(actual[j]) is not None and walk(i + 1, j + 1)

    return walk(0, 0)


def _script(steps: list[Step]) -> str:
    parts = ["exec 2>&1"]
    for index, step in enumerate(steps):
        parts.append(f"printf '\\n@@@begin {index}\\n'")
        parts.append(step.command)
        parts.append(f"printf '\\n@@@end {index} %d\\n' $?")
    return "\n".join(parts) + "\n"


def _environment(root: Path, port: int) -> dict[str, str]:
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    scratch = root / "scratch"
    scratch.mkdir(exist_ok=True)
    env.update(PORT=str(port), TMPDIR=str(scratch), PYTHONUNBUFFERED="1", COLUMNS="200")
    return env


@dataclass
class Tour:
    root: Path
    server: LiveServer


def fresh_tour(root: Path) -> Iterator[Tour]:
    """A repository-like directory with a fresh scale-1 demo home, served like `make demo`."""
    repo = root / "repo"
    repo.mkdir()
    (repo / ".venv").symlink_to(Path(sys.prefix))
    (repo / "examples").symlink_to(ROOT / "examples")
    home = repo / "demo-home"
    built = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "--home", str(home), "demo", "--scale", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    tokens = json.loads((home / "demo-tokens.json").read_text())
    server = LiveServer(home, tokens)
    server.start()
    try:
        yield Tour(repo, server)
    finally:
        server.stop()


def run_tour(tour: Tour, steps: list[Step]) -> list[Outcome]:
    run = subprocess.run(
        ["bash", "--noprofile", "--norc"],
        input=_script(steps),
        capture_output=True,
        text=True,
        cwd=tour.root,
        env=_environment(tour.root.parent, tour.server.port),
        timeout=900,
    )
    chunks = re.split(r"\n?@@@begin (\d+)\n", run.stdout)
    outcomes = []
    for index, step in enumerate(steps):
        position = chunks.index(str(index)) if str(index) in chunks else -1
        assert position >= 0, f"the tour stopped before step {index}: {run.stdout[-3000:]}"
        body, _, tail = chunks[position + 1].rpartition(f"@@@end {index} ")
        outcomes.append(Outcome(step, body.strip("\n"), int(tail.split()[0])))
    return outcomes


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    yield from fresh_tour(tmp_path_factory.mktemp("tour"))


def test_the_readme_tour_runs_verbatim_and_prints_what_it_shows(tour: Tour) -> None:
    steps = tour_steps(README.read_text("utf-8"))
    assert len([s for s in steps if s.expected is not None]) >= 30, "the tour lost its steps"
    problems = []
    for outcome in run_tour(tour, steps):
        step = outcome.step
        if outcome.status != step.status:
            problems.append(
                f"$ {step.command}\nexit {outcome.status}, want {step.status}:\n{outcome.output}"
            )
        elif step.expected is not None:
            actual = [mask(line) for line in outcome.output.split("\n")] if outcome.output else []
            if not matches(step.expected, actual):
                shown = "\n".join(step.expected)
                problems.append(
                    f"$ {step.command}\nREADME shows:\n{shown}\nprinted:\n{outcome.output}"
                )
    assert not problems, "\n\n".join(problems[:5])
    assert not list(tour.root.glob("*.json")) and not (tour.root / "wages.parquet").exists(), (
        "the tour wrote files outside its scratch directory"
    )


def test_masking_keeps_what_the_reader_can_check() -> None:
    assert mask('{"seq":29,"rows":5}') == '{"seq":<n>,"rows":5}'
    assert mask("# 5 rows, 0 groups suppressed (k=10); audit seq 30") == (
        "# 5 rows, 0 groups suppressed (k=10); audit seq <n>"
    )
    assert mask("job_b8e0936a3a204c14a0365be4  succeeded") == "job_<hex>  succeeded"
    assert mask("audit entry 3f1c…") == mask("audit entry " + "3f1c" * 16) == "audit entry <hex>"
    assert matches(("a …", "...", "z"), ["a b c", "x", "y", "z"])
    assert not matches(("a", "b"), ["a", "c"])


if __name__ == "__main__":  # print the tour with this run's outputs
    with tempfile.TemporaryDirectory() as scratch:
        for tour_ in fresh_tour(Path(scratch)):
            for result in run_tour(tour_, tour_steps(README.read_text("utf-8"))):
                if result.step.expected is None:
                    continue
                first, *rest = result.step.command.split("\n")
                print("$ " + first, *("> " + line for line in rest), sep="\n")
                if result.output:
                    print(result.output)
                if result.status != result.step.status:
                    print(f"!!! exit {result.status}")
