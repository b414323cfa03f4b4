"""CLI start-up: how long the installed ``sandbox`` command takes before it does any work.

Each command runs ``--runs`` times (default 10), interleaved so that a noisy
neighbour slows all of them alike; the figures are the median and the spread
(min..max) in seconds, and each median as a ratio to ``python -c pass`` measured
in the same run (the interpreter's own start-up, the floor no CLI can beat).

    .venv/bin/python bench/cli_startup.py
    .venv/bin/python bench/cli_startup.py --runs 20 --sandbox .venv/bin/sandbox

The commands: ``sandbox --help``; ``sandbox audit verify`` of a small export
(12 entries, written here with the audit library); ``sandbox job list --url
http://127.0.0.1:1``, a remote command that fails fast (nothing listens on
port 1), so it measures the remote client's imports and its error path.

Bytecode: an installed package runs from cached ``.pyc`` files.  An environment with
``PYTHONDONTWRITEBYTECODE`` set (this VM's is) compiles the project's own modules on
every run instead, which a user never pays; the children run without it (the warm-up
run writes the cache) unless ``--as-is``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def small_export(directory: Path, entries: int = 12) -> Path:
    """An export of a fresh trail of ``entries`` entries (setup, not timed)."""
    from audit import AuditTrail, KeyRing

    keys = KeyRing(directory / "keys")
    keys.ensure()
    with AuditTrail.open(f"sqlite:///{directory / 'audit.db'}", keys, sign_every_n=4) as trail:
        for i in range(entries):
            trail.append(
                actor=f"operator-{i % 3}",
                role="operator",
                action="query",
                target=f"job:j-{i}",
                decision="allow" if i % 4 else "deny",
                rule="grant.live",
            )
        trail.export(directory / "export")
    return directory / "export"


def once(argv: Sequence[str], expect: int, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(
            f"{' '.join(argv)} exited {proc.returncode}, expected {expect}:\n"
            f"{proc.stdout[-500:]}{proc.stderr[-500:]}"
        )
    return elapsed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sandbox", help="the sandbox command (default: next to this python)")
    parser.add_argument(
        "--remote-exit",
        type=int,
        default=None,
        help="expected exit status of the remote command (default: any non-zero)",
    )
    parser.add_argument(
        "--as-is", action="store_true", help="keep PYTHONDONTWRITEBYTECODE if it is set"
    )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if not args.as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    sandbox = args.sandbox or shutil.which("sandbox", path=str(Path(sys.executable).parent))
    if not sandbox:
        raise SystemExit("no sandbox command next to this python; pass --sandbox")
    with tempfile.TemporaryDirectory() as tmp:
        export = small_export(Path(tmp))
        commands: list[tuple[str, list[str], int | None]] = [
            ("python -c pass", [sys.executable, "-c", "pass"], 0),
            ("sandbox --help", [sandbox, "--help"], 0),
            ("sandbox audit verify EXPORT", [sandbox, "audit", "verify", str(export)], 0),
            (
                "sandbox job list --url http://127.0.0.1:1",
                [sandbox, "job", "list", "--url", "http://127.0.0.1:1", "--token", "t"],
                args.remote_exit,
            ),
        ]
        times: dict[str, list[float]] = {name: [] for name, _, _ in commands}
        for name, command, expect in commands:  # warm the page cache, find the exit status
            code = subprocess.run(command, capture_output=True, check=False, env=env).returncode
            if expect is None and code == 0:
                raise SystemExit(f"{name} succeeded; it should fail fast (nothing on port 1)")
            times[name] = []
            commands[commands.index((name, command, expect))] = (name, command, code)
        for _ in range(args.runs):
            for name, command, expect in commands:
                times[name].append(once(command, expect or 0, env))
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<44} {'median s':>9} {'spread s':>15} {'x python':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values):.3f}..{max(values):.3f}"
        print(f"{name:<44} {median:9.3f} {spread:>15} {median / base:9.1f}")
    cache = "as the environment says" if args.as_is else "on"
    print(f"({args.runs} runs each, interleaved; bytecode cache {cache}; {sys.executable})")


if __name__ == "__main__":
    main()
