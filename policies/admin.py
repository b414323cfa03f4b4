# Over 400 lines: every administrative act is a method of one class, decided and audited by _act.
"""Administrative acts, each authorized by the decision API and audited before it commits.

Every method takes the acting :class:`Actor` first.  The pattern is the same
for all of them: decide (a denial is audited and raised), run the change in
one transaction, append the audit entry inside that transaction (so a change
is never committed without its record), commit.  An authorized act that fails
validation is audited as a denial with the validation's rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandbox.core.classification import DatasetSpec, parse_classification
from sandbox.core.data_controls import grant_co_approvals, load_controls
from sandbox.core.db import datasets
from sandbox.core.errors import AuditUnavailable, InvalidInput, NotFound, SandboxError
from sandbox.core.timeutil import to_rfc3339

from . import accounts as acc
from . import enrolments, freeze, grants, tokens
from .actors import Account, AccountStatus, Actor, Licence, LicenceStatus, Role
from .authority import Authority
from .decision import Decision, Target
from .grant_controls import CoApproval, check_grant_controls, limited_items
from .grant_terms import (
    Grant,
    GrantTerms,
    ReleaseMode,
    validate_terms,
    widenings,
    with_default_budget,
)
from .recorder import append_entry
from .statements import UsageRow, read_usage, statement_csv

__all__ = ["Administration", "migrate_release_modes"]

T = TypeVar("T")
log = logging.getLogger("policies.admin")


class Administration:
    """Accounts, tokens, grants, freezes, usage and statements, for authorized actors."""

    def __init__(
        self,
        authority: Authority,
        *,
        k_floor: int = 10,
        default_budget: tuple[float, float] = (10.0, 1.0),
    ) -> None:
        self.authority = authority
        self.k_floor = k_floor
        #: (ε total, ε per query) a ``dp`` grant issued without a budget gets (settings
        #: ``dp_default_epsilon_total``, ``dp_default_epsilon_per_query``).
        self.default_budget = default_budget

    # -- the one pattern --------------------------------------------------------------------

    def _authorize(self, actor: Actor, action: str, target: Target) -> Decision:
        decision = self.authority.decide(actor, action, target, audit=False)
        if not decision.allowed:
            self.authority.record_decision(actor, decision)
            raise decision.error()
        return decision

    def _act(
        self,
        actor: Actor,
        action: str,
        target: Target,
        change: Callable[[Connection, datetime], T],
        details: Callable[[T], dict[str, Any]],
    ) -> T:
        decision = self._authorize(actor, action, target)
        now = self.authority.clock()
        try:
            with self.authority.engine.begin() as conn:
                result = change(conn, now)
                self.authority.record_decision(actor, decision, details=details(result))
        except SandboxError as exc:
            if exc.rule != "audit.append":
                failed = replace(
                    decision, allowed=False, rule=exc.rule or exc.code, reason=exc.message
                )
                self.authority.record_decision(actor, failed)
            raise
        return result

    def _authorize_all(
        self, actor: Actor, action: str, targets: Sequence[Target]
    ) -> list[Decision]:
        return [self._authorize(actor, action, target) for target in targets]

    def _record_reads(self, actor: Actor, decisions: Sequence[Decision], count: int) -> None:
        for decision in decisions:
            self.authority.record_decision(actor, decision, details={"rows": count})

    # -- accounts and tokens ----------------------------------------------------------------

    def create_account(
        self,
        actor: Actor,
        name: str,
        *,
        role: Role,
        organisation: str,
        domains: Sequence[str] = (),
        licence: Licence | None = None,
    ) -> Account:
        account = Account(
            name=name,
            role=Role(role),
            organisation=organisation,
            domains=tuple(domains),
            licence=licence,
        )
        return self._act(
            actor,
            "account.create",
            Target.account(name),
            lambda conn, now: acc.insert_account(conn, account, by=actor.name, now=now),
            lambda created: {"account": created.to_dict()},
        )

    def list_accounts(self, actor: Actor) -> list[Account]:
        allowed = self._authorize_all(actor, "account.list", [Target.platform()])
        with self.authority.engine.connect() as conn:
            found = acc.list_accounts(conn)
        self._record_reads(actor, allowed, len(found))
        return found

    def disable_account(self, actor: Actor, name: str, *, reason: str = "") -> Account:
        return self._act(
            actor,
            "account.disable",
            Target.account(name),
            lambda conn, now: acc.set_account_status(conn, name, AccountStatus.DISABLED, now=now),
            lambda _: {"reason": reason},
        )

    def set_licence(
        self,
        actor: Actor,
        name: str,
        *,
        number: str | None = None,
        valid_until: datetime | None = None,
        status: LicenceStatus | None = None,
    ) -> Account:
        return self._act(
            actor,
            "account.licence",
            Target.account(name),
            lambda conn, now: acc.set_licence(
                conn, name, now=now, number=number, valid_until=valid_until, status=status
            ),
            lambda updated: {"licence": updated.to_dict().get("licence")},
        )

    def issue_token(
        self,
        actor: Actor,
        account: str | None = None,
        *,
        ttl: timedelta = timedelta(days=90),
        label: str = "",
        replace_current: bool = False,
    ) -> tokens.IssuedToken:
        """A new token for the actor's own account (``account``, if given, must be it).

        Nobody gets a token of another account (rule ``token.not_own``, the admin and
        the host console included): that account enrols with a code
        (:meth:`issue_enrolment`).  ``replace_current`` revokes the token the actor acts
        with, in the same transaction.
        """
        name = actor.name if account is None else account

        def change(conn: Connection, now: datetime) -> tokens.IssuedToken:
            via = None if actor.token_id is None else f"token:{actor.token_id}"
            issued = tokens.insert_token(
                conn, name, ttl=ttl, by=actor.name, now=now, label=label, via=via
            )
            if replace_current and actor.token_id is not None:
                tokens.revoke_token(conn, actor.token_id, by=actor.name, now=now)
            return issued

        return self._act(
            actor,
            "token.issue",
            Target.account(name),
            change,
            lambda t: {
                "new_token_id": t.id,
                "expires_at": t.expires_at.isoformat(),
                "label": label,
                "revoked": actor.token_id if replace_current else None,
            },
        )

    def issue_enrolment(
        self,
        actor: Actor,
        account: str,
        *,
        ttl: timedelta = timedelta(hours=24),
        token_ttl: timedelta = timedelta(days=90),
        label: str = "",
    ) -> enrolments.IssuedEnrolment:
        """A one-time code the holder of ``account`` redeems for its token (admin only).

        An admin account's code gives a token only once a second administrator approves
        the holder's redemption (:meth:`approve_enrolment`); the host console's at once.
        """

        def change(conn: Connection, now: datetime) -> enrolments.IssuedEnrolment:
            holder = acc.require_account(conn, account)
            if holder.status is not AccountStatus.ACTIVE:
                raise InvalidInput(f"account '{account}' is disabled", rule="account.disabled")
            return enrolments.insert_enrolment(
                conn,
                account,
                ttl=ttl,
                token_ttl=token_ttl,
                by=actor.name,
                now=now,
                label=label,
                needs_approval=not actor.is_host,
            )

        return self._act(
            actor,
            "enrolment.issue",
            Target.account(account),
            change,
            lambda e: {
                "enrolment": e.id,
                "expires_at": e.expires_at.isoformat(),
                "token_days": e.token_ttl.total_seconds() / 86_400,
                "label": label,
                "needs_approval": e.needs_approval,
            },
        )

    def redeem_enrolment(
        self, code: str, *, request_id: str | None = None, client: str | None = None
    ) -> tokens.IssuedToken:
        """Spend an enrolment code for a token of its account (no token needed: the code is
        the credential).  Audited as ``enrolment.redeem`` either way; a refusal is an
        :class:`AuthenticationError` with its rule (an unknown code goes through
        :meth:`Authority.refuse_anonymous`, like an unknown token).  A code that needs a
        second approval is refused here (``enrolment.holder_token``, not spent): see
        :meth:`redeem_with_token`."""
        redeemed = enrolments.redeem(self.authority, code, request_id=request_id, client=client)
        assert redeemed.token is not None  # a code needing approval needs a holder's token
        return redeemed.token

    def redeem_with_token(
        self,
        code: str,
        token_sha256: str | None,
        *,
        request_id: str | None = None,
        client: str | None = None,
    ) -> enrolments.Redeemed:
        """Spend an enrolment code for a token its holder made (only its SHA-256 is sent):
        the token at once for a host console's code, else a request pending a second
        administrator's approval (its fingerprint is returned for the holder to read out).
        Without ``token_sha256``, as :meth:`redeem_enrolment` (the server makes the token).
        """
        return enrolments.redeem(
            self.authority,
            code,
            token_sha256=token_sha256,
            request_id=request_id,
            client=client,
        )

    def approve_enrolment(
        self, actor: Actor, enrolment_id: str, fingerprint: str
    ) -> tokens.IssuedToken:
        """Approve a redeemed code as the second administrator: the holder's token (never
        seen here: the returned ``token`` is empty) comes into existence.

        ``fingerprint`` is what the holder reads to ``actor``; the code's issuer may not
        approve (``enrolment.same_admin``), see :func:`enrolments.approve_enrolment`.
        """
        with self.authority.engine.connect() as conn:
            account = enrolments.enrolment_account(conn, enrolment_id)
        issued_by: list[str] = []

        def change(conn: Connection, now: datetime) -> tokens.IssuedToken:
            token, issuer = enrolments.approve_enrolment(
                conn, enrolment_id, fingerprint, by=actor.name, now=now
            )
            issued_by.append(issuer)
            return token

        return self._act(
            actor,
            "enrolment.approve",
            Target.account(account),
            change,
            lambda t: {
                "enrolment": enrolment_id,
                "new_token_id": t.id,
                "expires_at": t.expires_at.isoformat(),
                "enrolment_issued_by": issued_by[0],
            },
        )

    def revoke_token(self, actor: Actor, token_id: str) -> tokens.TokenRecord:
        return self._act(
            actor,
            "token.revoke",
            Target.token(token_id),
            lambda conn, now: tokens.revoke_token(conn, token_id, by=actor.name, now=now),
            lambda t: {"account": t.account},
        )

    # -- grants -----------------------------------------------------------------------------

    def issue_grant(
        self,
        actor: Actor,
        dataset: str,
        operator: str,
        terms: GrantTerms,
        *,
        reason: str = "",
        co_approval: CoApproval | None = None,
    ) -> Grant:
        """Issue a grant; ``co_approval``: the admin's approval of its strictly limited
        items (a grant application's), recorded with the grant (``negative.limited``)."""

        def change(conn: Connection, now: datetime) -> Grant:
            row = conn.execute(sa.select(datasets).where(datasets.c.id == dataset)).first()
            if row is None:
                raise NotFound(f"dataset {dataset} is not registered", rule="dataset.unknown")
            valid = validate_terms(
                self._with_default_budget(terms),
                _spec(row),
                k_floor=self.k_floor,
            )
            approved = co_approval.items if co_approval is not None else frozenset()
            _check_controls(conn, _spec(row), valid, approved)
            self._check_operator(conn, operator, now)
            grant = grants.insert_grant(
                conn,
                dataset=dataset,
                operator=operator,
                terms=valid,
                issued_by=actor.name,
                now=now,
                reason=reason,
            )
            if co_approval is not None:
                items = limited_items(valid, load_controls(conn, [dataset])[dataset])
                _record_co_approval(conn, grant, co_approval, items, actor.name, now)
            return grant

        return self._act(
            actor,
            "grant.issue",
            Target.dataset(dataset),
            change,
            lambda g: {"grant": g.to_dict(), "reason": reason},
        )

    @staticmethod
    def _check_operator(conn: Connection, name: str, now: datetime) -> None:
        holder = acc.get_account(conn, name)
        if holder is None or holder.role is not Role.OPERATOR:
            raise InvalidInput(f"'{name}' is not an operator account", rule="grant.operator")
        licence = holder.licence
        if holder.status is not AccountStatus.ACTIVE or licence is None:
            raise InvalidInput(f"operator '{name}' is not active", rule="grant.operator")
        if licence.status is not LicenceStatus.ACTIVE or licence.valid_until <= now:
            raise InvalidInput(f"operator '{name}' holds no valid licence", rule="grant.operator")

    def narrow_grant(
        self, actor: Actor, grant_id: str, *, reason: str = "", **changes: Any
    ) -> Grant:
        """Apply ``changes`` to the grant's terms; refused if any of them widens it."""

        def change(conn: Connection, now: datetime) -> Grant:
            grant = grants.require_grant(conn, grant_id)
            try:
                proposed = replace(grant.terms, **changes)
            except TypeError:
                raise InvalidInput("unknown grant term", rule="grant.terms") from None
            # Widening first: a k below the floor is "k lowered", not a floor to meet.
            wider = widenings(grant.terms, proposed)
            if wider:
                raise InvalidInput(
                    "a grant can only be narrowed (issue a new grant to widen one); this would "
                    "widen it: " + "; ".join(wider),
                    rule="grant.narrow_widens",
                )
            row = conn.execute(sa.select(datasets).where(datasets.c.id == grant.dataset)).one()
            valid = validate_terms(
                proposed,
                _spec(row),
                k_floor=self.k_floor,
            )
            _check_controls(conn, _spec(row), valid, frozenset(), limited=False, important=False)
            if valid == grant.terms:
                raise InvalidInput(
                    "the narrowing changes nothing: the grant already has these terms",
                    rule="grant.unchanged",
                )
            return grants.replace_terms(conn, grant, valid, by=actor.name, now=now, reason=reason)

        return self._act(
            actor,
            "grant.narrow",
            Target.grant(grant_id),
            change,
            lambda g: {"grant": g.to_dict(), "reason": reason},
        )

    def _with_default_budget(self, terms: GrantTerms) -> GrantTerms:
        total, per_query = self.default_budget
        return with_default_budget(terms, epsilon_total=total, epsilon_per_query=per_query)

    def set_release_mode(
        self,
        actor: Actor,
        grant_id: str,
        mode: ReleaseMode,
        *,
        epsilon_total: float | None = None,
        epsilon_per_query: float | None = None,
        reason: str = "",
    ) -> Grant:
        """The owning bureau's choice of release mode: a new grant version, audited.

        ``dp``: noised under ``epsilon_total`` (or the grant's budget, or the default);
        ``reviewed``: exact, each release held for review (the budget, spent or not, is
        dropped from the terms; its ledger stays).  The grant's other terms stay.
        """

        def change(conn: Connection, now: datetime) -> Grant:
            grant = grants.require_grant(conn, grant_id)
            if not reason.strip():
                raise InvalidInput(
                    "a release-mode choice needs a reason (it is the bureau's recorded choice)",
                    rule="grant.release_mode",
                )
            if mode is ReleaseMode.REVIEWED and (epsilon_total or epsilon_per_query):
                raise InvalidInput(
                    "a reviewed grant releases exact values after review: it takes no budget",
                    rule="grant.release_mode",
                )
            if mode is grant.release_mode and epsilon_total is None and epsilon_per_query is None:
                raise InvalidInput(
                    f"grant {grant.id} is already {mode.value}", rule="grant.unchanged"
                )
            if mode is ReleaseMode.DP:
                total = epsilon_total if epsilon_total is not None else grant.epsilon_total
                per_query = epsilon_per_query
                if per_query is None and epsilon_total is None:
                    per_query = grant.epsilon_per_query
                if per_query is None and total is not None:
                    per_query = min(self.default_budget[1], total)
                proposed = self._with_default_budget(
                    replace(
                        grant.terms,
                        release_mode=mode,
                        epsilon_total=total,
                        epsilon_per_query=per_query,
                    )
                )
                if grant.release_mode is ReleaseMode.DP:
                    wider = widenings(grant.terms, replace(proposed, release_mode=mode))
                    if wider:
                        raise InvalidInput(
                            "a dp grant's budget can only be lowered: " + "; ".join(wider),
                            rule="grant.narrow_widens",
                        )
            else:
                proposed = replace(
                    grant.terms, release_mode=mode, epsilon_total=None, epsilon_per_query=None
                )
            row = conn.execute(sa.select(datasets).where(datasets.c.id == grant.dataset)).one()
            valid = validate_terms(proposed, _spec(row), k_floor=self.k_floor)
            _check_controls(conn, _spec(row), valid, frozenset(), limited=False)
            return grants.set_release_mode(
                conn, grant, valid, by=actor.name, now=now, reason=reason
            )

        return self._act(
            actor,
            "grant.release_mode",
            Target.grant(grant_id),
            change,
            lambda g: {"grant": g.to_dict(), "reason": reason},
        )

    def migrate_release_modes(self) -> list[Grant]:
        """Give grants stored before release modes existed their mode (see
        :func:`policies.grants.migrate_release_modes`), each with an audit entry by
        ``system`` naming what it was and what was chosen, pending the owning bureau's
        choice.  Entries are appended before the commit: nothing is migrated unrecorded."""
        now = self.authority.clock()
        with self.authority.engine.begin() as conn:
            migrated = grants.migrate_release_modes(conn, now=now)
            for grant, was in migrated:
                append_entry(
                    self.authority.recorder,
                    actor=grants.MIGRATION_ACTOR,
                    role=grants.MIGRATION_ACTOR,
                    action="grant.release_mode",
                    target=f"grant:{grant.id}",
                    decision="allow",
                    rule="grant.release_mode.migrated",
                    dataset=grant.dataset,
                    details={
                        "grant": grant.to_dict(),
                        "was": was,
                        "release_mode": grant.release_mode.value,
                        "chosen_by": grants.MIGRATION_ACTOR,
                        "pending": "the owning bureau's choice (sandbox grant release-mode)",
                    },
                )
        return [g for g, _ in migrated]

    def _status(self, actor: Actor, grant_id: str, change: str, reason: str) -> Grant:
        def apply(conn: Connection, now: datetime) -> Grant:
            grant = grants.require_grant(conn, grant_id)
            return grants.change_status(conn, grant, change, by=actor.name, now=now, reason=reason)

        return self._act(
            actor,
            f"grant.{change}",
            Target.grant(grant_id),
            apply,
            lambda g: {"version": g.version, "status": g.status.value, "reason": reason},
        )

    def suspend_grant(self, actor: Actor, grant_id: str, *, reason: str = "") -> Grant:
        return self._status(actor, grant_id, "suspend", reason)

    def resume_grant(self, actor: Actor, grant_id: str, *, reason: str = "") -> Grant:
        return self._status(actor, grant_id, "resume", reason)

    def revoke_grant(self, actor: Actor, grant_id: str, *, reason: str = "") -> Grant:
        return self._status(actor, grant_id, "revoke", reason)

    def _scope(self, actor: Actor, *, operator: str | None, domain: str | None) -> list[Target]:
        """The targets a listing is authorized on: own account, own domains, or as asked."""
        if actor.role is Role.OPERATOR:
            return [Target.account(operator or actor.name)]
        if domain is not None:
            return [Target.domain(domain)]
        if operator is not None:
            return [Target.account(operator)]
        if actor.role is Role.BUREAU:
            return [Target.domain(d) for d in actor.domains]
        return [Target.platform()]

    def list_grants(
        self, actor: Actor, *, operator: str | None = None, domain: str | None = None
    ) -> list[Grant]:
        scope = self._scope(actor, operator=operator, domain=domain)
        allowed = self._authorize_all(actor, "grant.read", scope)
        domains = [t.id for t in scope if t.kind == "domain"] or None
        owner = next((t.id for t in scope if t.kind == "account"), None)
        with self.authority.engine.connect() as conn:
            found = grants.list_grants(conn, operator=owner, domains=domains)
        self._record_reads(actor, allowed, len(found))
        return found

    def show_grant(self, actor: Actor, grant_id: str) -> tuple[Grant, list[dict[str, Any]]]:
        """A grant and its version history."""
        allowed = self._authorize_all(actor, "grant.read", [Target.grant(grant_id)])
        with self.authority.engine.connect() as conn:
            found = grants.require_grant(conn, grant_id), grants.grant_history(conn, grant_id)
        self._record_reads(actor, allowed, 1)
        return found

    # -- emergency freeze -------------------------------------------------------------------

    def set_dataset_frozen(
        self, actor: Actor, dataset: str, frozen: bool, *, reason: str = ""
    ) -> bool:
        action = "dataset.freeze" if frozen else "dataset.unfreeze"
        return self._act(
            actor,
            action,
            Target.dataset(dataset),
            lambda conn, now: freeze.set_dataset_frozen(
                conn, dataset, frozen, by=actor.name, now=now, reason=reason
            ),
            lambda changed: {"changed": changed, "reason": reason},
        )

    def set_operator_frozen(
        self, actor: Actor, operator: str, frozen: bool, *, reason: str = ""
    ) -> bool:
        action = "operator.freeze" if frozen else "operator.unfreeze"
        return self._act(
            actor,
            action,
            Target.account(operator),
            lambda conn, now: freeze.set_operator_frozen(
                conn, operator, frozen, by=actor.name, now=now, reason=reason
            ),
            lambda changed: {"changed": changed, "reason": reason},
        )

    # -- metering ---------------------------------------------------------------------------

    def usage(
        self,
        actor: Actor,
        *,
        operator: str | None = None,
        domain: str | None = None,
        since: str | None = None,
        until: str | None = None,
        by_month: bool = False,
    ) -> list[UsageRow]:
        """The ledger an actor may read: its own use, its domains' datasets, or (admin) any."""
        scope = self._scope(actor, operator=operator, domain=domain)
        allowed = self._authorize_all(actor, "usage.read", scope)
        domains = [t.id for t in scope if t.kind == "domain"] or None
        owner = next((t.id for t in scope if t.kind == "account"), None)
        with self.authority.engine.connect() as conn:
            rows = read_usage(
                conn, operator=owner, domains=domains, since=since, until=until, by_month=by_month
            )
        self._record_reads(actor, allowed, len(rows))
        return rows

    def statement(
        self, actor: Actor, month: str, *, operator: str | None = None, bureau: str | None = None
    ) -> str:
        """A month's CSV statement for one operator, or for one bureau account's domains."""
        if operator is None and bureau is None:
            if actor.role is Role.BUREAU:
                bureau = actor.name
            else:
                operator = actor.name
        if bureau is not None:
            with self.authority.engine.connect() as conn:
                holder = acc.get_account(conn, bureau)
            if holder is None or holder.role is not Role.BUREAU:
                raise InvalidInput(f"'{bureau}' is not a bureau account", rule="statement.scope")
            scope = [Target.domain(d) for d in holder.domains]
        else:
            assert operator is not None
            scope = [Target.account(operator)]
        allowed = self._authorize_all(actor, "statement.read", scope)
        domains = [t.id for t in scope if t.kind == "domain"] or None
        with self.authority.engine.connect() as conn:
            text = statement_csv(
                conn, month, operator=None if domains else operator, domains=domains
            )
        self._record_reads(actor, allowed, text.count("\n") - 2)
        return text


def _check_controls(
    conn: Connection,
    spec: DatasetSpec,
    terms: GrantTerms,
    co_approved: frozenset[str],
    *,
    limited: bool = True,
    important: bool = True,
) -> None:
    """The negative list and important data at grant time (``grant_controls``)."""
    controls = load_controls(conn, [spec.id])[spec.id]
    check_grant_controls(
        terms, spec, controls, co_approved=co_approved, limited=limited, important=important
    )


def _record_co_approval(
    conn: Connection,
    grant: Grant,
    approval: CoApproval,
    items: frozenset[str],
    bureau: str,
    now: datetime,
) -> None:
    for item in sorted(items):
        conn.execute(
            sa.insert(grant_co_approvals).values(
                grant_id=grant.id,
                dataset=grant.dataset,
                column_name=item,
                admin=approval.admin,
                bureau=bureau,
                application=approval.application,
                approved_at=to_rfc3339(now),
            )
        )


def _spec(row: Any) -> DatasetSpec:
    """The classification of a catalog row."""
    return parse_classification(row.classification, source_name=f"catalog:{row.id}")


def migrate_release_modes(authority: Authority) -> list[Grant]:
    """:meth:`Administration.migrate_release_modes` on opening a home (a no-op once done).

    If the audit trail cannot record it, nothing is migrated and a warning is logged:
    until then such grants are read as the migration would set them (never exact
    unreviewed), and the next start tries again.
    """
    try:
        return Administration(authority).migrate_release_modes()
    except AuditUnavailable:
        log.warning("grants stored before release modes: migration deferred (audit down)")
        return []
