"""CLI for accounts, tokens, grants, emergency freeze, usage and statements.

The command line runs on the platform host.  Without ``--token`` it acts as
the host console, an admin audited as ``host:<os user>``: it may manage
accounts and tokens, freeze, and read usage, but, like every admin, never
grant data (管运分离).  Grant commands therefore need a bureau's token
(``--token`` or ``SANDBOX_TOKEN``); every act goes through the same decision
API and audit trail as the HTTP server.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

from policies import Actor, Administration, Authority, GrantTerms, Licence, Role, Tariff, Use
from policies.actors import LicenceStatus
from sandbox.classification import Level
from sandbox.errors import InvalidInput
from sandbox.platform import Platform
from sandbox.settings import Settings

__all__ = [
    "account_app",
    "demo_accounts",
    "freeze",
    "grant_app",
    "services",
    "statement",
    "token_app",
    "unfreeze",
    "usage",
]

account_app = typer.Typer(help="Accounts and operator licences (admin).", no_args_is_help=True)
token_app = typer.Typer(
    help="API tokens: issue (shown once) and revoke (admin).", no_args_is_help=True
)
grant_app = typer.Typer(
    help="Grants (数据授权) a bureau issues on its datasets.", no_args_is_help=True
)

TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="SANDBOX_TOKEN", help="Act as this token's account."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@contextmanager
def services(settings: Settings, token: str | None) -> Iterator[tuple[Administration, Actor]]:
    """The administration API over this home, its audit trail, and the acting actor."""
    from audit import AuditTrail

    platform = Platform(settings)
    trail = AuditTrail.open(
        settings.audit_db_url,
        platform.keyring,
        sign_every_n=settings.audit_sign_every_n,
        sign_every_s=settings.audit_sign_every_s,
    )
    authority = Authority(platform.engine, recorder=trail)
    try:
        actor = authority.authenticate(token) if token else Actor.host(getpass.getuser())
        yield Administration(authority, k_floor=settings.k_floor), actor
    finally:
        authority.close()
        trail.close()
        platform.close()


def _moment(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name}: a date YYYY-MM-DD or an ISO time", rule="cli.time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _fen(text: str | None, name: str) -> int:
    if text is None:
        return 0
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(f"{name}: a price in CNY, e.g. 2.50", rule="cli.price") from None
    if value < 0 or value != value.quantize(Decimal("0.01")):
        raise InvalidInput(
            f"{name}: a non-negative price with at most 2 decimals", rule="cli.price"
        )
    return int(value * 100)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


# -- accounts --------------------------------------------------------------------------------


@account_app.command("create")
def account_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Account name, e.g. op-bank.")],
    role: Annotated[Role, typer.Option(help="operator, bureau, auditor or admin.")],
    organisation: Annotated[str, typer.Option("--org", help="Organisation name.")],
    domain: Annotated[list[str] | None, typer.Option(help="A bureau's domain (repeat).")] = None,
    licence_number: Annotated[str | None, typer.Option(help="Operator licence number.")] = None,
    licence_valid_until: Annotated[
        str | None, typer.Option(help="Operator licence end (YYYY-MM-DD).")
    ] = None,
    token: TokenOpt = None,
) -> None:
    """Create an account (operators need a licence, bureaus a domain)."""
    licence = None
    if licence_number or licence_valid_until:
        if not (licence_number and licence_valid_until):
            raise InvalidInput("a licence needs a number and an end date", rule="cli.licence")
        licence = Licence(
            number=licence_number, valid_until=_moment(licence_valid_until, "licence end")
        )
    with services(ctx.obj, token) as (admin, actor):
        account = admin.create_account(
            actor, name, role=role, organisation=organisation, domains=domain or (), licence=licence
        )
    typer.echo(f"created {account.role.value} account {account.name}")


@account_app.command("list")
def account_list(ctx: typer.Context, as_json: JsonOpt = False, token: TokenOpt = None) -> None:
    """Every account, with role, domains, status and licence."""
    with services(ctx.obj, token) as (admin, actor):
        found = admin.list_accounts(actor)
    if as_json:
        _echo_json([a.to_dict() for a in found])
        return
    for a in found:
        extra = ",".join(a.domains)
        if a.licence is not None:
            lic = a.licence
            extra = f"licence {lic.number} {lic.status.value} until {lic.valid_until:%Y-%m-%d}"
        flags = " FROZEN" if a.frozen else ""
        typer.echo(
            f"{a.name:<20} {a.role.value:<9} {a.status.value:<9} {extra}{flags}  {a.organisation}"
        )


@account_app.command("disable")
def account_disable(
    ctx: typer.Context,
    name: str,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail).")] = "",
    token: TokenOpt = None,
) -> None:
    """Disable an account: its tokens stop working at once."""
    with services(ctx.obj, token) as (admin, actor):
        admin.disable_account(actor, name, reason=reason)
    typer.echo(f"disabled {name}")


@account_app.command("licence")
def account_licence(
    ctx: typer.Context,
    name: str,
    status: Annotated[
        LicenceStatus | None, typer.Option(help="active, suspended, withdrawn.")
    ] = None,
    number: Annotated[str | None, typer.Option(help="New licence number.")] = None,
    valid_until: Annotated[str | None, typer.Option(help="New end date (YYYY-MM-DD).")] = None,
    token: TokenOpt = None,
) -> None:
    """Change an operator's licence (准入与退出)."""
    until = _moment(valid_until, "valid until") if valid_until else None
    with services(ctx.obj, token) as (admin, actor):
        account = admin.set_licence(actor, name, number=number, valid_until=until, status=status)
    assert account.licence is not None
    typer.echo(f"{name}: licence {account.licence.number} {account.licence.status.value}")


