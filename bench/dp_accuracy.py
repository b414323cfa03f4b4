# Over 400 lines: the bench as one command (sandbox side, run order, report); see dp_peer.py.
"""DP accuracy side by side: this sandbox against OpenDP SmartNoise SQL, at equal ε per query.

Usage::

    python bench/dp_accuracy.py                      # census-like table, 1,000 persons
    python bench/dp_accuracy.py --dataset claims --scale 0.01
    python bench/dp_accuracy.py --table-csv t.csv --classification t.toml --queries q.jsonl
    options: --epsilon 1 --repetitions 10 --seed 14 --details --no-smartnoise --json out.json

The same table and the same SQL go through both systems:

* **this sandbox**: a temp home; the table registered through the real registration path
  (``Platform.register`` with its classification file); a ``dp`` grant with
  ``epsilon_per_query = --epsilon`` (every released number noised); each query run by
  ``QueryService`` as an operator, one operator per repetition (the release cache answers
  a repeat with the first release, so a fresh operator is a fresh draw);
* **SmartNoise SQL** (``smartnoise-sql`` 1.0.10, in ``.venv-smartnoise``: it pins pandas < 3
  and opendp < 0.15), in a subprocess (``bench/smartnoise_runner.py``) reading the same
  CSV, with metadata made from the same classification: clamping bounds equal to the
  classification's, the entity key as ``private_id``, ``max_ids`` the per-entity row bound
  (below).

**Equal ε.**  Both sides spend ``--epsilon`` in total on each query, and at most the
platform's ``dp_delta`` (δ): the sandbox splits the grant's per-query ε over its noised
columns and uses δ for its noisy release threshold; SmartNoise's ``Privacy(epsilon=e)`` is
per statistic, so ``e`` is chosen per query so that SmartNoise's own odometer
(``get_privacy_cost``) reports exactly ``--epsilon`` for the whole query, and its δ so
the reported δ is at most ``dp_delta``.  Both figures are printed per query with
``--details``.  **Contribution bounds.**  The sandbox enforces ``C`` rows per entity and
group and ``G`` groups per entity (today platform settings); SmartNoise bounds rows per
entity over the whole table (``max_ids``), given ``min(C·G, the largest number of rows
any entity has)``: the data's own bound (1 on a one-row-per-person table), never looser
than the sandbox's.

**Figures** (per system): the share of (query, repetition) runs answered with a non-empty
result; over grouped queries, the share of true groups released (median and mean over
queries of each query's mean over repetitions); the median relative error of released
cells against the true answer (raw DuckDB on the same table), over all cells and as the
median of per-query medians.  A refusal counts as unanswered, with no groups.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from inspect import signature
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.csv as pacsv
import sqlglot
import sqlglot.errors

sys.path.insert(0, str(Path(__file__).resolve().parent))

from census import write_csv
from dp_metrics import (
    Answer,
    Query,
    Score,
    key_positions,
    matched_errors,
    read_queries,
    score,
    spread,
    summarise,
)
from dp_peer import smartnoise_metadata, smartnoise_python, smartnoise_run

from connectors.files import FileSource
from policies import Actor, Administration, GrantTerms, Licence, Role
from sandbox.core.classification import (
    DatasetSpec,
    Level,
    parse_classification,
)
from sandbox.core.classification import Role as ColumnRole
from sandbox.core.errors import SandboxError
from sandbox.core.settings import Settings
from sandbox.platform import Platform
from sandbox.query.dialects import respell
from sandbox.query.noise import seeded_noise
from sandbox.query.service import QueryService

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PRESETS = {
    "census": (BENCH / "census.toml", BENCH / "dp_queries" / "census.jsonl"),
    "claims": (None, BENCH / "dp_queries" / "claims.jsonl"),
}


# -- this sandbox ----------------------------------------------------------------------------


def _enrol(admin: Administration, host: Actor, account: str) -> Actor:
    code = admin.issue_enrolment(host, account, token_ttl=timedelta(hours=2)).code
    return admin.authority.authenticate(admin.redeem_enrolment(code).token)


def _dp_terms(
    spec: DatasetSpec,
    epsilon: float,
    budget: float,
    now: datetime,
    round_digits: int | None = None,
) -> GrantTerms:
    """A dp grant on every releasable column: the most an analyst could be given.

    ``round_digits``: the grant's rounding of released values (a bureau's presentation
    term, default 2 decimals on a new grant; post-processing, no privacy in it).  None
    here unless ``--round-digits`` says: SmartNoise rounds nothing, and 2 decimals alone
    move a share of 0.0511 by 2% (an outside rehearsal's per-education shares)."""
    levels = [c.level for c in spec.columns if c.level < Level.L4]
    terms = GrantTerms(
        purpose_code="dp-accuracy-bench",
        purpose_text="accuracy benchmark against SmartNoise SQL",
        valid_from=now - timedelta(minutes=1),
        valid_until=now + timedelta(days=1),
        max_level=max(levels, default=Level.L1),
        groupable=frozenset(
            c.name for c in spec.columns if c.role in (ColumnRole.QUASI, ColumnRole.SENSITIVE)
        ),
        epsilon_total=budget,
        epsilon_per_query=epsilon,
        round_digits=round_digits,
    )
    try:  # release modes per grant (issue 14): dp is the mode benchmarked
        from policies.grant_terms import ReleaseMode

        terms = replace(terms, release_mode=ReleaseMode.DP)  # type: ignore[call-arg]
    except ImportError:
        pass
    return terms


class SandboxSide:
    """A temp home with one dataset registered and one dp grant per repetition."""

    def __init__(self, home: Path, settings: dict[str, Any]) -> None:
        self.platform = Platform(Settings(home=home, max_result_rows=100_000, **settings))
        self.platform.init()
        self.admin = Administration(self.platform.authority, k_floor=self.platform.settings.k_floor)
        self.host = Actor.host("bench")
        self.now = datetime.now(UTC)
        self.enforced: set[tuple[int, int]] = set()  # (C, G) as results' metadata report them
        self.totals: set[int] = set()  # T (rows per entity over all groups), where reported

    def register_csv(self, spec: DatasetSpec, csv: Path) -> None:
        source = FileSource(csv, self.platform.settings.staging_dir, name=csv.name)
        self.platform.register(spec, source, registered_by="bench")

    def register_demo(self, scale: float) -> None:
        self.platform.load_demo_data(scale)

    def operators(
        self,
        spec: DatasetSpec,
        n: int,
        epsilon: float,
        queries: int,
        round_digits: int | None = None,
    ) -> list[Actor]:
        bureau = f"bureau-{spec.domain}"
        self.admin.create_account(
            self.host, bureau, role=Role.BUREAU, organisation="bench", domains=(spec.domain,)
        )
        issuer = _enrol(self.admin, self.host, bureau)
        licence = Licence(number="BENCH-DP", valid_until=self.now + timedelta(days=1))
        budget = max(1.0, 2 * epsilon * queries)
        terms = _dp_terms(spec, epsilon, budget, now=self.now, round_digits=round_digits)
        actors = []
        for i in range(n):
            name = f"bench-dp-{i}"
            self.admin.create_account(
                self.host, name, role=Role.OPERATOR, organisation="bench", licence=licence
            )
            self.admin.issue_grant(issuer, spec.id, name, terms, reason="bench")
            actors.append(_enrol(self.admin, self.host, name))
        return actors

    def truth(self, sql: str) -> list[tuple[Any, ...]]:
        with self.platform.enclave.cursor() as cur:
            return [tuple(r) for r in cur.sql(sql).fetchall()]

    def query_truth(self, sql: str) -> tuple[list[tuple[Any, ...]] | None, str]:
        """The query's true rows in raw DuckDB, or, where DuckDB does not read it (another
        dialect's ``STD(x)``), in the DuckDB form the sandbox reads it as (``respell``:
        equivalent spellings only); None and why where neither runs."""
        try:
            return self.truth(sql), ""
        except duckdb.Error as raw_error:
            try:
                root = sqlglot.parse_one(sql, read="duckdb")
                respell(root)
                return self.truth(root.sql(dialect="duckdb")), "truth from its DuckDB spelling"
            except (duckdb.Error, sqlglot.errors.SqlglotError, SandboxError):
                first = str(raw_error).splitlines()[0][:120]
                return None, f"raw DuckDB cannot run it ({type(raw_error).__name__}: {first})"

    def export_csv(self, spec: DatasetSpec, path: Path) -> Path:
        """The registered table as the peer reads it (L4 columns left out: never queried)."""
        names = ", ".join(f'"{c.name}"' for c in spec.columns if c.level < Level.L4)
        with self.platform.enclave.cursor() as cur:
            table = cur.sql(f'SELECT {names} FROM "{spec.domain}"."{spec.table}"').to_arrow_table()
        pacsv.write_csv(table, str(path))
        return path

    def schema(self, spec: DatasetSpec) -> dict[str, str]:
        with self.platform.enclave.cursor() as cur:
            rel = cur.sql(f'SELECT * FROM "{spec.domain}"."{spec.table}" LIMIT 0')
            return {name: str(t) for name, t in zip(rel.columns, rel.types, strict=True)}

    def max_rows_per_entity(self, spec: DatasetSpec) -> int:
        key = spec.entity_key
        table = f'"{spec.domain}"."{spec.table}"'
        sql = f'SELECT max(n) FROM (SELECT count(*) AS n FROM {table} GROUP BY "{key}")'
        with self.platform.enclave.cursor() as cur:
            return int(cur.sql(sql).fetchall()[0][0])

    def contribution(self) -> tuple[int, int]:
        """C and G where neither explain nor the results report them: the platform default.

        A service that does not report the bounds a query runs under predates per-dataset
        ``[contribution]`` (issue 14) and applies the platform's settings to every dataset.
        """
        bounds = QueryService(self.platform).contribution
        return bounds.max_rows_per_entity, bounds.max_groups_per_entity

    def _note_bounds(self, meta: dict[str, Any]) -> None:
        if isinstance(enforced := meta.get("contribution"), dict):
            self.enforced.add((enforced["max_rows_per_entity"], enforced["max_groups_per_entity"]))
            if enforced.get("max_total_rows_per_entity") is not None:
                self.totals.add(int(enforced["max_total_rows_per_entity"]))

    def run(
        self, actors: list[Actor], queries: list[Query], seed: int, epsilon: float
    ) -> dict[str, list[Answer]]:
        answers: dict[str, list[Answer]] = {q.id: [] for q in queries}
        # The analyst's ε per query (issue 14) where the service takes it; the grant's
        # per-query maximum is the same ε, so either way each query spends it.
        chosen = {"epsilon": epsilon} if "epsilon" in signature(QueryService.run).parameters else {}
        for rep, actor in enumerate(actors):
            service = QueryService(self.platform, noise=seeded_noise(seed + rep))
            for query in queries:
                if rep == 0:  # what explain says the query runs under, before it spends
                    self._note_bounds(service.explain(actor, query.sql, **chosen))
                try:
                    result = service.run(actor, query.sql, **chosen)
                except SandboxError as exc:
                    answers[query.id].append(Answer(error=f"{exc.rule or exc.code}: {exc.message}"))
                    continue
                rows = tuple(tuple(r.values()) for r in result.table.to_pylist())
                self._note_bounds(result.meta)
                spent = result.meta.get("epsilon_spent", result.meta.get("epsilon"))
                answers[query.id].append(Answer(rows=rows, epsilon=spent))
        return answers

    def close(self) -> None:
        self.platform.close()


# -- report ----------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def print_summary(name: str, figures: dict[str, float | None], queries: int, grouped: int) -> None:
    print(
        f"{name:<12} answered {_pct(figures['answered'])}   groups released (grouped "
        f"queries, n={grouped}) median {_pct(figures['groups_median'])} mean "
        f"{_pct(figures['groups_mean'])}   median rel. error cells {_pct(figures['error_cells'])}"
        f" / per-query {_pct(figures['error_queries'])}   spurious groups "
        f"{int(figures['spurious'] or 0)}"
    )
    if figures.get("epsilon_min") is not None:
        print(
            f"{'':<12} ε spent per answered query: {figures['epsilon_min']:.4g} to "
            f"{figures['epsilon_max']:.4g}"
        )


def print_spread(figures: dict[str, tuple[float, float, float] | None], reps: int) -> None:
    def cell(name: str) -> str:
        value = figures.get(name)
        if value is None:
            return "-"
        return " / ".join(f"{100 * v:.1f}" for v in value) + "%"

    print(
        f"{'':<12} each repetition alone (min / median / max of {reps}): answered "
        f"{cell('answered')}, groups median {cell('groups_median')}, mean "
        f"{cell('groups_mean')}, median cell error {cell('error_cells')}"
    )


def _query_cells(scores: list[Score]) -> tuple[str, str, str]:
    answered = statistics.fmean(s.answered for s in scores) if scores else 0.0
    share = statistics.fmean(s.group_share for s in scores) if scores else 0.0
    errors = [e for s in scores for e in s.errors]
    err = statistics.median(errors) if errors else None
    return _pct(answered), _pct(share), _pct(err)


def print_details(
    queries: list[Query],
    truth_groups: dict[str, int],
    systems: dict[str, dict[str, list[Score]]],
    answers: dict[str, dict[str, list[Answer]]],
    notes: dict[str, dict[str, str]],
) -> None:
    names = list(systems)
    head = f"{'query':<28} {'groups':>6} " + " ".join(
        f"| {n[:10]:<10} {'ans':>6} {'grp':>6} {'err':>6} {'ε':>5}" for n in names
    )
    print(head)
    print("-" * len(head))
    for q in queries:
        line = f"{q.id[:28]:<28} {truth_groups[q.id]:>6} "
        for n in names:
            ans, grp, err = _query_cells(systems[n][q.id])
            spent = [a.epsilon for a in answers[n][q.id] if a.epsilon is not None]
            eps = f"{statistics.median(spent):5.2f}" if spent else "    -"
            line += f"| {'':<10} {ans:>6} {grp:>6} {err:>6} {eps}"
        print(line)
        for n in names:
            if note := notes[n].get(q.id):
                print(f"    {n}: {note[:400]}")


# -- main ------------------------------------------------------------------------------------


def code_version() -> str:
    """The commit the sandbox side ran, and whether its code had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "sandbox", "policies"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (f" + uncommitted changes in {len(dirty)} files" if dirty else "")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(PRESETS), default="census")
    parser.add_argument("--persons", type=int, default=1000, help="census: persons generated")
    parser.add_argument("--scale", type=float, default=0.01, help="claims: demo scale")
    parser.add_argument("--table-csv", type=Path, help="any table (with --classification)")
    parser.add_argument("--classification", type=Path)
    parser.add_argument("--queries", type=Path, help="JSON lines {id, sql}")
    parser.add_argument("--epsilon", type=float, default=1.0, help="total ε per query")
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--details", action="store_true", help="per-query table")
    parser.add_argument("--no-smartnoise", action="store_true", help="this sandbox only")
    parser.add_argument("--no-install", action="store_true", help="never create the peer's venv")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a platform setting for the sandbox side (e.g. dp_max_groups_per_entity=1)",
    )
    parser.add_argument(
        "--max-ids",
        type=int,
        help="SmartNoise's max_ids instead of min(C·G, largest rows per entity)",
    )
    parser.add_argument(
        "--round-digits",
        type=int,
        help="the dp grant's rounding of released values (default: none, as SmartNoise)",
    )
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.table_csv and not (args.classification and args.queries):
        parser.error("--table-csv needs --classification and --queries")
    classification, query_file = PRESETS[args.dataset]
    classification = args.classification or classification
    queries = read_queries(args.queries or query_file)
    settings = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.setting)}

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        side = SandboxSide(tmp / "home", settings)
        try:
            if args.table_csv or args.dataset == "census":
                assert classification is not None
                spec = parse_classification(
                    classification.read_text("utf-8"), source_name=classification.name
                )
                csv = args.table_csv or write_csv(tmp / "census.csv", args.persons, args.seed)
                side.register_csv(spec, csv)
                described = f"{csv.name if args.table_csv else f'census, {args.persons} persons'}"
            else:
                side.register_demo(args.scale)
                from sandbox.enclave.demo_data import demo_spec

                spec = demo_spec("health.claims")
                described = f"demo health.claims at --scale {args.scale:g}"
            peer_csv = side.export_csv(spec, tmp / "peer.csv")
            rows = side.truth(f'SELECT count(*) FROM "{spec.domain}"."{spec.table}"')[0][0]
            delta = side.platform.settings.dp_delta
            truth = {}
            for q in list(queries):
                rows_of, why = side.query_truth(q.sql)
                if rows_of is None:  # no truth to score either side against
                    print(f"left out: {q.id}: {why}")
                    queries.remove(q)
                    continue
                if why:
                    print(f"{q.id}: {why}")
                truth[q.id] = rows_of
            keys = {q.id: key_positions(q.sql) for q in queries}
            grouped = {q.id for q in queries if keys[q.id]}
            print(
                f"{described}: {rows} rows; {len(queries)} queries ({len(grouped)} grouped); "
                f"ε = {args.epsilon:g} and δ ≤ {delta:g} in total per query on both sides; "
                f"{args.repetitions} repetitions, seed {args.seed}"
            )
            print(f"sandbox code: {code_version()}")
            actors = side.operators(
                spec, args.repetitions, args.epsilon, len(queries), args.round_digits
            )
            t0 = time.perf_counter()
            answers = {"sandbox": side.run(actors, queries, args.seed, args.epsilon)}
            timing = {"sandbox": time.perf_counter() - t0}
            c, g = min(side.enforced) if side.enforced else side.contribution()
            # SmartNoise's max_ids bounds an entity's rows over the whole table: the
            # sandbox's T where the data has one (the smallest (C, G) is a per-entity
            # roll-up's (1, 1) where a query reads one; an outside rehearsal's max_ids 1 on
            # data of up to 15 rows per entity left SmartNoise's counts 83% low).
            # without a T, the widest C·G a query reports (a roll-up's (1, 1) is the smallest)
            widest = (
                max(side.totals)
                if side.totals
                else max(pc * pg for pc, pg in side.enforced or {(c, g)})
            )
            max_ids = args.max_ids or min(widest, side.max_rows_per_entity(spec))
            rule = "T" if side.totals else "C·G"
            if side.enforced:  # a query's own G (ungrouped: 1) differs from query to query
                pairs = ", ".join(f"({pc}, {pg})" for pc, pg in sorted(side.enforced))
                bounds = f"(C, G) as results' metadata report them: {pairs}; the smallest"
            else:
                bounds = "the platform default"
            print(
                f"sandbox: C = {c} rows per entity and group, G = {g} groups per entity "
                f"({bounds}), k floor {side.platform.settings.k_floor}, released values "
                + (
                    "not rounded"
                    if args.round_digits is None
                    else f"rounded to {args.round_digits} digits"
                )
                + "; SmartNoise: max_ids = "
                f"{max_ids}"
                + ("" if args.max_ids else f" (= min({rule}, largest rows per entity))")
            )
            notes: dict[str, dict[str, str]] = {"sandbox": {}}
            for qid, runs in answers["sandbox"].items():
                errors = {a.error for a in runs if a.error}
                if errors:
                    notes["sandbox"][qid] = "; ".join(sorted(errors))
            python = None if args.no_smartnoise else smartnoise_python(not args.no_install)
            if python is not None:
                metadata = smartnoise_metadata(spec, side.schema(spec), rows, max_ids)
                t0 = time.perf_counter()
                peer = smartnoise_run(
                    python,
                    peer_csv,
                    metadata,
                    queries,
                    epsilon=args.epsilon,
                    delta=delta,
                    repetitions=args.repetitions,
                )
                timing["smartnoise"] = time.perf_counter() - t0
                answers["smartnoise"] = {qid: a for qid, (a, _) in peer.items()}
                notes["smartnoise"] = {}
                for qid, (_, entry) in peer.items():
                    if entry["error"]:
                        notes["smartnoise"][qid] = entry["error"]
                    else:
                        notes["smartnoise"][qid] = (
                            (
                                f"per-statistic ε {entry['epsilon_per_statistic']:.4g}, "
                                f"odometer (ε, δ) = ({entry['cost'][0]:.4g}, "
                                f"{entry['cost'][1]:.3g})"
                            )
                            if args.details
                            else ""
                        )
        finally:
            side.close()

    scores = {
        name: {q.id: [score(a, truth[q.id], keys[q.id]) for a in per[q.id]] for q in queries}
        for name, per in answers.items()
    }
    figures = {name: summarise(s, grouped) for name, s in scores.items()}
    spreads = {name: spread(s, grouped) for name, s in scores.items()}
    for name, per in answers.items():  # what each side says it spent, per query
        spent = [a.epsilon for runs in per.values() for a in runs if a.epsilon is not None]
        figures[name]["epsilon_min"] = min(spent, default=None)
        figures[name]["epsilon_max"] = max(spent, default=None)
    if args.details:
        truth_groups = {q.id: len(truth[q.id]) for q in queries}
        print_details(queries, truth_groups, scores, answers, notes)
    for name, fig in figures.items():
        print_summary(name, fig, len(queries), len(grouped))
        print_spread(spreads[name], args.repetitions)
    matched: dict[str, dict[str, list[float]]] = {}
    if len(scores) > 1:  # errors where both released: one side's easy answers only
        common = [
            q.id
            for q in queries
            if all(any(e for sc in per[q.id] for e in sc.errors) for per in scores.values())
        ]
        medians = {
            name: statistics.median(
                statistics.median([e for sc in per[qid] for e in sc.errors]) for qid in common
            )
            if common
            else None
            for name, per in scores.items()
        }
        for name, value in medians.items():
            figures[name]["error_common_queries"] = value
        print(
            f"on the {len(common)} queries both released cells of: median of per-query median "
            "errors "
            + ", ".join(f"{name} {_pct(value).strip()}" for name, value in medians.items())
        )
        # The same cells on both sides: per query, the (group, output) cells every system
        # released at least once; each side's errors on those, then the median over queries.
        matched = {
            q.id: matched_errors({n: per[q.id] for n, per in scores.items()}) for q in queries
        }
        both = [qid for qid, m in matched.items() if all(m.values())]
        cells_median = {
            name: statistics.median(statistics.median(matched[qid][name]) for qid in both)
            if both
            else None
            for name in scores
        }
        for name, value in cells_median.items():
            figures[name]["error_matched_cells"] = value
        print(
            f"on the cells both released ({len(both)} queries; same groups on both sides): "
            "median of per-query median errors "
            + ", ".join(f"{name} {_pct(value).strip()}" for name, value in cells_median.items())
        )
    print(
        "time: "
        + ", ".join(f"{n} {t:.1f} s" for n, t in timing.items())
        + f"; total {time.perf_counter() - started:.1f} s"
    )
    result = {
        "dataset": described,
        "epsilon": args.epsilon,
        "delta": delta,
        "repetitions": args.repetitions,
        "contribution": {"C": c, "G": g, "max_ids": max_ids},
        "figures": figures,
        "spread": spreads,
        "queries": {
            q.id: {
                name: {
                    "answered": statistics.fmean(s.answered for s in scores[name][q.id]),
                    "group_share": statistics.fmean(s.group_share for s in scores[name][q.id]),
                    "median_error": statistics.median(errors)
                    if (errors := [e for s in scores[name][q.id] for e in s.errors])
                    else None,
                    "matched_error": statistics.median(cells)
                    if (cells := matched.get(q.id, {}).get(name))
                    else None,
                    "note": notes[name].get(q.id, ""),
                }
                for name in scores
            }
            for q in queries
        },
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), "utf-8")
    return result


if __name__ == "__main__":
    main()
