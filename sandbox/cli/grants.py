"""``sandbox grant``: grants (数据授权) a bureau issues, lists, narrows, suspends and revokes,
and the release mode (``dp`` or ``reviewed``) it chooses for each."""

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from sandbox.cli.common import (
    JsonOpt,
    Opt,
    TokenOpt,
    choice,
    echo_json,
    fen,
    moment,
    services,
    settings_of,
)
from sandbox.core.errors import InvalidInput

__all__ = ["grant_app"]

grant_app = typer.Typer(
    help="Grants (数据授权) a bureau issues on its datasets.", no_args_is_help=True
)


# -- grants ----------------------------------------------------------------------------------


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
    release_mode: Annotated[
        str,
        Opt(
            help="dp: every released number noised under the budget (default); reviewed: "
            "exact values, each release held for your review."
        ),
    ] = "dp",
    epsilon_total: Annotated[
        float | None, Opt(help="Privacy budget (dp; default: the platform's).")
    ] = None,
    epsilon_per_query: Annotated[float | None, Opt(help="Max epsilon per query.")] = None,
    queries_per_day: Annotated[int | None, Opt(help="Daily query quota.")] = None,
    rows_per_day: Annotated[int | None, Opt(help="Daily rows-scanned quota.")] = None,
    dominance_n: Annotated[int, Opt(help="Dominance rule: the n largest contributors.")] = 2,
    dominance_p: Annotated[
        float | None, Opt(help="Dominance rule: their share that suppresses (0 turns it off).")
    ] = 0.9,
    round_digits: Annotated[
        int | None, Opt(help="Round released values to this many decimals (-1: tens).")
    ] = 2,
    max_rows_per_entity: Annotated[
        int | None, Opt(help="C: rows per entity and group, below the dataset's [contribution].")
    ] = None,
    max_groups_per_entity: Annotated[
        int | None, Opt(help="G: groups per entity, below the dataset's [contribution].")
    ] = None,
    use: Annotated[str, Opt(help="public_interest (free) or commercial.")] = "public_interest",
    price_per_query: Annotated[str | None, Opt(help="CNY per query.")] = None,
    price_per_million_rows: Annotated[str | None, Opt(help="CNY per million rows.")] = None,
    reason: Annotated[str, Opt(help="Recorded in the grant's history.")] = "",
    token: TokenOpt = None,
) -> None:
    """Issue a grant on one of your bureau's datasets to one operator."""
    from policies.grant_terms import GrantTerms, ReleaseMode, Tariff, Use
    from sandbox.core.classification import Level

    kind = choice(Use, use, "--use")
    mode = choice(ReleaseMode, release_mode, "--release-mode")
    try:
        level = Level.parse(max_level)
    except KeyError:
        raise InvalidInput("max level is L1, L2 or L3", rule="cli.level") from None
    terms = GrantTerms(
        purpose_code=purpose,
        purpose_text=purpose_text,
        valid_from=moment(valid_from, "valid from") if valid_from else datetime.now(UTC),
        valid_until=moment(valid_until, "valid until"),
        max_level=level,
        columns=frozenset(column) if column else None,
        groupable=frozenset(groupable or ()),
        k=k if k is not None else settings_of(ctx.obj).k_floor,
        epsilon_total=epsilon_total,
        epsilon_per_query=epsilon_per_query,
        queries_per_day=queries_per_day,
        rows_per_day=rows_per_day,
        release_mode=mode,
        dominance_n=dominance_n,
        dominance_p=dominance_p or None,
        round_digits=round_digits,
        max_rows_per_entity=max_rows_per_entity,
        max_groups_per_entity=max_groups_per_entity,
        tariff=Tariff(
            use=kind,
            price_per_query=fen(price_per_query, "price per query"),
            price_per_million_rows=fen(price_per_million_rows, "price per million rows"),
        ),
    )
    with services(ctx.obj, token) as (admin, actor):
        grant = admin.issue_grant(actor, dataset, operator, terms, reason=reason)
    typer.echo(
        f"issued {grant.id}: {dataset} to {operator} for {purpose}, v{grant.version}, "
        f"{_mode_text(grant)}"
    )


def _mode_text(grant: Any) -> str:
    if grant.review_required and grant.epsilon_total is None:
        return "release mode reviewed (exact values, each release held for your review)"
    if grant.review_required:
        return f"release mode reviewed (noised, ε {grant.epsilon_total:g}, and reviewed)"
    per_query = grant.epsilon_per_query
    cap = "no per-query cap" if per_query is None else f"{per_query:g} per query"
    return f"release mode dp (ε {grant.epsilon_total:g} in total, {cap})"


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
        echo_json([g.to_dict() for g in found])
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
    echo_json({"grant": grant.to_dict(), "history": history})


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
    dominance_n: Annotated[int | None, Opt(help="Dominance over 2 contributors.")] = None,
    dominance_p: Annotated[float | None, Opt(help="Lower dominance share.")] = None,
    round_digits: Annotated[int | None, Opt(help="Coarser rounding (fewer digits).")] = None,
    max_rows_per_entity: Annotated[int | None, Opt(help="Lower C (rows per entity).")] = None,
    max_groups_per_entity: Annotated[int | None, Opt(help="Lower G (groups per entity).")] = None,
    reason: Annotated[str, Opt(help="Recorded in the grant's history.")] = "",
    token: TokenOpt = None,
) -> None:
    """Narrow a grant (anything that would widen it is refused)."""
    from sandbox.core.classification import Level

    changes: dict[str, Any] = {}
    if valid_until:
        changes["valid_until"] = moment(valid_until, "valid until")
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
        ("max_rows_per_entity", max_rows_per_entity),
        ("max_groups_per_entity", max_groups_per_entity),
    ):
        if value is not None:
            changes[name] = value
    if not changes:
        raise InvalidInput("nothing to narrow", rule="cli.narrow")
    with services(ctx.obj, token) as (admin, actor):
        grant = admin.narrow_grant(actor, grant_id, reason=reason, **changes)
    typer.echo(f"narrowed {grant.id} to v{grant.version}")


@grant_app.command("release-mode")
def grant_release_mode(
    ctx: typer.Context,
    grant_id: str,
    mode: Annotated[str, typer.Argument(help="dp or reviewed.")],
    epsilon_total: Annotated[
        float | None, Opt(help="dp: the budget (default: the grant's, else the platform's).")
    ] = None,
    epsilon_per_query: Annotated[float | None, Opt(help="dp: max epsilon per query.")] = None,
    reason: Annotated[str, Opt(help="Why (recorded with the new version; required).")] = "",
    token: TokenOpt = None,
) -> None:
    """Choose a grant's release mode: dp (noised) or reviewed (exact after your review)."""
    from policies.grant_terms import ReleaseMode

    chosen = choice(ReleaseMode, mode, "MODE")
    with services(ctx.obj, token) as (admin, actor):
        grant = admin.set_release_mode(
            actor,
            grant_id,
            chosen,
            epsilon_total=epsilon_total,
            epsilon_per_query=epsilon_per_query,
            reason=reason,
        )
    typer.echo(f"{grant.id} v{grant.version}: {_mode_text(grant)}")


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
