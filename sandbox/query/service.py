# Over 400 lines: one query's path (authorize, run, hold, release, repeat, commit), one transaction.
"""A query's whole path: authorize, guard, rewrite, execute, disclose, record, release.

Paid before it runs: once a query passed the guard and its cost bounds
(:mod:`sandbox.query.cost`), its ε is spent and the query, the rows it reads (as
expanded: CTE reuse and UNION ALL multiply) and its fees are counted in one
transaction *before* it touches data; its CPU time is added when it ends.  A run
that fails (timeout, memory, cancellation, shutdown) is charged like one that
succeeds, so failure is no oracle that bypasses the budget.

Fail closed: the result leaves only after the audit entry that records it is
durable and then the control-plane transaction that caches the release (and adds
the run's CPU time) has committed; if any of it fails, nothing is released (what
the run was charged stays charged).  Control-plane writes go through the
platform's group-commit writer (:mod:`sandbox.core.control_writer`): one
transaction, and one fsync, for every request's writes waiting at that moment.  Every
refusal, at any step, is audited with the rule that refused.

No exact value leaves without a recorded review: a grant's release mode is ``dp``
(every number noised under its budget) or ``reviewed`` (exact, held for the owning
bureau's review); a run whose result would be neither noised nor held is refused
(``release.exact_unreviewed``) before it touches data.

A query whose grant requires the bureau's review (``reviewed``) is never
released by :meth:`QueryService.run`.  A job runs it with :meth:`QueryService.run_job`,
which computes the desensitized result (noise drawn, suppression applied) and
returns it :class:`Held`: recorded in the audit trail as computed (and charged,
like every run), but nothing is released.  When the bureau approves,
:meth:`QueryService.release_held` re-authorizes the query (the grant may have been
narrowed, suspended or revoked meanwhile), checks that the held result was computed
under the same grant and dataset versions, and then releases it like ``run`` does:
audit entry durable, then the release cached, before anything is returned;
nothing is charged again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import duckdb
import pyarrow as pa
import sqlalchemy as sa

from policies import Actor, Decision, Grant
from sandbox.core.access import DatasetAccess, budgeted_spec
from sandbox.core.classification import Contribution, DatasetSpec
from sandbox.core.data_controls import DatasetControls, load_controls
from sandbox.core.db import insert_ignore, release_cache
from sandbox.core.errors import (
    AuditUnavailable,
    BudgetExhausted,
    EnclaveError,
    QueryRefused,
    QuotaExceeded,
    ResultTooLarge,
    SandboxError,
)
from sandbox.core.product_tables import PRODUCT_PURPOSE_PREFIX
from sandbox.core.sealed import open_blob, seal_blob
from sandbox.core.timeutil import to_rfc3339
from sandbox.core.wording import counted
from sandbox.enclave.catalog import DatasetRecord
from sandbox.enclave.enclave import limits_failure
from sandbox.enclave.entity_rows import entity_is_row
from sandbox.enclave.ranked_rows import declares_ranks, ranked_rows_present
from sandbox.enclave.shared import job_slot
from sandbox.engines.base import DEFAULT_ENGINE, engine_of
from sandbox.platform import Platform
from sandbox.query.accountant import per_query_epsilon
from sandbox.query.cell_accuracy import output_accuracy, result_accuracy
from sandbox.query.contribution import effective_contribution
from sandbox.query.cost import Cost, CostLimits, check_cost
from sandbox.query.default_bounds import DataBounds
from sandbox.query.disclosure import DisclosureParams, group_read_cap
from sandbox.query.held_failure import DATA_FAILURES, failure_table, held_failure
from sandbox.query.lineage import BaseColumn
from sandbox.query.negative_rules import important_datasets, important_release
from sandbox.query.noise import ExactNoise, NoiseSource
from sandbox.query.parse import attempted_sql, parse_query
from sandbox.query.plan_cache import PlanCache, access_key
from sandbox.query.product_guard import check_product_query
from sandbox.query.receipts import issue_receipt
from sandbox.query.release import (
    Prepared,
    PreparedWithSets,
    PreparedWithThresholds,
    PreparedWithTotals,
    PreparedWithWindows,
    Released,
    execute,
    prepare,
    release,
    release_database,
    result_sha256,
    run_thresholds,
    with_thresholds,
)
from sandbox.query.rewrite import ContributionBounds
from sandbox.query.window_types import Unchecked, check_output_types, stats_types

__all__ = ["Authorized", "Held", "QueryResult", "QueryService"]

log = logging.getLogger("sandbox.query.service")

#: The release cache's read, built once: it runs on every query (121 µs built per call,
#: 29 prebuilt; SQLite, CPU).
_CACHED = sa.select(release_cache).where(release_cache.c.key == sa.bindparam("b_key"))

ACTION = "dataset.query"
#: Groups computed in the enclave may exceed the released-row limit by this factor
#: (small groups are suppressed before release); memory and time limits still apply.
STATS_HEADROOM = 20


@dataclass(frozen=True)
class Authorized:
    """A query that passed authorization and the guard, ready to run."""

    decision: Decision
    prepared: Prepared
    remaining: float | None
    records: dict[str, DatasetRecord]
    cost: Cost | None = None
    """What the expanded query reads (``sandbox.query.cost``): what a run is charged."""


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table
    meta: dict[str, Any]
    receipt: dict[str, Any]


@dataclass(frozen=True)
class Held:
    """A desensitized result computed under a grant that requires review: not released.

    ``key`` is the release-cache key it was computed under (operator, query, grant and
    dataset versions, disclosure parameters): a release later must find the same key.
    """

    table: pa.Table
    groups_suppressed: int | None
    epsilon: float
    key: str
    cpu_ms: int
    meta: dict[str, Any]


class QueryService:
    """Runs and explains operators' queries against one platform."""

    def __init__(
        self,
        platform: Platform,
        *,
        noise: NoiseSource | None = None,
        contribution: ContributionBounds | None = None,
        portable_hash: bool = False,
    ) -> None:
        self.platform = platform
        self.noise = noise
        #: Cap cells by the hash every engine computes alike on DuckDB too (Spark always
        #: does; ``sandbox.query.entity_caps.portable_hash``): the engines' equivalence.
        self.portable_hash = portable_hash
        # The default for a dataset whose classification declares no [contribution].
        self.contribution = contribution or ContributionBounds(
            max_rows_per_entity=platform.settings.dp_max_rows_per_entity,
            max_groups_per_entity=platform.settings.dp_max_groups_per_entity,
        )
        self._release_db = release_database()
        self._plans = PlanCache(platform.settings.plan_cache_size)
        #: (dataset, version) -> whether each of its rows is a distinct entity
        #: (``sandbox.enclave.entity_rows``), and ("ranked", dataset, version) -> whether
        #: its ranked copy is there; established once per version and process.
        self._entity_rows: dict[tuple[object, ...], bool] = {}
        #: Bounds drawn from the data of datasets that declare none (one DP quantile each).
        self._data_bounds = DataBounds(
            platform, source=noise if isinstance(noise, ExactNoise) else None
        )
        #: Called with every query decision's audit receipt once it is durable (the risk
        #: monitor, ``sandbox.monitoring``); it must not raise or block.
        self.observer: Callable[[Any], None] | None = None

    # -- pieces ----------------------------------------------------------------------------

    def _record(
        self,
        actor: Actor,
        rid: str,
        decision: str,
        rule: str,
        *,
        client: str | None,
        dataset: str | None,
        details: dict[str, Any],
    ) -> Any:
        receipt = self.platform.record(
            actor=actor.name,
            role=actor.role.value,
            action=ACTION,
            target=f"query:{rid}",
            decision=decision,
            rule=rule,
            request_id=rid,
            client=client,
            dataset=dataset,
            details={**details, **actor.audit_details()},
        )
        if self.observer is not None:
            self.observer(receipt)
        return receipt

    def _access(
        self,
        grants: tuple[Grant, ...],
        records: dict[str, DatasetRecord],
        state: Hashable | None = None,
        *,
        budgeted: bool = False,
    ) -> dict[str, DatasetAccess]:
        # ``budgeted``: the release is noised, so generalisations declared for exact
        # releases only do not bind (``budgeted_spec``).
        # The negative list and important data (docs/governance.md), cached by the policy
        # state the authority adopted for this request: every change to them, and every
        # grant's co-approval, bumps the policy version in its own transaction.
        ids = {g.dataset: g.id for g in grants}

        def read() -> dict[str, DatasetControls]:
            with self.platform.engine.connect() as conn:
                return load_controls(conn, records, ids)

        key = None if state is None else ("controls", state, tuple(sorted(ids.items())))
        controls = self._plans.get_or_build(key, read) if set(records) == set(ids) else read()
        access = {}
        for grant in grants:
            record = records[grant.dataset]
            drawn = self._data_bounds.groups(record) if budgeted else ()
            access[grant.dataset] = DatasetAccess(
                budgeted_spec(record.spec) if budgeted else record.spec,
                grant.max_level,
                None if grant.columns is None else frozenset(c.lower() for c in grant.columns),
                frozenset(c.lower() for c in grant.groupable),
                controls[grant.dataset],
                entity_is_row=self._entity_is_row(record),
                ranked=self._ranked(record),
                budgeted=budgeted,
                drawn_groups=drawn,
            )
        return access

    def _version_fact(self, key: tuple[object, ...], look: Callable[[], bool]) -> bool:
        """A fact of one dataset version read from the enclave once (``look``), cached.

        Bookkeeping, not the job's query: it runs outside the job slot, so a cancelled job
        is stopped (and charged) at its query.  Where the enclave's limits stop it (a small
        memory_limit), the answer is False this time and not cached: the plan falls back
        to the general path (sound either way), and the run meets its own limits.  A run's
        version check (:meth:`_check_versions`) refuses a plan whose dataset was replaced.
        """
        found = self._entity_rows.get(key)
        if found is None:
            try:
                with job_slot(None):
                    found = look()
            except duckdb.Error:
                return False
            self._entity_rows[key] = found
        return found

    def _ranked(self, record: DatasetRecord) -> bool:
        """Whether the enclave holds the record's version ranked within each entity."""
        if not declares_ranks(record.spec) or record.engine != DEFAULT_ENGINE:
            return False

        def look() -> bool:
            with self.platform.enclave.cursor() as cursor:
                return ranked_rows_present(cursor, record.spec)

        return self._version_fact(("ranked", record.id, record.version), look)

    def _entity_is_row(self, record: DatasetRecord) -> bool:
        """Whether each row of the record's version is a distinct entity (DuckDB only)."""
        if not record.spec.one_row_per_entity or record.engine != DEFAULT_ENGINE:
            return False
        return self._version_fact(
            (record.id, record.version),
            lambda: entity_is_row(self.platform.enclave, record.spec),
        )

    def _check_versions(self, auth: Authorized, cursor: Any = None) -> None:
        """Refuse a run whose datasets are not, as it is about to read them, what its plan
        was made for.

        Called by the engine before the stats query reads a row, once its view of the
        data is fixed (``Engine.run``'s ``before``: on DuckDB the cursor is held, and no
        registration swaps a table in while a query runs), with that cursor.  The plan
        relied on its datasets' versions (one row per entity, for a one-stage plan) and on
        their columns' types (a predicate left without ``TRY``, a measure's cast, a join's
        keys: a column whose type changed could fail on a value).  So the catalog's
        versions must be the plan's, and each table's columns and types, read on that
        cursor, must be the ones its version recorded (``schema_sha256``): that holds
        even where the catalog and the table disagree (a registration whose control-plane
        commit failed after the table's).
        """
        now = self.platform.catalog.current_versions(list(auth.records))
        changed = any(now.get(d) != r.version for d, r in auth.records.items())
        if not changed and cursor is not None:
            enclave = self.platform.enclave
            changed = any(
                enclave.schema_digest(cursor, d) != r.schema_sha256 for d, r in auth.records.items()
            )
        if changed:
            raise QueryRefused(
                "a dataset of the query was replaced by a new version since it was "
                "planned: run it again",
                rule="catalog.version_changed",
            )

    def _params(
        self, decision: Decision, records: dict[str, DatasetRecord] | None = None
    ) -> tuple[DisclosureParams, float | None]:
        grants = decision.grants
        k = max([g.k for g in grants] + [self.platform.settings.k_floor])
        budgeted = [g for g in grants if g.epsilon_total is not None]
        epsilon: float | None = None
        remaining: float | None = None
        if budgeted:
            remaining = (
                min(decision.budgets[g.id].remaining for g in budgeted if g.id in decision.budgets)
                if decision.budgets
                else None
            )
            caps = [g.epsilon_per_query for g in budgeted if g.epsilon_per_query]
            epsilon = min(caps) if caps else min(1.0, remaining or 0.0)
        # A query over several grants (a join) releases under the strictest terms of each.
        shares = [g.dominance_p for g in grants if g.dominance_p is not None]
        digits = [g.round_digits for g in grants if g.round_digits is not None]
        # C and G: each dataset's [contribution] (or the default, or bounds drawn from its
        # data where it declares none), narrowed by its grants.
        default = self._default_bounds(records or {})
        specs = {d: r.spec for d, r in (records or {}).items()}
        if budgeted:
            specs = self._drawn_specs(records or {}, default)
        bounds = effective_contribution(grants, specs, default)
        params = DisclosureParams(
            k=k,
            epsilon=epsilon,
            max_rows_per_entity=bounds.max_rows_per_entity,
            max_groups_per_entity=bounds.max_groups_per_entity,
            max_total_rows_per_entity=bounds.max_total_rows_per_entity,
            dominance_n=max((g.dominance_n for g in grants), default=2),
            dominance_p=min(shares) if shares else None,
            round_digits=min(digits) if digits else None,
            delta=self.platform.settings.dp_delta,
        )
        return params, remaining

    def _default_bounds(self, records: dict[str, DatasetRecord]) -> ContributionBounds:
        """C and G for a dataset that declares no ``[contribution]``.

        A query over one dataset whose every row is a distinct entity (declared
        ``one_row_per_entity`` and verified in the enclave for this version) reads one row
        of each entity, in one group: ``C = G = 1`` are the data's own bounds, not the
        platform's default (6 times less noise than ``C = 2, G = 3``).  The rewrite
        enforces them whatever the rows hold (a new version with repeated keys loses rows,
        never privacy; a one-stage plan over a replaced version is refused).  A query over
        several datasets (a join) keeps the platform's default.
        """
        if len(records) == 1:
            (record,) = records.values()
            if record.spec.contribution is None and self._entity_is_row(record):
                return ContributionBounds(max_rows_per_entity=1, max_groups_per_entity=1)
        return self.contribution

    def _drawn_specs(
        self, records: dict[str, DatasetRecord], default: ContributionBounds
    ) -> dict[str, DatasetSpec]:
        """Each dataset's classification, a missing ``[contribution]`` filled with the
        bounds drawn from its data (``sandbox.query.default_bounds``) where they lower
        ``default``; drawn at the first query with a budget that needs them."""
        fallback = Contribution(
            default.max_rows_per_entity,
            default.max_groups_per_entity,
            default.max_total_rows_per_entity,
        )
        specs = {}
        for dataset, record in records.items():
            drawn = self._data_bounds.bounds(record, fallback)
            specs[dataset] = (
                record.spec if drawn is None else replace(record.spec, contribution=drawn)
            )
        return specs

    def _authorize(
        self,
        actor: Actor,
        sql: str,
        rid: str,
        purpose: str | None,
        client: str | None,
        *,
        paid: bool = False,
        epsilon: float | None = None,
    ) -> Authorized:
        """Parse, authorize, bound the cost, guard and rewrite ``sql``.

        ``paid``: it was charged when it ran (a held result's release after review): the
        grant must still be live, but its quotas and budget are not checked again.
        """
        if purpose is not None and purpose.startswith(PRODUCT_PURPOSE_PREFIX):
            check_product_query(self.platform, purpose, sql)  # its template's bindings only
        max_length = self.platform.settings.max_sql_length
        plans = self._plans
        parsed = plans.get_or_build(
            ("parse", sql, max_length), lambda: parse_query(sql, max_length=max_length)
        )
        decision = self.platform.authority.decide(
            actor,
            ACTION,
            f"query:{rid}",
            datasets=parsed.datasets,
            purpose=purpose,
            request_id=rid,
            client=client,
            audit=False,
            paid=paid,
        )
        if not decision.allowed:
            raise decision.error()
        records = {d: self.platform.catalog.get(d) for d in parsed.datasets}
        # One engine per query (engine.mixed); Spark's caps choose cells by the portable hash.
        engine = engine_of(records.values())
        portable = self.portable_hash or engine != DEFAULT_ENGINE
        # The analysis is cached by all it reads (sandbox.query.plan_cache), read fresh here.
        state = self.platform.authority.state
        versions = {d: (r.version, r.classification_sha256) for d, r in records.items()}
        rows, limits = {d: r.row_count for d, r in records.items()}, self._limits()
        # Before the guard qualifies anything: its own analysis grows with the expanded query.
        cost = plans.get_or_build(
            ("cost", state, sql, max_length, tuple(sorted(rows.items())), limits),
            lambda: check_cost(parsed.expression, rows, limits),
        )
        if not paid:
            _check_rows_quota(decision, cost)
        params, remaining = self._params(decision, records)
        caps = [g.epsilon_per_query for g in decision.grants if g.epsilon_per_query]
        params = per_query_epsilon(params, min(caps) if caps else None, epsilon)
        access = self._access(decision.grants, records, state, budgeted=params.epsilon is not None)
        fingerprint = access_key(access, versions)
        key = None if fingerprint is None else ("prepare", state, sql, max_length, fingerprint)
        prepared = plans.get_or_build(
            None if key is None else (*key, params, portable),
            lambda: prepare(parsed, access, params, max_sql_length=max_length, portable=portable),
        )
        # Refused here (check, explain, run alike), before a job or a charge: an ε whose
        # shares round to nothing (noise_plan), or too small for the groups' read cap.
        self._read_cap(prepared)
        # And outputs or windows that cannot be computed on their released types.
        checked = None if key is None else ("output_types", *key, params, portable)
        self._check_output_types(prepared, engine, checked)
        touched = [BaseColumn(*c.rsplit(".", 1)) for c in prepared.touched]
        important = important_datasets(parsed.datasets, touched, access)
        decision = important_release(decision, important, epsilon=prepared.params.epsilon)
        return Authorized(decision, prepared, remaining, records, cost)

    def _check_output_types(self, prepared: Prepared, engine: str, key: Hashable | None) -> None:
        """Refuse outputs (``guard.output_types``) and windows (``guard.window``) that
        cannot bind on the types they are computed from (``sandbox.query.window_types``):
        data-independent, so refused before a job or a charge, as the guard refuses.  Once
        per plan (cached by ``key``), and only for plans that compute outputs over their
        released statistics (a plain projection cannot fail so); the stats query is bound
        in the enclave, no row read.  On DuckDB only: on Spark, and wherever the dry run
        cannot be had, the run decides as before."""
        if engine != DEFAULT_ENGINE or not _computes(prepared):
            return

        def check() -> bool:
            with job_slot(None), self.platform.enclave.cursor() as cursor:
                check_output_types(prepared, partial(stats_types, cursor), self._release_db)
            return True

        try:
            self._plans.get_or_build(key, check)
        except (Unchecked, EnclaveError, duckdb.Error):
            return  # not cached: the next request tries again

    def _read_cap(self, prepared: Prepared) -> int:
        """How many groups the engine may read for ``prepared`` (``group_read_cap``).

        How many groups the data forms, before suppression, is the data's.  With ε the
        limit is held against their noisy number (``disclosure._noisy_groups``) and the
        engine reads up to a margin of that noise beyond it, fixed by the plan; without
        ε the true number decides, and a reviewed run that fails is held (held_failure).
        """
        prepared.epsilon  # noqa: B018 - the noise plan refuses shares that round to nothing
        if isinstance(prepared, PreparedWithWindows):
            return self._read_cap(prepared.inner)  # the windows read released rows only
        if isinstance(prepared, PreparedWithSets):
            # Every grouping set's own cap (each refused as its own query would be); the
            # engine reads up to the largest, at least each set's own margin.  The first
            # set's alone left an ungrouped () first with no margin: a grouped set then
            # stopped on its true number of groups (review, December 2026).
            return max(self._read_cap(part) for part in prepared.sets)
        keys = bool(prepared.plan.keys)
        return group_read_cap(prepared.columns, prepared.params, self._max_groups, grouped=keys)

    @property
    def _max_groups(self) -> int:
        """The groups a run may form (held against their noisy number under ε)."""
        return self.platform.settings.max_result_rows * STATS_HEADROOM

    def _limits(self) -> CostLimits:
        return CostLimits.of(self.platform.settings)

    # -- explain ---------------------------------------------------------------------------

    def explain(
        self,
        actor: Actor,
        sql: str,
        *,
        purpose: str | None = None,
        client: str | None = None,
        request_id: str | None = None,
        epsilon: float | None = None,
    ) -> dict[str, Any]:
        """Would this query be accepted, which rule refuses it, what it touches and costs.

        ``epsilon``: the ε the analyst chooses for this query (default: the grant's).
        """
        rid = request_id or uuid.uuid4().hex
        try:
            auth = self._authorize(actor, sql, rid, purpose, client, epsilon=epsilon)
        except SandboxError as exc:
            self._record_deny(actor, rid, client, sql, exc, {"explain": True})
            return {"accepted": False, "rule": exc.rule or exc.code, "message": exc.message}
        prepared, decision = auth.prepared, auth.decision
        answer = {
            "accepted": True,
            "datasets": list(prepared.parsed.datasets),
            "columns": prepared.touched,
            "entity_of": prepared.plan.primary,
            "k": prepared.params.k,
            "epsilon": prepared.epsilon,
            "epsilon_remaining": auth.remaining,
            # 95% half-widths per output, from the noise plan: before any ε is spent.
            "accuracy": output_accuracy(prepared),
            "contribution": _contribution(prepared),
            "review_required": decision.review_required,
            "grants": [{"id": g.id, "version": g.version} for g in decision.grants],
            "normalized_sql": prepared.parsed.normalized_sql,
        }
        if isinstance(prepared, PreparedWithThresholds) and prepared.params.epsilon:
            # Each threshold's own 95% half-width (it is released first, then compared):
            # the query's intervals above are its noise at a fixed threshold.
            answer["thresholds"] = [_threshold_accuracy(part) for part in prepared.parts]
        if auth.cost is not None:
            answer["reads"] = dict(auth.cost.reads)
            answer["rows_read"] = auth.cost.rows_total
        self._record(
            actor,
            rid,
            "allow",
            decision.rule,
            client=client,
            dataset=prepared.parsed.datasets[0],
            details={
                "explain": True,
                "normalized_sql": prepared.parsed.normalized_sql,
                "query_sha256": prepared.query_sha256,
            },
        )
        return answer

    # -- run -------------------------------------------------------------------------------

    def run(
        self,
        actor: Actor,
        sql: str,
        *,
        purpose: str | None = None,
        request_id: str | None = None,
        client: str | None = None,
        epsilon: float | None = None,
    ) -> QueryResult:
        """Run one query and release its desensitized result (or raise, audited).

        ``epsilon``: the ε the analyst chooses, within the grant's per-query maximum.
        """
        outcome = self._run(actor, sql, purpose, request_id, client, hold=False, epsilon=epsilon)
        assert isinstance(outcome, QueryResult)
        return outcome

    def run_job(
        self,
        actor: Actor,
        sql: str,
        *,
        purpose: str | None = None,
        request_id: str | None = None,
        client: str | None = None,
        authorized: Authorized | None = None,
        epsilon: float | None = None,
        with_charge: Callable[[sa.Connection], None] | None = None,
        with_release: Callable[[sa.Connection, QueryResult], None] | None = None,
        shown_as_run: bool = False,
        prepaid: float | None = None,
    ) -> QueryResult | Held:
        """As :meth:`run`; under a grant that requires review, compute and hold, don't release.

        ``shown_as_run``: the job's operator sees its run (it was not bound for review when
        submitted, ``sandbox/jobs/held_view.py``).  If review is required now (a grant
        made ``reviewed``, a dataset made important data meanwhile) and no release is
        cached, it is refused before it is charged (``review.changed``): held as it ran,
        its operator would see when its run ended.

        ``authorized``: what :meth:`check` returned for this very query moments ago (a job
        run at once in the process that accepted it), to skip parsing and checking again.
        ``epsilon``: the ε the job was submitted with (checked again when it runs).
        ``with_charge``: the caller's own write (a job's row) in the transaction of the
        run's charge, committed before the run touches data: both or neither.
        ``with_release``: the caller's own record of a release (a job's end), written in
        the very transaction that stores it (its usage and cached copy): both or neither.
        Neither is called for what never gets that far (a refusal, an answer from the
        release cache; a result held for review has no release).
        ``prepaid``: the ε the job was charged when it was submitted (:meth:`prepay`, a job
        bound for review): not charged again, its quotas and budget not checked again,
        and refused (``budget.changed``) if its grants would now spend another ε.
        """
        return self._run(
            actor,
            sql,
            purpose,
            request_id,
            client,
            hold=True,
            auth=authorized,
            epsilon=epsilon,
            with_charge=with_charge,
            with_release=with_release,
            shown_as_run=shown_as_run,
            prepaid=prepaid,
        )

    def prepay(
        self,
        actor: Actor,
        sql: str,
        auth: Authorized,
        *,
        rid: str,
        ref: str,
        client: str | None,
        also: Callable[[sa.Connection], None] | None = None,
    ) -> float:
        """Charge a job bound for review when it is submitted, not when it runs; the ε.

        Its run starts when the held runs queued before it have ended, so a charge taken
        then (its query count and ε in the operator's usage) would tell how long they ran
        (sandbox/jobs/held_view.py).  ``also``: the job's row, written in the charge's
        transaction (both or neither); ``ref``: the job, named by the spend.  Refused and
        audited as a run's charge is (``budget.exhausted``, a quota).
        """
        started = time.perf_counter()
        try:
            self._check_budget(auth)
            return self._charge(auth, ref, also=also)
        except SandboxError as exc:
            self.record_refusal(actor, rid, client, sql, exc, started)
            raise

    def check(
        self,
        actor: Actor,
        sql: str,
        *,
        purpose: str | None = None,
        request_id: str | None = None,
        client: str | None = None,
        epsilon: float | None = None,
    ) -> Authorized:
        """Would :meth:`run_job` start?  A refusal is audited and raised; acceptance is silent.

        For job submission: a query refused now is refused at once, with its rule, and
        no job is created.  It is checked again when the job runs.
        """
        rid = request_id or uuid.uuid4().hex
        started = time.perf_counter()
        try:
            auth = self._authorize(actor, sql, rid, purpose, client, epsilon=epsilon)
            self._check_budget(auth)
            _check_noised_or_reviewed(auth)
        except SandboxError as exc:
            self.record_refusal(actor, rid, client, sql, exc, started)
            raise
        return auth

    @staticmethod
    def _check_budget(auth: Authorized) -> None:
        prepared = auth.prepared
        if prepared.params.epsilon and (
            auth.remaining is None or prepared.epsilon > auth.remaining + 1e-9
        ):
            # The authority's own refusal of an empty ledger is BudgetExhausted: same rule,
            # same code and status when a little is left but not enough.
            raise BudgetExhausted(
                f"the query costs ε={prepared.epsilon:g} but only "
                f"{auth.remaining or 0:g} remains on the grant",
                rule="budget.exhausted",
            )

    def record_refusal(
        self,
        actor: Actor,
        rid: str,
        client: str | None,
        sql: str,
        exc: SandboxError,
        started: float,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Audit a refusal of ``sql`` with its rule (nothing to record if the audit is down).

        ``extra``: more details (a failed run's ``epsilon_spent``: it was charged).
        """
        if isinstance(exc, AuditUnavailable):
            return
        duration = {"duration_ms": int((time.perf_counter() - started) * 1000)}
        self._record_deny(actor, rid, client, sql, exc, {**duration, **(extra or {})})

    def _record_deny(
        self,
        actor: Actor,
        rid: str,
        client: str | None,
        sql: str,
        exc: SandboxError,
        extra: dict[str, Any],
    ) -> None:
        """The deny entry of ``sql``: the real rule and reason (also when withheld from the
        caller), the SQL as attempted, and ``extra``."""
        rule, reason = exc.audited
        attempted = attempted_sql(sql, max_length=self.platform.settings.max_sql_length)
        self._record(
            actor,
            rid,
            "deny",
            rule,
            client=client,
            dataset=None,
            details={"reason": reason, **attempted, **extra},  # canonical JSON sorts keys
        )

    def _run(
        self,
        actor: Actor,
        sql: str,
        purpose: str | None,
        request_id: str | None,
        client: str | None,
        *,
        hold: bool,
        auth: Authorized | None = None,
        epsilon: float | None = None,
        with_charge: Callable[[sa.Connection], None] | None = None,
        with_release: Callable[[sa.Connection, QueryResult], None] | None = None,
        shown_as_run: bool = False,
        prepaid: float | None = None,
    ) -> QueryResult | Held:
        rid = request_id or uuid.uuid4().hex
        started = time.perf_counter()
        charged: float | None = prepaid
        try:
            paid = prepaid is not None
            auth = auth or self._authorize(
                actor, sql, rid, purpose, client, epsilon=epsilon, paid=paid
            )
            prepared = auth.prepared
            if auth.decision.held_for and not hold:
                raise QueryRefused(
                    "the query reads important data (重要数据): every release waits for the "
                    "owning bureau's review: submit it as a job",
                    rule="important.review",
                )
            if auth.decision.review_required and not hold:
                raise QueryRefused(
                    "a grant used by this query requires bureau review before release: submit "
                    "it as a job",
                    rule="grant.review_required",
                )
            _check_noised_or_reviewed(auth)
            if prepaid is not None and not auth.decision.review_required:
                # shown ended now, it would tell when the held runs before it ended
                raise QueryRefused(
                    "the grants and datasets this job reads no longer hold its results for "
                    "review: submit it again",
                    rule="review.changed",
                )
            if prepaid is None:
                self._check_budget(auth)
            elif abs(prepared.epsilon - prepaid) > 1e-9:
                raise QueryRefused(
                    f"the job was charged ε={prepaid:g} when it was submitted, but its "
                    f"grants now give it ε={prepared.epsilon:g}: submit it again",
                    rule="budget.changed",
                )
            read_cap = self._read_cap(prepared)  # as authorized: no refusal left here
            key = self._cache_key(actor, auth)
            # A job bound for review computes and holds even a release it could repeat
            # (answered now, it would be shown ended when the held runs before it ended);
            # its approval answers from the cache (release_held).
            cached = None if prepaid is not None else self._cached(key)
            if cached is not None:
                # Already released to this operator (after review, if the grant needs it).
                return self._repeat(actor, rid, client, auth, cached, started)
            hidden = self.platform.settings.review_timing_hidden
            if shown_as_run and hidden and auth.decision.review_required:
                raise QueryRefused(
                    "a grant or dataset this job reads now holds its results for review: "
                    "submit it again",
                    rule="review.changed",
                )
            # Paid before it touches data: a run that fails (time, memory, cancellation)
            # costs what one that succeeds does, so failing is no free oracle.
            if prepaid is None:
                charged = self._charge(auth, rid, also=with_charge)
            # This thread's CPU clock, not the process's: the process's also counts other
            # operators' concurrent jobs, which an operator could read off its own usage.
            # DuckDB's helper threads are not counted (they serve every query at once).
            cpu0 = time.thread_time()
            try:
                limit = self.platform.settings.max_result_rows
                noised = prepared.params.epsilon is not None
                run: Prepared = prepared
                thresholds: tuple[Released, ...] = ()
                try:
                    engine = self.platform.query_engine(engine_of(auth.records.values()))
                    if isinstance(prepared, PreparedWithThresholds):
                        # released first; the query then runs at their released values
                        run, thresholds = run_thresholds(
                            engine,
                            prepared,
                            noise=self.noise,
                            database=self._release_db,
                            before=partial(self._check_versions, auth),
                        )
                    stats = execute(
                        engine,
                        run,
                        max_groups=read_cap,
                        before=partial(self._check_versions, auth),
                    )
                except ResultTooLarge:
                    # Told apart from a timeout or out of memory by nothing.
                    raise limits_failure() from None
                try:
                    released = release(
                        stats,
                        run,
                        noise=self.noise,
                        database=self._release_db,
                        max_groups=self._max_groups if noised else None,
                    )
                    released = with_thresholds(released, thresholds)
                except SandboxError:
                    raise
                except Exception as exc:
                    # Computed from the run's statistics: whether it fails is data (a
                    # reviewed run holds it; an outside review read a suppressed count
                    # from pyarrow's rounding overflow, December 2026).  Named by rule;
                    # logged by its type only (an engine's message may quote a value).
                    log.error("the release failed on the run's statistics: %s", type(exc).__name__)
                    raise EnclaveError(
                        "the released values could not be computed from the statistics",
                        rule="disclosure.arithmetic",
                    ) from None
                if released.table.num_rows > limit:
                    raise ResultTooLarge(
                        f"the released result has more than {counted(limit, 'row')}",
                        rule="enclave.max_result_rows",
                    )
            except SandboxError as exc:
                cpu_ms = int((time.thread_time() - cpu0) * 1000)
                self._meter(auth, cpu_ms)
                if auth.decision.review_required and exc.rule in DATA_FAILURES:
                    # Held like a result: whether it failed is data the bureau reviews.
                    failed = Released(failure_table(exc), None, prepared.epsilon)
                    return self._hold(
                        actor, rid, client, auth, key, failed, 0, started, failure=exc
                    )
                raise
            except BaseException:
                self._meter(auth, int((time.thread_time() - cpu0) * 1000))
                raise
            cpu_ms = int((time.thread_time() - cpu0) * 1000)
            if auth.decision.review_required:  # metered on release (_meter)
                return self._hold(actor, rid, client, auth, key, released, cpu_ms, started)
            return self._commit(
                actor, rid, client, auth, key, released, cpu_ms, started, also=with_release
            )
        except SandboxError as exc:
            extra = {} if charged is None else {"epsilon_spent": charged}
            self.record_refusal(actor, rid, client, sql, exc, started, extra=extra)
            raise

    def _charge(
        self, auth: Authorized, rid: str, *, also: Callable[[sa.Connection], None] | None = None
    ) -> float:
        """Spend the run's ε and count it (query, estimated rows, fees) before it runs.

        One transaction: if the budget cannot pay, nothing is counted and nothing runs.
        The run's outcome changes nothing here; only its CPU time is added afterwards.
        ``also``: the caller's write, in the same transaction.  Returns the ε spent.
        """
        now = datetime.now(UTC)
        decision, epsilon = auth.decision, auth.prepared.epsilon
        rows = None if auth.cost is None else dict(auth.cost.rows)

        # Each budgeted grant's spend and its usage row (count, rows, fees, ε): one write,
        # committed with whatever other requests' writes are waiting (group commit).
        def write(conn: sa.Connection) -> None:
            if also is not None:
                also(conn)
            self.platform.authority.record_usage(
                decision, rows_scanned=rows, conn=conn, now=now, epsilon=epsilon, ref=rid
            )

        self.platform.control_writer.run(write)
        return epsilon

    def _meter(self, auth: Authorized, cpu_ms: int, *, released: bool = False) -> None:
        """Add a failed or cancelled run's CPU time to its usage (best effort: it was paid).

        Not a run held for review until it is released (``released``): its result is
        exact, so its CPU time is data the review has not passed (an outside attack read a
        k-1 membership bit from it: a withheld threshold switched the held query between
        reading nothing and every row).  A held run's CPU time is in its audit entry; the
        operator's usage gets it when the bureau releases the result, never if rejected."""
        if cpu_ms <= 0 or (auth.decision.review_required and not released):
            return
        try:
            self.platform.authority.record_usage(auth.decision, cpu_ms=cpu_ms, count=False)
        except Exception:  # the control plane is down: the run's charge stands
            log.warning("could not meter the CPU time of a failed run")

    def _hold(
        self,
        actor: Actor,
        rid: str,
        client: str | None,
        auth: Authorized,
        key: str,
        released: Released,
        cpu_ms: int,
        started: float,
        *,
        failure: SandboxError | None = None,
    ) -> Held:
        """Record that a result was computed and is held for review; release nothing.

        ``failure``: the run failed on the data (``held_failure``); ``released`` stands
        for it, and the audit entry records its real rule and reason."""
        prepared, decision = auth.prepared, auth.decision
        meta: dict[str, Any] = {
            "request_id": rid,
            "rows": released.table.num_rows,
            "groups_suppressed": released.groups_suppressed,
            "k": prepared.params.k,
            "epsilon": released.epsilon_spent,
            "datasets": list(prepared.parsed.datasets),
            "review_datasets": decision.review_datasets,
            "columns": prepared.touched,
            "query_sha256": prepared.query_sha256,
            "result_sha256": result_sha256(released.table),
        }
        self._record(
            actor,
            rid,
            "allow",
            decision.rule,
            client=client,
            dataset=prepared.parsed.datasets[0],
            details={
                **meta,
                "held_for_review": True,
                **(
                    {}
                    if failure is None
                    else {"failed": dict(zip(("rule", "reason"), failure.audited, strict=True))}
                ),
                "epsilon_spent": released.epsilon_spent,  # charged before it ran
                # metered to the operator only if released (_meter): recorded here
                "cpu_ms": cpu_ms,
                "normalized_sql": prepared.parsed.normalized_sql,
                "grants": [{"id": g.id, "version": g.version} for g in decision.grants],
                "duration_ms": int((time.perf_counter() - started) * 1000),
            },
        )
        return Held(
            released.table, released.groups_suppressed, released.epsilon_spent, key, cpu_ms, meta
        )

    def release_held(
        self,
        actor: Actor,
        sql: str,
        held: Held,
        *,
        purpose: str | None = None,
        request_id: str | None = None,
        client: str | None = None,
        review: list[dict[str, Any]] | None = None,
    ) -> QueryResult:
        """Release a held result after review: re-authorized, then audited and cached.

        Refused (and audited) with ``review.stale`` if the grants, datasets or disclosure
        parameters changed since it was computed (the job must run again), and with the
        authorization's own rule if the grant is no longer live.  Its ε and quotas were
        charged when it ran: they are neither checked nor spent again.
        """
        rid = request_id or uuid.uuid4().hex
        started = time.perf_counter()
        try:
            if not held.key and (ended := held_failure(held.table)) is not None:
                # held by its runner (a review-bound job refused or failed before it read
                # data, held_failure): approved, the operator learns how it ended
                raise ended
            auth = self._authorize(actor, sql, rid, purpose, client, paid=True)
            key = self._cache_key(actor, auth)
            if key != held.key:
                raise QueryRefused(
                    "the grant, the dataset or the disclosure parameters changed after the "
                    "result was computed: submit the job again",
                    rule="review.stale",
                )
            failed = held_failure(held.table)
            if failed is not None:  # approved: the operator learns that (and how) it failed
                self._meter(auth, held.cpu_ms, released=True)
                raise failed
            cached = self._cached(key)
            if cached is not None:
                return self._repeat(actor, rid, client, auth, cached, started)
            # Its ε, quota and fees were charged when it ran (whatever the review decides).
            released = Released(held.table, held.groups_suppressed, held.epsilon)
            return self._commit(
                actor,
                rid,
                client,
                auth,
                key,
                released,
                held.cpu_ms,  # metered now that it is released (_meter)
                started,
                extra={"review": review or []},
            )
        except SandboxError as exc:
            self.record_refusal(actor, rid, client, sql, exc, started)
            raise

    def _repeat(
        self,
        actor: Actor,
        rid: str,
        client: str | None,
        auth: Authorized,
        cached: QueryResult,
        started: float,
    ) -> QueryResult:
        """Answer a repeat from the release cache: its own audit entry, nothing spent.

        The rows and the receipt are the first release's (the receipt signs that
        release's entry); ``request_id`` and ``audit_entry_hash`` are this answer's own, and
        ``released_by`` names the request whose release it repeats.
        """
        prepared, decision = auth.prepared, auth.decision
        first = cached.meta["request_id"]
        meta: dict[str, Any] = {
            **cached.meta,
            "request_id": rid,
            "released_by": first,
            "epsilon_spent": 0.0,
            "epsilon_remaining": auth.remaining,
        }
        entry = self._record(
            actor,
            rid,
            "allow",
            decision.rule,
            client=client,
            dataset=prepared.parsed.datasets[0],
            details={
                **{k: v for k, v in meta.items() if k != "cached"},
                "cache": True,
                "normalized_sql": prepared.parsed.normalized_sql,
                "grants": [{"id": g.id, "version": g.version} for g in decision.grants],
                "duration_ms": int((time.perf_counter() - started) * 1000),
            },
        )
        return QueryResult(
            cached.table, {**meta, "audit_entry_hash": entry.entry_hash.hex()}, cached.receipt
        )

    def _cache_key(self, actor: Actor, auth: Authorized) -> str:
        versions = sorted((d, r.version) for d, r in auth.records.items())
        material = json.dumps(
            [
                actor.name,
                auth.prepared.parsed.normalized_sql,
                sorted((g.id, g.version) for g in auth.decision.grants),
                versions,
                repr(auth.prepared.params),
            ],
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def released_before(self, actor: Actor, auth: Authorized) -> bool:
        """Whether ``actor`` holds this very release already (its repeat is answered from
        the release cache, with no new review): its own knowledge, not the data's."""
        with self.platform.engine.connect() as conn:
            key = self._cache_key(actor, auth)
            return conn.execute(_CACHED, {"b_key": key}).first() is not None

    def _cached(self, key: str) -> QueryResult | None:
        with self.platform.engine.connect() as conn:
            row = conn.execute(_CACHED, {"b_key": key}).first()
        if row is None:
            return None
        data = open_blob(self.platform.data_keys, bytes(row.result), f"release_cache:{key}")
        table = pa.ipc.open_stream(io.BytesIO(data)).read_all()
        return QueryResult(table, {**row.meta, "cached": True}, row.receipt)

    def _commit(
        self,
        actor: Actor,
        rid: str,
        client: str | None,
        auth: Authorized,
        key: str,
        released: Released,
        cpu_ms: int,
        started: float,
        *,
        extra: dict[str, Any] | None = None,
        also: Callable[[sa.Connection, QueryResult], None] | None = None,
    ) -> QueryResult:
        now = datetime.now(UTC)
        prepared, decision = auth.prepared, auth.decision
        digest = result_sha256(released.table)
        datasets = [auth.records[d] for d in prepared.parsed.datasets]
        meta: dict[str, Any] = {
            "request_id": rid,
            "rows": released.table.num_rows,
            "groups_suppressed": released.groups_suppressed,
            "k": prepared.params.k,
            "epsilon_spent": released.epsilon_spent,
            "accuracy": result_accuracy(prepared, released, self._release_db),
            # Under a budget: the caps the values were computed under (their bias is not in
            # the intervals above); null without one.
            "contribution": _contribution(prepared) if prepared.params.epsilon else None,
            **_thresholds_meta(prepared, released),
            "epsilon_remaining": None
            if auth.remaining is None
            else max(0.0, auth.remaining - released.epsilon_spent),
            "datasets": [d.id for d in datasets],
            "columns": prepared.touched,
            "query_sha256": prepared.query_sha256,
            "result_sha256": digest,
        }
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, released.table.schema) as writer:
            writer.write_table(released.table)
        # The audit entry is durable first (its own store's group commit), then the CPU time
        # and the cached release commit in the control plane's next group; only then is
        # anything returned.  A failure after the entry leaves it recording a release that
        # was never returned: the trail may say more than happened, never less.
        details = {
            **meta,
            "normalized_sql": prepared.parsed.normalized_sql,
            "grants": [{"id": g.id, "version": g.version} for g in decision.grants],
            "duration_ms": int((time.perf_counter() - started) * 1000),
            **(extra or {}),
        }
        entry = self._record(
            actor,
            rid,
            "allow",
            decision.rule,
            client=client,
            dataset=datasets[0].id,
            details=details,
        )
        receipt = issue_receipt(
            {
                "request_id": rid,
                "operator": actor.name,
                "issued_at": to_rfc3339(now),
                "query_sha256": prepared.query_sha256,
                "grants": details["grants"],
                "datasets": [
                    {"id": d.id, "version": d.version, "source_sha256": d.source_sha256}
                    for d in datasets
                ],
                "epsilon_spent": released.epsilon_spent,
                "k": prepared.params.k,
                "rows": released.table.num_rows,
                "groups_suppressed": released.groups_suppressed,
                "result_sha256": digest,
                # The entry's hash, not its seq: a seq counts every account's activity.
                "audit": {"entry_hash": entry.entry_hash.hex()},
            },
            self.platform.signing_key(),
        )
        sealed = seal_blob(
            self.platform.data_keys, sink.getvalue().to_pybytes(), f"release_cache:{key}"
        )
        result = QueryResult(
            released.table,
            {**meta, "cached": False, "audit_entry_hash": entry.entry_hash.hex()},
            receipt,
        )

        def write(conn: sa.Connection) -> None:
            # ε, the query and its rows were charged before it ran (:meth:`_charge`).
            self.platform.authority.record_usage(
                decision, cpu_ms=cpu_ms, conn=conn, now=now, count=False
            )
            insert_ignore(
                conn,
                release_cache,
                key=key,
                operator=actor.name,
                created_at=to_rfc3339(now),
                result=sealed,
                meta=meta,
                receipt=receipt,
            )
            if also is not None:
                also(conn, result)

        self.platform.control_writer.run(write)
        return result


def _check_noised_or_reviewed(auth: Authorized) -> None:
    """No exact value leaves without a recorded review: a result not held for review must
    be noised (ε > 0).  Closed by construction: whatever grant terms got here, a run
    that would release exact values unreviewed is refused before it touches data."""
    if auth.decision.review_required:
        return
    epsilon = auth.prepared.params.epsilon
    if epsilon is None or not epsilon > 0:
        raise QueryRefused(
            "this query's grants neither add noise to the result nor hold it for the "
            "bureau's review; no exact value leaves without a recorded review",
            rule="release.exact_unreviewed",
        )


def _check_rows_quota(decision: Decision, cost: Cost) -> None:
    """A grant's rows-per-day quota against the rows this query reads, as expanded.

    The authority checked one scan of each dataset; CTE reuse and UNION ALL read more.
    """
    for grant in decision.grants:
        if grant.rows_per_day is None:
            continue
        used = decision.usage.get(grant.id)
        so_far = used.rows_scanned if used is not None else 0
        rows = cost.rows.get(grant.dataset, 0)
        if so_far + rows > grant.rows_per_day:
            raise QuotaExceeded(
                f"the query reads about {rows:,} rows of {grant.dataset} "
                f"({cost.reads.get(grant.dataset, 0):,} reads); the grant's rows-per-day "
                f"quota has {max(0, grant.rows_per_day - so_far):,} left today",
                rule="quota.rows_per_day",
            )


def _threshold_accuracy(part: Prepared) -> dict[str, Any] | None:
    """A threshold's accuracy, as ``output_accuracy`` states its one output's."""
    accuracy = output_accuracy(part)
    return next(iter(accuracy.values()), None) if accuracy else None


def _contribution(prepared: Prepared) -> dict[str, int | None]:
    """The ``C``, ``G`` and, where it binds, ``T`` a query runs under (explain, result)."""
    return {
        "max_rows_per_entity": prepared.params.max_rows_per_entity,
        "max_groups_per_entity": prepared.params.max_groups_per_entity,
        # T where it binds (else null): rows and sums pay for T rows, not C·G.
        "max_total_rows_per_entity": prepared.params.total_bound,
    }


def _thresholds_meta(prepared: Prepared, released: Released) -> dict[str, Any]:
    """With ε, the released value of each threshold the WHERE compared with (a DP
    release itself, so the analyst knows what the rows were compared with); without
    ε, nothing: the held result was reviewed, not the threshold behind it."""
    if not released.thresholds or not prepared.params.epsilon:
        return {}
    return {"thresholds": [_plain(v) for v in released.thresholds]}


def _plain(value: object) -> object:
    """A released threshold as JSON holds it (a Decimal sum as its float)."""
    return float(value) if isinstance(value, Decimal) else value


def _computes(prepared: Prepared) -> bool:
    """Whether the release computes outputs in SQL over the released statistics (windows,
    totals, expressions), where a type error could fail it; a plain projection cannot."""
    if isinstance(prepared, PreparedWithWindows | PreparedWithTotals | PreparedWithThresholds):
        return True
    if isinstance(prepared, PreparedWithSets):
        return any(_computes(part) for part in prepared.sets)
    return prepared.plan.release_columns is None
