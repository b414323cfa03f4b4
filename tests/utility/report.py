"""Answered and refused counts of the utility corpus per class, and each refusal's rule.

Run from the repository root: ``python -m tests.utility.report`` (builds a scale-0.01
demo deployment in a temporary directory).  It also compares what is not answered with
``known_refusals.txt`` and says which entries are stale or missing; ``--list`` prints
the list for today's code instead (one id a line, its rule as a comment).
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

from tests.utility.enclave import Outcome, UtilityEnclave, known_refusals, load_corpus


def summarise(outcomes: list[Outcome], known: set[str]) -> str:
    classes = sorted({o.cls for o in outcomes})
    counts = {c: Counter(o.verdict for o in outcomes if o.cls == c) for c in classes}
    width = max(len(c) for c in [*classes, "class"])
    out = [f"{'class':<{width}}  total  answered  refused  failed  empty"]
    for c in classes:
        n = counts[c]
        total = sum(n.values())
        out.append(
            f"{c:<{width}}  {total:>5}  {n['answered']:>8}  {n['refused']:>7}"
            f"  {n['failed']:>6}  {n['empty']:>5}"
        )
    total = Counter(o.verdict for o in outcomes)
    out.append(
        f"{'all':<{width}}  {len(outcomes):>5}  {total['answered']:>8}  {total['refused']:>7}"
        f"  {total['failed']:>6}  {total['empty']:>5}"
    )
    bad = [o for o in outcomes if o.verdict != "answered"]
    if bad:
        out.append("")
        out.append("not answered (id, class, verdict, rule: message):")
        for o in bad:
            out.append(f"  {o.id} [{o.cls}] {o.verdict} {o.rule}: {o.message}")
    unanswered = {o.id for o in bad}
    stale = sorted(known - unanswered)
    missing = sorted(unanswered - known)
    out.append("")
    out.append(f"known_refusals.txt: {len(known)} ids; now answered (remove): {stale or 'none'}")
    out.append(f"not answered and not listed (add or fix): {missing or 'none'}")
    return "\n".join(out)


def main() -> int:
    corpus = load_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        enclave = UtilityEnclave(Path(tmp) / "home")
        try:
            outcomes = [enclave.run(line) for line in corpus]
        finally:
            enclave.close()
    if "--list" in sys.argv[1:]:
        for o in outcomes:
            if o.verdict != "answered":
                print(f"{o.id}  # {o.verdict} {o.rule}")
    else:
        print(summarise(outcomes, known_refusals()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
