# Over 400 lines: authentication and decisions share one set of caches and their invalidation.
"""The decision API: ``authenticate(token) -> Actor`` and ``decide(actor, action, target)``.

One :class:`Authority` per process (API server, CLI).  Before every decision it
reads one row, the policy version (plus the sum of dataset versions, which
moves when a bureau re-registers a dataset).  If either moved, another process
changed an account, token, grant, freeze or Casbin line, and this process drops
its caches and reloads the Casbin policy: a freeze made on one server applies
to the next decision on all of them, with no restart.

Between changes a decision costs that one read plus a dictionary lookup: the
static part of each outcome (role, licence, freeze, grant status, validity,
columns) is cached with the time window it holds for, and only the dynamic
part (today's quotas, remaining budget) is read fresh, and only for grants
that have quotas or a budget.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sandbox.core.classification import parse_classification
from sandbox.core.db import datasets as datasets_table
from sandbox.core.errors import AuthenticationError, InvalidInput

from .accounts import get_account
from .actors import Account, AccountStatus, Actor
from .decision import Decision, Target, TargetKind
from .enforcer import RoleEnforcer, ensure_policy
from .grants import get_grant, grants_for
from .metering import Charge, UsagePart, day_of, record_usage
from .probe import Probe, Prober, State
from .recorder import FailureSink, NullRecorder, Recorder, append_entry, decision_entry
from .rules import DatasetFacts, Facts, Outcome, Request, evaluate, finish
from .tokens import TokenRecord, find_token, hash_token

__all__ = ["Authority"]

Key = tuple[Any, ...]

NO_TOKEN = "no bearer token was sent: add the header `Authorization: Bearer <token>`"
"""Why a request without a token (no Authorization header, or not ``Bearer``) is refused."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Authority:
    """Authenticates tokens and decides requests; records each decision through ``recorder``."""

    def __init__(
        self,
        engine: Engine,
        *,
        recorder: Recorder | None = None,
        clock: Callable[[], datetime] = _utcnow,
        cache_size: int = 100_000,
    ) -> None:
        self.engine = engine
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        self.clock = clock
        self._cache_size = cache_size
        ensure_policy(engine)
        self._enforcer = RoleEnforcer(engine)
        self._lock = threading.RLock()
        self._prober = Prober(engine)
        self._state: State | None = None
        self._outcomes: dict[Key, _Entry] = {}
        self._datasets: dict[str, tuple[State, DatasetFacts | None]] = {}
        self._tokens: dict[str, tuple[TokenRecord, Account | None]] = {}
        self.failures: FailureSink | None = None
        """Where anonymous refusals go instead of one entry each (set by the API server)."""

    # -- cross-process invalidation ---------------------------------------------------------

    def _adopt(self, state: State) -> State:
        """Move to a newer shared state: drop every cache (and reload Casbin if its rules moved)."""
        if self._state is None or state > self._state:
            with self._lock:
                if self._state is None or state > self._state:
                    if self._state is None or state[2] != self._state[2]:
                        self._enforcer.reload()
                    self._outcomes = {}
                    self._datasets = {}
                    self._tokens = {}
                    self._state = state
        return state

    def sync(self) -> State:
        """Read the shared policy state; if another process changed policy, drop caches."""
        return self._adopt(self._prober.read().state)

    @property
    def enforcer(self) -> RoleEnforcer:
        """This process's Casbin enforcer (role permissions only; grants are rows)."""
        return self._enforcer

    @property
    def state(self) -> State | None:
        """The policy state this process last adopted (no read: :meth:`sync` reads it).

        Caches of work derived from policy (``sandbox.query.plan_cache``) key by it.
        """
        return self._state

    @property
    def policy_version(self) -> int:
        return self.sync()[0]

    def close(self) -> None:
        self._prober.close()

    # -- authentication ---------------------------------------------------------------------

    def authenticate(
        self,
        token: str,
        *,
        request_id: str | None = None,
        client: str | None = None,
        now: datetime | None = None,
    ) -> Actor:
        """The actor a bearer token stands for, or :class:`AuthenticationError` (audited)."""
        now = now or self.clock()
        state = self.sync()
        digest = hash_token(token)
        found = None if digest is None else self._tokens.get(digest)
        if found is None and digest is not None:
            with self.engine.connect() as conn:
                record = find_token(conn, digest)
                account = None if record is None else get_account(conn, record.account)
            if record is not None:
                found = (record, account)
                if self._state == state:
                    self._tokens[digest] = found
        if found is None:
            error = (
                AuthenticationError(f"authentication failed: {NO_TOKEN}", rule="auth.token_missing")
                if not token
                else AuthenticationError(
                    "authentication failed: unknown token", rule="auth.token_unknown"
                )
            )
            self.refuse_anonymous(
                "auth.authenticate", "token", error, request_id=request_id, client=client
            )
            raise error
        assert found is not None
        record, account = found
        if record.revoked_at is not None:
            self._refuse(record, "auth.token_revoked", "token revoked", request_id, client)
        if now >= record.expires_at:
            self._refuse(record, "auth.token_expired", "token expired", request_id, client)
        if account is None or account.status is not AccountStatus.ACTIVE:
            self._refuse(record, "account.disabled", "account disabled", request_id, client)
        assert account is not None
        return Actor.of(
            account,
            token_id=record.id,
            token_issued_by=record.created_by,
            request_id=request_id,
            client=client,
        )

    def refuse_anonymous(
        self,
        action: str,
        target: str,
        error: AuthenticationError,
        *,
        request_id: str | None = None,
        client: str | None = None,
    ) -> None:
        """Record a refusal no account can be named for (an unknown token or enrolment code).

        With a :attr:`failures` tally (the API server's) such refusals are counted per
        client address and window, not recorded one by one, so a flood of made-up
        tokens cannot grow the trail without bound.
        """
        fields: dict[str, Any] = {
            "actor": "anonymous",
            "role": "-",
            "action": action,
            "target": target,
            "decision": "deny",
            "rule": error.rule or error.code,
            "details": {"reason": error.message},
            "request_id": request_id,
            "client": client,
        }
        if self.failures is not None:
            self.failures.add(fields)
        else:
            self.record(**fields)

    def _refuse(
        self,
        record: TokenRecord,
        rule: str,
        reason: str,
        request_id: str | None,
        client: str | None,
    ) -> None:
        self.record(
            actor=record.account,
            role="-",
            action="auth.authenticate",
            target=f"token:{record.id}",
            decision="deny",
            rule=rule,
            details={
                "reason": reason,
                "token_id": record.id,
                "token_issued_by": record.created_by,
            },
            request_id=request_id,
            client=client,
        )
        raise AuthenticationError(f"authentication failed: {reason}", rule=rule)

    # -- decisions --------------------------------------------------------------------------

    def decide(
        self,
        actor: Actor,
        action: str,
        target: str | Target | None = None,
        *,
        datasets: Iterable[str] = (),
        columns: Mapping[str, Iterable[str]] | None = None,
        group_by: Mapping[str, Iterable[str]] | None = None,
        purpose: str | None = None,
        epsilon: float | None = None,
        request_id: str | None = None,
        client: str | None = None,
        audit: bool = True,
        now: datetime | None = None,
        paid: bool = False,
    ) -> Decision:
        """Allow or deny ``action`` on ``target``; deny by default, one named rule per outcome.

        For ``dataset.query`` pass the ``datasets`` the query touches and, per dataset,
        the ``columns`` it reads and the columns it groups by (as the guard reports
        them); ``target`` may then name the job (``query:JOB``) for the audit record.
        ``audit=False`` is for callers that record the decision in their own entry.
        ``paid``: the query was charged when it ran (a held result's release): quotas
        and budget are not checked again.
        """
        now = now or self.clock()
        # The cache key is the request as given (materialised once: iterables may be
        # generators); the same request spelled differently is a second entry, never a
        # wrong one.  A query's job id is left out: every job would miss otherwise.
        touched = tuple(datasets)
        cols = tuple((ds, tuple(names)) for ds, names in columns.items()) if columns else ()
        groups = tuple((ds, tuple(names)) for ds, names in group_by.items()) if group_by else ()
        query = action == "dataset.query" and (target is None or str(target).startswith("query:"))
        key = (
            actor.subject,
            actor.name,
            actor.role,
            action,
            None if query else target,
            touched,
            cols,
            groups,
            purpose,
            epsilon,
            paid,
        )
        decision, shown = self._decide(
            key, now, lambda: self._request(actor, action, target, key, purpose, epsilon, paid)
        )
        if query:  # the caller's job id, or the datasets: never a cached entry's job id
            shown = str(target) if target is not None else _query_target(key)
        if shown != decision.target:
            decision = decision.amend(target=shown)
        if audit:
            self.record_decision(actor, decision, request_id=request_id, client=client)
        return decision

    def require(
        self, actor: Actor, action: str, target: str | Target | None = None, **kw: Any
    ) -> Decision:
        """:meth:`decide`, raising the denial as a :class:`SandboxError`."""
        return self.decide(actor, action, target, **kw).raise_for_denial()

    def _request(
        self,
        actor: Actor,
        action: str,
        target: str | Target | None,
        key: Key,
        purpose: str | None,
        epsilon: float | None,
        paid: bool = False,
    ) -> tuple[Request, str]:
        """The normalised request of a cache ``key`` built by :meth:`decide`."""
        datasets, columns, group_by = key[5], key[6], key[7]
        cols = {ds: frozenset(c.lower() for c in names) for ds, names in columns}
        groups = {ds: frozenset(c.lower() for c in names) for ds, names in group_by}
        touched = tuple(dict.fromkeys([*datasets, *cols, *groups]))
        if action == "dataset.query" and (target is None or str(target).startswith("query:")):
            shown = str(target) if target is not None else _query_target(key)
            parsed = Target(TargetKind.QUERY, shown.partition(":")[2])
        else:
            try:
                parsed = Target.parse(target)
            except ValueError as exc:
                raise InvalidInput(str(exc), rule="target.invalid") from None
            shown = str(parsed)
        request = Request(actor, action, parsed, touched, cols, groups, purpose, epsilon, paid)
        return request, shown

    def _facts(self, request: Request, state: State) -> Facts:
        """The rows a decision needs; ``state`` is the policy state read before them."""
        target = request.target
        wanted = set(request.datasets)
        if target.kind is TargetKind.DATASET:
            wanted.add(target.id)
        with self.engine.connect() as conn:
            account = None if request.actor.is_host else get_account(conn, request.actor.subject)
            infos = {ds: self._dataset(conn, ds, state) for ds in sorted(wanted)}
            grants: Mapping[str, Any] = {}
            if request.action == "dataset.query" and account is not None:
                grants = grants_for(conn, account.name, request.datasets)
            target_grant = get_grant(conn, target.id) if target.kind is TargetKind.GRANT else None
        return Facts(
            account=account,
            datasets={ds: info for ds, info in infos.items() if info is not None},
            grants=grants,
            target_grant=target_grant,
        )

    def _dataset(self, conn: Connection, dataset_id: str, state: State) -> DatasetFacts | None:
        """A dataset's facts, cached under the policy state read before its row.

        Like the token and outcome caches: a row read before another process's change
        (a freeze) is never kept once this process has adopted that change's state.
        """
        cached = self._datasets.get(dataset_id)
        if cached is not None and cached[0] == state:
            return cached[1]
        row = conn.execute(
            sa.select(datasets_table).where(datasets_table.c.id == dataset_id)
        ).first()
        info = None
        if row is not None:
            spec = parse_classification(row.classification, source_name=f"catalog:{row.id}")
            info = DatasetFacts(
                id=row.id,
                domain=row.domain,
                frozen=bool(row.frozen),
                row_count=int(row.row_count),
                columns={c.name.lower(): (c.level, c.role) for c in spec.columns},
            )
        with self._lock:
            if self._state == state:
                self._datasets[dataset_id] = (state, info)
        return info

    def _decide(
        self, key: Key, now: datetime, build: Callable[[], tuple[Request, str]]
    ) -> tuple[Decision, str]:
        """One round trip when the outcome is cached: state and counters read together.

        Returns the decision and the target to show (``build`` makes the request on a miss).
        """
        cached = self._outcomes.get(key)
        if cached is not None and cached.outcome.holds_at(now):
            probe = self._probe(cached.usage_ids, cached.budget_ids, now)
            if probe.state == cached.state:
                decision = finish(cached.outcome, cached.request, probe.usage, probe.spent)
                return decision, cached.shown
        request, shown = build()
        for _ in range(3):
            state = self.sync()
            outcome = evaluate(request, self._facts(request, state), self._enforcer.permit, now)
            entry = _Entry(state, outcome, request, shown, *_counted(outcome))
            with self._lock:
                if self._state == state:
                    if len(self._outcomes) >= self._cache_size:
                        self._outcomes = {}
                    self._outcomes[key] = entry
            if not entry.usage_ids and not entry.budget_ids:
                return outcome.decision, shown
            probe = self._probe(entry.usage_ids, entry.budget_ids, now)
            if probe.state == state:
                return finish(outcome, request, probe.usage, probe.spent), shown
        raise AssertionError("policy changed three times during one decision")  # pragma: no cover

    def _probe(
        self, usage_ids: tuple[str, ...], budget_ids: tuple[str, ...], now: datetime
    ) -> Probe:
        """The shared state (adopted if newer) and the counters of these grants."""
        probe = self._prober.read(usage_ids, budget_ids, day_of(now) if usage_ids else "")
        if probe.state != self._state:
            self._adopt(probe.state)
        return probe

    # -- recording --------------------------------------------------------------------------

    def record(self, **fields: Any) -> object:
        """Append one audit entry; any failure to record fails the act (fail closed)."""
        return append_entry(self.recorder, **fields)

    def record_decision(
        self,
        actor: Actor,
        decision: Decision,
        *,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        client: str | None = None,
    ) -> object:
        """Append the audit entry of a decision (plus ``details`` of the act it allowed)."""
        entry = decision_entry(
            actor, decision, details=details, request_id=request_id, client=client
        )
        return append_entry(self.recorder, **entry)

    # -- metering shortcuts -----------------------------------------------------------------

    def record_usage(
        self,
        decision: Decision,
        *,
        cpu_ms: int = 0,
        rows_scanned: Mapping[str, int] | None = None,
        conn: Connection | None = None,
        now: datetime | None = None,
        count: bool = True,
        epsilon: float = 0.0,
        ref: str = "",
    ) -> Charge:
        """Count an executed query against the grants its decision used.

        Rows scanned default to each dataset's row count (a full scan, which is what
        the enclave does).  ``count=False``: CPU time only, of a query counted before.
        ``epsilon`` > 0: also spend it from each budgeted grant, in the same writes
        (:func:`policies.metering.record_usage`).
        """
        if not decision.allowed or not decision.grants:
            raise InvalidInput("usage is recorded for an allowed query", rule="usage.parts")
        rows = {**decision.dataset_rows, **(rows_scanned or {})}
        parts = [UsagePart(g, int(rows.get(g.dataset, 0))) for g in decision.grants]
        now = now or self.clock()
        if conn is not None:
            return record_usage(
                conn, parts, cpu_ms=cpu_ms, now=now, count=count, epsilon=epsilon, ref=ref
            )
        with self.engine.begin() as own:
            return record_usage(
                own, parts, cpu_ms=cpu_ms, now=now, count=count, epsilon=epsilon, ref=ref
            )


def _query_target(key: Key) -> str:
    """A query decision's target where the caller names no job: the datasets it touches."""
    datasets, columns, group_by = key[5], key[6], key[7]
    touched = dict.fromkeys([*datasets, *(ds for ds, _ in columns), *(ds for ds, _ in group_by)])
    return "query:" + ",".join(touched)


class _Entry(NamedTuple):
    """A cached outcome: the policy state it was decided under, the normalised request,
    the target to show, and the grants whose counters each use reads fresh."""

    state: State
    outcome: Outcome
    request: Request
    shown: str
    usage_ids: tuple[str, ...]
    budget_ids: tuple[str, ...]


def _counted(outcome: Outcome) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Candidate grants whose quotas or budget must be read fresh."""
    if not outcome.decision.allowed:
        return (), ()
    grants = [g for _, gs in outcome.candidates for g in gs]
    usage = tuple(
        g.id for g in grants if g.queries_per_day is not None or g.rows_per_day is not None
    )
    budget = tuple(g.id for g in grants if g.epsilon_total is not None)
    return usage, budget
