# Over 400 lines: seven steps of one procedure, each reading its facts and writing its state.
"""The registration procedure over the control plane: apply, accept, review, publicity, issue.

The state machine is :mod:`sandbox.governance.registration_states` (pure); this module
reads the facts it needs, applies the step, and writes the new state, the step's row in
``registration_events`` and its audit entry in one transaction.  The file a bureau
applies with is kept in a private directory of the staging area (``registrations/``),
with its SHA-256: the certificate is issued for exactly the bytes that were reviewed.

The host console's ``sandbox dataset register`` stays the bootstrap and admin path
(the demo, first datasets); over HTTP a bureau registers through this procedure.

A change of a registered dataset is a revision in the same procedure: with a new file
(a new version) or without one (a reclassification of the rows as loaded).  One that
only tightens the classification in force (:func:`.revision_terms.is_tightening`) takes
the short form (accept, review, issue); one that loosens it the ``revision`` form, with
the shorter publicity period ``revision_publicity_days``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectors.files import FileSource
from policies import Actor, Role, Target
from sandbox.core.classification import Contribution, parse_classification
from sandbox.core.data_controls import load_controls
from sandbox.core.db import datasets
from sandbox.core.errors import Conflict, EnclaveError, InvalidInput, NotFound, Withheld
from sandbox.core.governance_tables import (
    registration_applications as apps,
)
from sandbox.core.governance_tables import (
    registration_events as events,
)
from sandbox.core.governance_tables import (
    registration_objections as objections,
)
from sandbox.core.sealed_files import opened_plain
from sandbox.core.timeutil import to_rfc3339
from sandbox.enclave.registry import Registration, check_engine
from sandbox.platform import Platform
from sandbox.reclassify import reclassify

from .acts import Clock, audited, audited_read, new_id, record_allow, system_clock
from .registration_files import SourceFile, discard, keep, kept_directory
from .registration_states import Facts, RegState, RegStep, advance
from .registration_views import listed_to, procedure_record, view
from .revision_terms import is_tightening

__all__ = ["Registrations", "SourceFile"]

FREQUENCY_MAX = 40
CLAIM_TTL = timedelta(hours=1)
"""An issue's claim older than this was left by a killed process."""
OPEN_STATES = (RegState.APPLIED, RegState.ACCEPTED, RegState.PUBLICITY, RegState.REVIEWED)


def _ts(moment: datetime) -> str:
    return to_rfc3339(moment)