# -- tokens ----------------------------------------------------------------------------------


@token_app.command("issue")
def token_issue(
    ctx: typer.Context,
    account: str,
    days: Annotated[float, typer.Option(help="Lifetime in days (at most 366).")] = 90,
    label: Annotated[str, typer.Option(help="A note, e.g. where it is used.")] = "",
    token: TokenOpt = None,
) -> None:
    """Issue a token; it is printed once and stored only as a hash."""
    with services(ctx.obj, token) as (admin, actor):
        issued = admin.issue_token(actor, account, ttl=timedelta(days=days), label=label)
    typer.echo(f"token id {issued.id} for {account}, expires {issued.expires_at:%Y-%m-%d %H:%M}Z")
    typer.echo(issued.token)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: str, token: TokenOpt = None) -> None:
    """Revoke a token by its id (tk_...)."""
    with services(ctx.obj, token) as (admin, actor):
        record = admin.revoke_token(actor, token_id)
    typer.echo(f"revoked {record.id} of {record.account}")


# -- grants ----------------------------------------------------------------------------------

Opt = typer.Option


@grant_app.command("issue")
def grant_issue(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="domain.table")],
    operator: Annotated[str, typer.Argument(help="Operator account.")],
    purpose: Annotated[str, Opt(help="Purpose code, e.g. inclusive-finance.")],
    purpose_text: Annotated[str, Opt(help="The scenario, in words.")],
    valid_until: Annotated[str, Opt(help="End of validity (YYYY-MM-DD).")],
    valid_from: Annotated[str | None, Opt(help="Start (default: now).")] = None,
    max_level: Annotated[str, Opt(help="Column ceiling L1..L3.")] = "L2",
    column: Annotated[list[str] | None, Opt(help="Explicit column list (repeat).")] = None,
    groupable: Annotated[list[str] | None, Opt(help="Groupable quasi/sensitive column.")] = None,
    k: Annotated[int | None, Opt(help="Minimum group size (default: platform floor).")] = None,
    epsilon_total: Annotated[float | None, Opt(help="Privacy budget.")] = None,
    epsilon_per_query: Annotated[float | None, Opt(help="Max epsilon per query.")] = None,
    queries_per_day: Annotated[int | None, Opt(help="Daily query quota.")] = None,
    rows_per_day: Annotated[int | None, Opt(help="Daily rows-scanned quota.")] = None,
    review: Annotated[bool, Opt(help="Results need bureau review before release.")] = False,
    dominance_n: Annotated[int, Opt(help="Dominance rule: the n largest contributors.")] = 2,
    dominance_p: Annotated[
        float | None, Opt(help="Dominance rule: their share that suppresses (0 turns it off).")
    ] = 0.9,
    round_digits: Annotated[
        int | None, Opt(help="Round released values to this many decimals (-1: tens).")
    ] = 2,
    use: Annotated[Use, Opt(help="public_interest (free) or commercial.")] = Use.PUBLIC_INTEREST,
    price_per_query: Annotated[str | None, Opt(help="CNY per query.")] = None,
    price_per_million_rows: Annotated[str | None, Opt(help="CNY per million rows.")] = None,
    reason: Annotated[str, Opt(help="Recorded in the grant's history.")] = "",
    token: TokenOpt = None,
) -> None:
    """Issue a grant on one of your bureau's datasets to one operator."""
    try:
        level = Level.parse(max_level)
    except KeyError:
        raise InvalidInput("max level is L1, L2 or L3", rule="cli.level") from None
    terms = GrantTerms(
        purpose_code=purpose,
        purpose_text=purpose_text,
        valid_from=_moment(valid_from, "valid from") if valid_from else datetime.now(UTC),
        valid_until=_moment(valid_until, "valid until"),
        max_level=level,
        columns=frozenset(column) if column else None,
        groupable=frozenset(groupable or ()),
        k=k if k is not None else ctx.obj.k_floor,
        epsilon_total=epsilon_total,
        epsilon_per_query=epsilon_per_query,
        queries_per_day=queries_per_day,
        rows_per_day=rows_per_day,
        review_required=review,
        dominance_n=dominance_n,
        dominance_p=dominance_p or None,
        round_digits=round_digits,
        tariff=Tariff(
            use=use,
            price_per_query=_fen(price_per_query, "price per query"),
            price_per_million_rows=_fen(price_per_million_rows, "price per million rows"),
        ),
    )
    with services(ctx.obj, token) as (admin, actor):
        grant = admin.issue_grant(actor, dataset, operator, terms, reason=reason)
    typer.echo(f"issued {grant.id}: {dataset} to {operator} for {purpose}, v{grant.version}")


