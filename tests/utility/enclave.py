"""The utility corpus's enclave, and how one corpus query is judged.

A demo deployment (scale 0.01, ``tests.conftest.build_deployment``) run in process
through :class:`QueryService`, as the demo operators, on the job path
(``QueryService.run_job``): op-bank's grants are ``reviewed`` (and op-planner's is made so
here), so their lines are judged on the held table, what the bureau's review would
release.  op-insurer also gets a twin of its health grant with a large budget, so that
every budgeted line of the corpus can spend its ε (the demo grant holds 10) and is
judged on the guard, not on the ledger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sandbox.core.errors import QueryRefused, SandboxError
from sandbox.query.service import QueryService
from tests.conftest import build_deployment

HERE = Path(__file__).parent
CORPUS = HERE / "queries.jsonl"
KNOWN_REFUSALS = HERE / "known_refusals.txt"
#: Who runs a line: op-insurer holds the health grant with a privacy budget.
BUDGET_OPERATOR = "op-insurer"


def load_corpus() -> list[dict[str, Any]]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def known_refusals() -> set[str]:
    """Ids of corpus queries today's guard refuses (``#`` starts a comment)."""
    ids = set()
    for line in KNOWN_REFUSALS.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            ids.add(entry)
    return ids


@dataclass(frozen=True)
class Outcome:
    """What the service did with one corpus line."""

    id: str
    cls: str
    verdict: str  # answered | empty | refused | failed
    rows: int = 0
    rule: str = ""
    message: str = ""
    released: str = ""  # the released columns, rows and meta as JSON (for the leak check)


class UtilityEnclave:
    """The demo deployment the corpus runs on, with the actors of its operators."""

    def __init__(self, home: Path) -> None:
        self.platform, tokens = build_deployment(home)
        self._large_budget_for_insurer()
        self._planner_reviewed()
        self.actors = {
            name: self.platform.authority.authenticate(tokens[name])
            for name in ("op-bank", "op-insurer", "op-planner")
        }
        self.service = QueryService(self.platform)

    def _planner_reviewed(self) -> None:
        """op-planner's lines are judged on exact answers, as op-bank's: its bureau chooses
        ``reviewed`` for its grant (the demo's is ``dp``), so each result is held for review
        and what the reviewer would release is judged."""
        from policies.accounts import require_account
        from policies.actors import Actor
        from policies.admin import Administration
        from policies.grant_terms import ReleaseMode

        admin = Administration(self.platform.authority, k_floor=self.platform.settings.k_floor)
        with self.platform.engine.connect() as conn:
            bureau = Actor.of(require_account(conn, "bureau-transport"))
        for grant in admin.list_grants(bureau):
            if grant.operator == "op-planner":
                admin.set_release_mode(
                    bureau, grant.id, ReleaseMode.REVIEWED, reason="utility corpus: exact answers"
                )

    def _large_budget_for_insurer(self) -> None:
        from policies.accounts import require_account
        from policies.actors import Actor
        from policies.admin import Administration
        from policies.demo import HEALTH_GROUPABLE
        from policies.grant_terms import GrantTerms
        from sandbox.core.classification import Level

        admin = Administration(self.platform.authority, k_floor=self.platform.settings.k_floor)
        with self.platform.engine.connect() as conn:
            bureau = Actor.of(require_account(conn, "bureau-health"))
        now = datetime.now(UTC)
        admin.issue_grant(
            bureau,
            "health.claims",
            BUDGET_OPERATOR,
            GrantTerms(
                purpose_code="utility-corpus",
                purpose_text="the utility corpus: every budgeted line spends ε once",
                valid_from=now - timedelta(minutes=1),
                valid_until=now + timedelta(days=1),
                max_level=Level.L3,
                groupable=HEALTH_GROUPABLE,
                k=10,
                epsilon_total=10_000.0,
                epsilon_per_query=1.0,
            ),
            reason="utility corpus",
        )

    def close(self) -> None:
        self.platform.close()

    def run(self, line: dict[str, Any]) -> Outcome:
        """Run one corpus line as its operator: answered, empty, refused or failed."""
        ident, cls = line["id"], line["class"]
        try:
            # Run as a job runs it: under a reviewed grant (op-bank's) the result is held,
            # and what the reviewer would release is what is judged.
            result = self.service.run_job(self.actors[line["as"]], line["sql"])
        except QueryRefused as exc:
            return Outcome(ident, cls, "refused", rule=exc.rule or exc.code, message=exc.message)
        except SandboxError as exc:
            return Outcome(ident, cls, "failed", rule=exc.rule or exc.code, message=exc.message)
        rows = result.table.num_rows
        released = json.dumps(
            {
                "columns": result.table.column_names,
                "rows": result.table.to_pylist(),
                "meta": result.meta,
            },
            default=str,
            ensure_ascii=False,
        )
        return Outcome(ident, cls, "answered" if rows else "empty", rows, released=released)