class Registrations:
    """The procedure for one deployment; ``clock`` is injected (tests move time)."""

    def __init__(self, platform: Platform, *, clock: Clock = system_clock) -> None:
        self.platform = platform
        self.clock = clock

    @property
    def publicity(self) -> timedelta:
        return timedelta(days=self.platform.settings.registration_publicity_days)

    def _publicity_of(self, form: str) -> timedelta:
        """A loosening revision's publicity is the shorter ``revision_publicity_days``."""
        if form == "revision":
            return timedelta(days=self.platform.settings.revision_publicity_days)
        return self.publicity

    def default_contribution(self) -> Contribution:
        settings = self.platform.settings
        return Contribution(settings.dp_max_rows_per_entity, settings.dp_max_groups_per_entity)

    def _files(self, app_id: str) -> Path:
        return kept_directory(self.platform.settings.staging_dir, app_id)

    # -- apply ---------------------------------------------------------------------------

    def apply(
        self,
        actor: Actor,
        *,
        classification: str,
        source: SourceFile | Callable[[str], SourceFile] | None,
        update_frequency: str,
        listing: dict[str, Any] | None = None,
        engine: str = "duckdb",
    ) -> dict[str, Any]:
        """A bureau applies to register (or re-register) a dataset of its domain.

        ``source``: the file, or a function of the dataset's domain that finds it (an
        upload of the account), called once the bureau may register there; ``None``: a
        reclassification of a registered dataset's rows as loaded (no new file).
        ``listing``: ``None`` keeps the price terms last issued through the procedure.
        ``engine``: where the issued version's rows go (``duckdb``, the enclave, or
        ``spark``, the Parquet warehouse); a revision without a file keeps them where
        they are, and one of a dataset in the warehouse names its file.
        """
        with audited(self.platform, actor, "registration.apply", "platform"):
            spec = parse_classification(classification, source_name="application")
        control = self.platform.engine
        with control.connect() as conn:
            current = conn.execute(
                sa.select(datasets.c.version, datasets.c.engine).where(datasets.c.id == spec.id)
            ).first()
            last = conn.execute(
                sa.select(apps.c.version, apps.c.classification_sha256, apps.c.listing)
                .where(apps.c.dataset == spec.id, apps.c.state == RegState.ISSUED.value)
                .order_by(apps.c.version.desc())
                .limit(1)
            ).first()
        target = Target.dataset(spec.id) if current is not None else Target.domain(spec.domain)
        authority = self.platform.authority
        decision = authority.decide(actor, "dataset.register", target, audit=False)
        with audited(self.platform, actor, "registration.apply", str(target), dataset=spec.id):
            if not decision.allowed:
                raise decision.error()
            if source is None and current is None:
                raise InvalidInput(
                    f"{spec.id} is not registered: an application names its data file",
                    rule="registration.source",
                )
            check_engine(engine)
            if source is None and current is not None:
                _same_engine(spec.id, current.engine, engine)
            found = source(spec.domain) if callable(source) else source
            frequency = update_frequency.strip()
            if not frequency or len(frequency) > FREQUENCY_MAX:
                raise InvalidInput(
                    f"update frequency: a few words such as 'monthly' (at most {FREQUENCY_MAX})",
                    rule="registration.frequency",
                )
            # The short form: the classification the public was shown is the one in force
            # (issued through this procedure, and no version registered since).
            short = (
                current is not None
                and last is not None
                and last.version == current.version
                and last.classification_sha256 == spec.sha256()
            )
            if not short and current is not None:
                # A revision: tightening (fail safe) needs no publicity; loosening the
                # shorter one of a revision.
                # (An equivalent classification keeps the full form: the public was
                # never shown it through the procedure.)
                in_force = self.platform.catalog.get(spec.id).spec
                default = self.default_contribution()
                tighter = is_tightening(in_force, spec, default)
                same = tighter and is_tightening(spec, in_force, default)
                form = "revision" if not tighter else ("full" if same else "short")
            else:
                form = "short" if short else "full"
            app_id = new_id("rg")
            now = self.clock()
            if found is None:
                record = self.platform.catalog.get(spec.id)
                stored = {
                    "reclassify": True,
                    "version": record.version,
                    "name": f"{spec.id} version {record.version}, as loaded",
                    "format": None,
                    "bytes": None,
                    "sha256": record.source_sha256,
                }
            else:
                stored = keep(self._files(app_id), found, self.platform.data_keys)
            try:
                with control.begin() as conn:
                    pending = conn.execute(
                        sa.select(apps.c.id).where(
                            apps.c.dataset == spec.id, apps.c.state.in_(list(OPEN_STATES))
                        )
                    ).first()
                    if pending is not None:
                        raise Conflict(
                            f"{spec.id} already has an open application ({pending.id})",
                            rule="registration.pending",
                        )
                    conn.execute(
                        sa.insert(apps).values(
                            id=app_id,
                            dataset=spec.id,
                            domain=spec.domain,
                            form=form,
                            state=RegState.APPLIED.value,
                            applicant=actor.name,
                            applied_at=_ts(now),
                            title=spec.title,
                            description=spec.description,
                            update_frequency=frequency,
                            listing=dict(
                                listing
                                if listing is not None
                                else (last.listing if last is not None else {})
                            ),
                            classification=spec.to_dict(),
                            classification_sha256=spec.sha256(),
                            source=stored,
                            engine=engine,
                            updated_at=_ts(now),
                        )
                    )
                    self._event(conn, app_id, actor, "apply", None, RegState.APPLIED, now)
                    record_allow(
                        self.platform,
                        actor,
                        "registration.apply",
                        f"registration:{app_id}",
                        "allow.role",
                        dataset=spec.id,
                        details={
                            "application": app_id,
                            "form": form,
                            "source": stored,
                            "engine": engine,
                        },
                    )
            except BaseException:
                discard(self._files(app_id))
                raise
        return self.show(actor, app_id)

    # -- the admin's steps, objections, withdrawal -----------------------------------------

    def step(
        self,
        actor: Actor,
        app_id: str,
        step: RegStep,
        *,
        comment: str = "",
        objection: str | None = None,
    ) -> dict[str, Any]:
        """Accept, refuse, approve, reject, uphold or dismiss (an objection), or withdraw."""
        if step in (RegStep.OBJECT, RegStep.ISSUE):
            raise InvalidInput(f"use {step.value}() for this step", rule="registration.step")
        action = f"registration.{_ACTION[step]}"
        target = f"registration:{app_id}"
        with audited(self.platform, actor, action, target, details={"step": step.value}):
            if step in (RegStep.REFUSE, RegStep.REJECT, RegStep.UPHOLD, RegStep.DISMISS):
                _need_text(comment, "a reason")
            now = self.clock()
            with self.platform.engine.begin() as conn:
                row = self._row(conn, actor, app_id)
                open_ids = self._open_objections(conn, app_id)
                new = advance(
                    RegState(row.state), step, actor.role, self._facts(row, actor, now, open_ids)
                )
                if step is not RegStep.WITHDRAW:
                    self._permitted(actor, row)
                if step in (RegStep.UPHOLD, RegStep.DISMISS):
                    if objection not in open_ids:
                        raise NotFound(
                            "no open objection of this application has that id",
                            rule="registration.objection_unknown",
                        )
                    conn.execute(
                        sa.update(objections)
                        .where(objections.c.id == objection)
                        .values(
                            status="upheld" if step is RegStep.UPHOLD else "dismissed",
                            resolved_by=actor.name,
                            resolved_at=_ts(now),
                            resolution=comment,
                        )
                    )
                values: dict[str, Any] = {"state": new.value, "updated_at": _ts(now)}
                if step is RegStep.ACCEPT:
                    values |= {"accepted_by": actor.name, "accepted_at": _ts(now)}
                elif step in (RegStep.APPROVE, RegStep.REJECT):
                    values |= {
                        "reviewed_by": actor.name,
                        "reviewed_at": _ts(now),
                        "review_comment": comment,
                    }
                    if new is RegState.PUBLICITY:
                        values |= {
                            "publicity_from": _ts(now),
                            "publicity_until": _ts(now + self._publicity_of(row.form)),
                        }
                conn.execute(sa.update(apps).where(apps.c.id == app_id).values(**values))
                before = RegState(row.state)
                self._event(conn, app_id, actor, step, before, new, now, comment, objection)
                record_allow(
                    self.platform,
                    actor,
                    action,
                    target,
                    "registration.transition",
                    dataset=row.dataset,
                    details={
                        "application": app_id,
                        "from": row.state,
                        "to": new.value,
                        "comment": comment,
                        "objection": objection,
                        **{k: v for k, v in values.items() if k.startswith("publicity")},
                    },
                )
        if new in (RegState.REJECTED, RegState.WITHDRAWN):
            discard(self._files(app_id))
        return self.show(actor, app_id)

    def object(self, actor: Actor, app_id: str, text: str) -> dict[str, Any]:
        """Anyone with an account files an objection while the application is in publicity."""
        target = f"registration:{app_id}"
        with audited(self.platform, actor, "registration.object", target):
            _need_text(text, "the objection's grounds")
            now = self.clock()
            objection_id = new_id("ob")
            with self.platform.engine.begin() as conn:
                row = self._row(conn, actor, app_id)
                open_ids = self._open_objections(conn, app_id)
                facts = self._facts(row, actor, now, open_ids)
                advance(RegState(row.state), RegStep.OBJECT, actor.role, facts)
                mine = conn.execute(
                    sa.select(objections.c.id).where(
                        objections.c.application == app_id,
                        objections.c.filed_by == actor.name,
                        objections.c.status == "open",
                    )
                ).first()
                if mine is not None:  # one open objection per account: add to it, not more
                    raise Conflict(
                        f"your objection {mine.id} is still open: the admin resolves it first",
                        rule="registration.objection_open",
                    )
                conn.execute(
                    sa.insert(objections).values(
                        id=objection_id,
                        application=app_id,
                        filed_by=actor.name,
                        filed_role=actor.role.value,
                        filed_at=_ts(now),
                        text=text.strip(),
                        status="open",
                    )
                )
                state = RegState(row.state)
                self._event(
                    conn, app_id, actor, RegStep.OBJECT, state, state, now, "", objection_id
                )
                record_allow(
                    self.platform,
                    actor,
                    "registration.object",
                    target,
                    "registration.transition",
                    dataset=row.dataset,
                    details={"application": app_id, "objection": objection_id},
                )
        return self.show(actor, app_id)

    def issue(self, actor: Actor, app_id: str) -> tuple[dict[str, Any], Registration]:
        """Load the reviewed file and issue the certificate, with the procedure's record."""
        target = f"registration:{app_id}"
        with audited(self.platform, actor, "registration.issue", target):
            now = self.clock()
            with self.platform.engine.connect() as conn:
                row = self._row(conn, actor, app_id)
                open_ids = self._open_objections(conn, app_id)
            facts = self._facts(row, actor, now, open_ids)
            advance(RegState(row.state), RegStep.ISSUE, actor.role, facts)
            self._permitted(actor, row)
            if row.source.get("reclassify"):
                return self._reclassify(actor, row, now)
            kept = self._files(app_id) / row.source["file"]
            changed = Conflict(
                "the applied file is no longer the one reviewed: the bureau applies again",
                rule="registration.source_changed",
            )
            if not kept.is_file():
                raise changed
            # A sealed file is opened into a plain one beside it, deleted on leaving.
            with self._opened(kept, changed) as (plain, sha256):
                if sha256 != row.source["sha256"]:
                    raise changed
                spec = parse_classification(row.classification, source_name=f"application:{app_id}")
                procedure = procedure_record(row, actor.name)
                source = FileSource(
                    plain,
                    self.platform.settings.staging_dir,
                    row.source["format"],
                    row.source["name"],
                )
                self._claim(app_id, RegState(row.state), now)
                try:
                    reg = self.platform.register(
                        spec,
                        source,  # type: ignore[arg-type]  # FileSource.connector: read-only
                        registered_by=actor.name,
                        role=actor.role.value,
                        acting=actor.audit_details(),
                        procedure=procedure,
                        engine=row.engine or "duckdb",
                    )
                except BaseException:
                    with self.platform.engine.begin() as conn:
                        conn.execute(
                            sa.update(apps).where(apps.c.id == app_id).values(issuing_since=None)
                        )
                    raise
            self._issued(actor, row, now, reg)
        discard(self._files(app_id))
        return self.show(actor, app_id), reg

    @contextmanager
    def _opened(self, kept: Path, changed: Conflict) -> Iterator[tuple[Path, str]]:
        """The kept file's plain bytes for the connector; damage reads as a changed file."""
        try:
            with opened_plain(kept, self.platform.data_keys) as opened:
                yield opened
        except EnclaveError as exc:
            if exc.rule != "keys.sealed_invalid":
                raise
            raise changed from None

    def _reclassify(
        self, actor: Actor, row: Any, now: datetime
    ) -> tuple[dict[str, Any], Registration]:
        """Issue a revision without a file: the reviewed classification over the rows of
        the version it was applied against (a version registered since refuses it)."""
        current = self.platform.catalog.get(row.dataset)
        if current.version != row.source["version"]:
            raise Conflict(
                f"{row.dataset} has a new version since this revision was applied: the "
                "bureau applies again",
                rule="registration.source_changed",
            )
        spec = parse_classification(row.classification, source_name=f"application:{row.id}")
        self._claim(row.id, RegState(row.state), now)
        try:
            record = procedure_record(row, actor.name)
            reg = reclassify(
                self.platform,
                spec,
                actor,
                procedure=record,
                expected_version=int(row.source["version"]),
            )
        except BaseException:
            with self.platform.engine.begin() as conn:
                conn.execute(sa.update(apps).where(apps.c.id == row.id).values(issuing_since=None))
            raise
        self._issued(actor, row, now, reg)
        return self.show(actor, row.id), reg

    def _issued(self, actor: Actor, row: Any, now: datetime, reg: Registration) -> None:
        with self.platform.engine.begin() as conn:
            conn.execute(
                sa.update(apps)
                .where(apps.c.id == row.id)
                .values(
                    state=RegState.ISSUED.value,
                    issued_by=actor.name,
                    issued_at=_ts(now),
                    version=reg.record.version,
                    issuing_since=None,
                    updated_at=_ts(now),
                )
            )
            self._event(
                conn, row.id, actor, RegStep.ISSUE, RegState(row.state), RegState.ISSUED, now
            )
            record_allow(
                self.platform,
                actor,
                "registration.issue",
                f"registration:{row.id}",
                "registration.transition",
                dataset=row.dataset,
                details={"application": row.id, "version": reg.record.version},
            )

    def _permitted(self, actor: Actor, row: Any) -> None:
        """The platform's steps are also a policy line (``registration.decide``, the admin's
        in the default policy; 管运分离 forbids it to bureaus and operators)."""
        authority = self.platform.authority
        decision = authority.decide(
            actor, "registration.decide", Target.domain(row.domain), audit=False
        )
        if not decision.allowed:
            raise decision.error()

    def _claim(self, app_id: str, state: RegState, now: datetime) -> None:
        """Mark the application as being issued, unless another issue holds it (a claim
        older than :data:`CLAIM_TTL` was left by a killed process and is taken over)."""
        stale = _ts(now - CLAIM_TTL)
        with self.platform.engine.begin() as conn:
            done = conn.execute(
                sa.update(apps)
                .where(
                    apps.c.id == app_id,
                    apps.c.state == state.value,
                    sa.or_(apps.c.issuing_since.is_(None), apps.c.issuing_since < stale),
                )
                .values(issuing_since=_ts(now))
            )
        if done.rowcount != 1:
            raise Conflict(
                "another administrator is issuing this certificate right now",
                rule="registration.issuing",
            )

    # -- reading ---------------------------------------------------------------------------

    def read(
        self, actor: Actor, app_id: str | None = None, *, state: str | None = None
    ) -> list[dict[str, Any]]:
        """What the API and the command line answer (one application, or the listing), the
        read recorded as ``registration.read`` with the number of rows (a refusal with its rule)."""
        return audited_read(
            self.platform,
            actor,
            "registration",
            app_id,
            lambda: self.visible(actor, state=state),
            lambda one: self.show(actor, one),
        )

    def visible(self, actor: Actor, *, state: str | None = None) -> list[dict[str, Any]]:
        """Applications the actor may see: every one in publicity (the public listing), a
        bureau's own domains', and all of them for admins and auditors."""
        query = sa.select(apps).order_by(apps.c.applied_at, apps.c.id)
        if state is not None:
            query = query.where(apps.c.state == RegState(state).value)
        with self.platform.engine.connect() as conn:
            rows = [r for r in conn.execute(query) if listed_to(r, actor)]
            return [self._out(conn, r, actor) for r in rows]

    def show(self, actor: Actor, app_id: str) -> dict[str, Any]:
        with self.platform.engine.connect() as conn:
            return self._out(conn, self._row(conn, actor, app_id), actor)

    def _row(self, conn: sa.Connection, actor: Actor, app_id: str) -> Any:
        row = conn.execute(sa.select(apps).where(apps.c.id == app_id)).first()
        if row is None:
            raise NotFound(f"no registration application {app_id}", rule="registration.unknown")
        if not (listed_to(row, actor) or self._objected(conn, app_id, actor)):
            # Not listed publicly, and not this account's: answered as one that does not
            # exist; the trail keeps the real rule.
            raise Withheld(
                f"no registration application {app_id}",
                rule="registration.unknown",
                actual_rule="registration.not_listed",
                actual_reason=f"the application is {row.state}, not in publicity",
            )
        return row

    @staticmethod
    def _objected(conn: sa.Connection, app_id: str, actor: Actor) -> bool:
        query = sa.select(objections.c.id).where(
            objections.c.application == app_id, objections.c.filed_by == actor.name
        )
        return conn.execute(query).first() is not None

    @staticmethod
    def _open_objections(conn: sa.Connection, app_id: str) -> list[str]:
        query = sa.select(objections.c.id).where(
            objections.c.application == app_id, objections.c.status == "open"
        )
        return [r.id for r in conn.execute(query)]

    @staticmethod
    def _facts(row: Any, actor: Actor, now: datetime, open_ids: list[str]) -> Facts:
        until = row.publicity_until
        return Facts(
            now=now,
            own_domain=actor.role is Role.BUREAU and row.domain in actor.domains,
            short_form=row.form == "short",
            publicity_until=None if until is None else datetime.fromisoformat(until),
            open_objections=len(open_ids),
        )

    @staticmethod
    def _event(
        conn: sa.Connection,
        app_id: str,
        actor: Actor,
        step: RegStep | str,
        before: RegState | None,
        after: RegState,
        now: datetime,
        comment: str = "",
        objection: str | None = None,
    ) -> None:
        conn.execute(
            sa.insert(events).values(
                application=app_id,
                at=_ts(now),
                actor=actor.name,
                role=actor.role.value,
                step=str(step),
                from_state=None if before is None else before.value,
                to_state=after.value,
                comment=comment,
                objection=objection,
            )
        )

    @staticmethod
    def _out(conn: sa.Connection, row: Any, actor: Actor) -> dict[str, Any]:
        filed = conn.execute(
            sa.select(objections)
            .where(objections.c.application == row.id)
            .order_by(objections.c.filed_at, objections.c.id)
        ).all()
        steps = conn.execute(
            sa.select(events).where(events.c.application == row.id).order_by(events.c.id)
        ).all()
        prohibited = load_controls(conn, [row.dataset])[row.dataset].prohibited
        return view(row, filed, steps, actor, prohibited=prohibited)


_ACTION = {
    RegStep.ACCEPT: "accept",
    RegStep.REFUSE: "accept",
    RegStep.APPROVE: "review",
    RegStep.REJECT: "review",
    RegStep.UPHOLD: "resolve",
    RegStep.DISMISS: "resolve",
    RegStep.WITHDRAW: "withdraw",
}


def _same_engine(dataset: str, current: str | None, asked: str) -> None:
    """A revision without a file reclassifies the rows where they are: in the enclave only
    (a version in the warehouse is a directory of its own, written from the file)."""
    held = current or "duckdb"
    if held != "duckdb":
        raise InvalidInput(
            f"{dataset} is held in the {held} warehouse: a revision of it names its data file",
            rule="registry.engine",
        )
    if asked != held:
        raise InvalidInput(
            f"a revision without a file keeps {dataset}'s rows in {held}: moving them to "
            f"{asked} takes the data file",
            rule="registry.engine",
        )


def _need_text(text: str, what: str) -> None:
    if not text.strip():
        raise InvalidInput(f"this step needs {what} in words", rule="registration.comment")