@grant_app.command("list")
def grant_list(
    ctx: typer.Context,
    operator: Annotated[str | None, Opt(help="Only this operator's grants.")] = None,
    domain: Annotated[str | None, Opt(help="Only this domain's datasets.")] = None,
    as_json: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Grants you may read: an operator's own, a bureau's domains."""
    with services(ctx.obj, token) as (admin, actor):
        found = admin.list_grants(actor, operator=operator, domain=domain)
    if as_json:
        _echo_json([g.to_dict() for g in found])
        return
    for g in found:
        typer.echo(
            f"{g.id}  {g.dataset:<24} {g.operator:<12} {g.purpose_code:<24} {g.status.value:<9} "
            f"v{g.version} until {g.valid_until:%Y-%m-%d} ceiling {g.max_level.name} k={g.k}"
        )


@grant_app.command("show")
def grant_show(ctx: typer.Context, grant_id: str, token: TokenOpt = None) -> None:
    """A grant's terms and its version history (JSON)."""
    with services(ctx.obj, token) as (admin, actor):
        grant, history = admin.show_grant(actor, grant_id)
    _echo_json({"grant": grant.to_dict(), "history": history})


@grant_app.command("narrow")
def grant_narrow(
    ctx: typer.Context,
    grant_id: str,
    valid_until: Annotated[str | None, Opt(help="Earlier end of validity.")] = None,
    max_level: Annotated[str | None, Opt(help="Lower ceiling.")] = None,
    column: Annotated[list[str] | None, Opt(help="Smaller explicit column list.")] = None,
    groupable: Annotated[list[str] | None, Opt(help="Smaller groupable list.")] = None,
    no_groupable: Annotated[bool, Opt(help="Allow grouping by none.")] = False,
    k: Annotated[int | None, Opt(help="Higher k.")] = None,
    epsilon_total: Annotated[float | None, Opt(help="Lower budget.")] = None,
    epsilon_per_query: Annotated[float | None, Opt(help="Lower per-query epsilon.")] = None,
    queries_per_day: Annotated[int | None, Opt(help="Lower daily quota.")] = None,
    rows_per_day: Annotated[int | None, Opt(help="Lower rows quota.")] = None,
    review: Annotated[bool, Opt(help="Require review from now on.")] = False,
    dominance_n: Annotated[int | None, Opt(help="Dominance over 2 contributors.")] = None,
    dominance_p: Annotated[float | None, Opt(help="Lower dominance share.")] = None,
    round_digits: Annotated[int | None, Opt(help="Coarser rounding (fewer digits).")] = None,
    reason: Annotated[str, Opt(help="Recorded in the grant's history.")] = "",
    token: TokenOpt = None,
) -> None:
    """Narrow a grant (anything that would widen it is refused)."""
    changes: dict[str, Any] = {}
    if valid_until:
        changes["valid_until"] = _moment(valid_until, "valid until")
    if max_level:
        changes["max_level"] = Level.parse(max_level)
    if column:
        changes["columns"] = frozenset(column)
    if groupable or no_groupable:
        changes["groupable"] = frozenset(groupable or ())
    for name, value in (
        ("k", k),
        ("epsilon_total", epsilon_total),
        ("epsilon_per_query", epsilon_per_query),
        ("queries_per_day", queries_per_day),
        ("rows_per_day", rows_per_day),
        ("dominance_n", dominance_n),
        ("dominance_p", dominance_p),
        ("round_digits", round_digits),
    ):
        if value is not None:
            changes[name] = value
    if review:
        changes["review_required"] = True
    if not changes:
        raise InvalidInput("nothing to narrow", rule="cli.narrow")
    with services(ctx.obj, token) as (admin, actor):
        grant = admin.narrow_grant(actor, grant_id, reason=reason, **changes)
    typer.echo(f"narrowed {grant.id} to v{grant.version}")


def _status_command(change: str, doc: str) -> None:
    def command(
        ctx: typer.Context,
        grant_id: str,
        reason: Annotated[str, Opt(help="Recorded in the grant's history.")] = "",
        token: TokenOpt = None,
    ) -> None:
        with services(ctx.obj, token) as (admin, actor):
            method = getattr(admin, f"{change}_grant")
            grant = method(actor, grant_id, reason=reason)
        typer.echo(f"{grant.id} is {grant.status.value} (v{grant.version})")

    command.__doc__ = doc
    grant_app.command(change)(command)


_status_command("suspend", "Suspend a grant (it can be resumed).")
_status_command("resume", "Resume a suspended grant.")
_status_command("revoke", "Revoke a grant for good.")


# -- freeze, usage, statements (top-level commands) ------------------------------------------


def freeze(
    ctx: typer.Context,
    dataset: Annotated[str | None, Opt(help="Freeze this dataset.")] = None,
    operator: Annotated[str | None, Opt(help="Freeze this operator.")] = None,
    reason: Annotated[str, Opt(help="Why (recorded in the audit trail).")] = "",
    token: TokenOpt = None,
) -> None:
    """Emergency freeze (应急处置): takes effect on the next decision on every server."""
    _set_frozen(ctx, dataset, operator, reason, token, frozen=True)


def unfreeze(
    ctx: typer.Context,
    dataset: Annotated[str | None, Opt(help="Unfreeze this dataset.")] = None,
    operator: Annotated[str | None, Opt(help="Unfreeze this operator.")] = None,
    reason: Annotated[str, Opt(help="Why (recorded in the audit trail).")] = "",
    token: TokenOpt = None,
) -> None:
    """Lift an emergency freeze."""
    _set_frozen(ctx, dataset, operator, reason, token, frozen=False)


def _set_frozen(
    ctx: typer.Context,
    dataset: str | None,
    operator: str | None,
    reason: str,
    token: str | None,
    *,
    frozen: bool,
) -> None:
    if (dataset is None) == (operator is None):
        raise InvalidInput("name one --dataset or one --operator", rule="cli.freeze")
    with services(ctx.obj, token) as (admin, actor):
        if dataset is not None:
            changed = admin.set_dataset_frozen(actor, dataset, frozen, reason=reason)
        else:
            assert operator is not None
            changed = admin.set_operator_frozen(actor, operator, frozen, reason=reason)
    state = "frozen" if frozen else "unfrozen"
    typer.echo(f"{dataset or operator} {state}" + ("" if changed else " (already)"))


def usage(
    ctx: typer.Context,
    operator: Annotated[str | None, Opt(help="One operator's use.")] = None,
    domain: Annotated[str | None, Opt(help="Use of one domain's datasets.")] = None,
    since: Annotated[str | None, Opt(help="First day (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, Opt(help="Last day (YYYY-MM-DD).")] = None,
    monthly: Annotated[bool, Opt(help="Totals per month instead of per day.")] = False,
    as_json: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """The usage ledger per operator, grant and day (可控可计量)."""
    with services(ctx.obj, token) as (admin, actor):
        rows = admin.usage(
            actor, operator=operator, domain=domain, since=since, until=until, by_month=monthly
        )
    if as_json:
        _echo_json([{**r.__dict__, "charge_fen": r.charge} for r in rows])
        return
    for r in rows:
        typer.echo(
            f"{r.day}  {r.operator:<12} {r.grant}  {r.dataset:<24} queries {r.queries:>6} "
            f"rows {r.rows_scanned:>12,} cpu {r.cpu_ms / 1000:>8.1f}s eps {r.epsilon_spent:g} "
            f"charge {r.charge / 100:.2f} CNY"
        )


def statement(
    ctx: typer.Context,
    month: Annotated[str, typer.Argument(help="YYYY-MM")],
    operator: Annotated[str | None, Opt(help="Statement of this operator.")] = None,
    bureau: Annotated[str | None, Opt(help="Statement of this bureau account.")] = None,
    out: Annotated[Path | None, Opt(help="Write the CSV here instead of stdout.")] = None,
    token: TokenOpt = None,
) -> None:
    """A monthly statement (CSV) for one operator or one bureau, with the join split rule."""
    with services(ctx.obj, token) as (admin, actor):
        text = admin.statement(actor, month, operator=operator, bureau=bureau)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}")


def demo_accounts(settings: Settings) -> Path:
    """Demo accounts, grants and tokens; tokens written to HOME/demo-tokens.json (0600)."""
    from policies.demo import create_demo, write_tokens

    with services(settings, None) as (admin, host):
        tokens = create_demo(admin, host, now=datetime.now(UTC))
    path = settings.home / "demo-tokens.json"
    write_tokens(path, tokens)
    typer.echo(f"demo tokens (also in {path}, readable only by you):")
    for name, value in tokens.items():
        typer.echo(f"  {name:<17} {value}")
    return path
