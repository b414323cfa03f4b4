"""``sandbox grant apply|approve|reject|applications|withdraw-application``: grant
applications (数据授权申请) over this home, as the account of ``--token``."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandbox.cli.common import JsonOpt, Opt, TokenOpt, fen
from sandbox.cli.governance import acting, echo_rows

if TYPE_CHECKING:
    from sandbox.platform import Platform

__all__ = ["add_grant_application_commands"]


def grant_apply(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="domain.table")],
    purpose: Annotated[str, Opt(help="Purpose code, e.g. inclusive-finance.")],
    purpose_text: Annotated[str, Opt(help="The scenario, in words.")],
    column: Annotated[list[str], Opt(help="A column the purpose needs (repeat).")],
    days: Annotated[int, Opt(help="Duration in days.")],
    use: Annotated[str, Opt(help="public_interest or commercial.")],
    groupable: Annotated[list[str] | None, Opt(help="A column to group by (repeat).")] = None,
    release_mode: Annotated[str | None, Opt(help="dp or reviewed (default: bureau).")] = None,
    note: Annotated[str, Opt(help="Anything else for the bureau.")] = "",
    token: TokenOpt = None,
) -> None:
    """Apply for a grant on a catalogued dataset (operator)."""
    from policies import ReleaseMode, Use
    from sandbox.cli.common import choice
    from sandbox.governance.applications import Asked

    asked = Asked(
        dataset=dataset,
        purpose_code=purpose,
        purpose_text=purpose_text,
        columns=tuple(column),
        groupable=tuple(groupable or ()),
        duration_days=days,
        use=choice(Use, use, "--use"),
        release_mode=None
        if release_mode is None
        else choice(ReleaseMode, release_mode, "--release-mode"),
        note=note,
    )
    with acting(ctx.obj, token) as (platform, actor):
        app = _applications(platform).apply(actor, asked)
    typer.echo(f"applied {app['id']}: {dataset} for {purpose}, {app['state']}")


def _applications(platform: "Platform") -> Any:
    from policies import Administration
    from sandbox.governance.applications import Applications

    admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
    return Applications(platform, admin)


def grant_approve(
    ctx: typer.Context,
    app_id: str,
    reason: Annotated[str, Opt(help="Why (required when amending).")] = "",
    column: Annotated[list[str] | None, Opt(help="Amended column list (repeat).")] = None,
    groupable: Annotated[list[str] | None, Opt(help="Amended groupable list.")] = None,
    days: Annotated[int | None, Opt(help="Amended duration in days.")] = None,
    use: Annotated[str | None, Opt(help="Amended use.")] = None,
    release_mode: Annotated[str | None, Opt(help="dp or reviewed.")] = None,
    k: Annotated[int | None, Opt(help="Minimum group size.")] = None,
    epsilon_total: Annotated[float | None, Opt(help="Privacy budget.")] = None,
    epsilon_per_query: Annotated[float | None, Opt(help="Max epsilon per query.")] = None,
    queries_per_day: Annotated[int | None, Opt(help="Daily query quota.")] = None,
    price_per_query: Annotated[str | None, Opt(help="CNY per query (commercial).")] = None,
    price_per_million_rows: Annotated[str | None, Opt(help="CNY per M rows.")] = None,
    token: TokenOpt = None,
) -> None:
    """Approve an application on your bureau's dataset: the grant is issued (amended where
    an option changes what was asked)."""
    from policies import ReleaseMode, Use
    from sandbox.cli.common import choice
    from sandbox.governance.applications import Decided

    decided = Decided(
        columns=None if column is None else tuple(column),
        groupable=None if groupable is None else tuple(groupable),
        duration_days=days,
        use=None if use is None else choice(Use, use, "--use"),
        release_mode=None
        if release_mode is None
        else choice(ReleaseMode, release_mode, "--release-mode"),
        k=k,
        epsilon_total=epsilon_total,
        epsilon_per_query=epsilon_per_query,
        queries_per_day=queries_per_day,
        price_per_query=fen(price_per_query, "price per query"),
        price_per_million_rows=fen(price_per_million_rows, "price per million rows"),
    )
    with acting(ctx.obj, token) as (platform, actor):
        app = _applications(platform).approve(actor, app_id, decided, reason=reason)
    typer.echo(f"{app_id} {app['state']}: grant {app['grant']}")


def grant_reject(
    ctx: typer.Context,
    app_id: str,
    reason: Annotated[str, Opt(help="Why, for the operator.")],
    token: TokenOpt = None,
) -> None:
    """Reject an application on your bureau's dataset, with a reason."""
    with acting(ctx.obj, token) as (platform, actor):
        app = _applications(platform).reject(actor, app_id, reason=reason)
    typer.echo(f"{app_id} {app['state']}")


def grant_withdraw_application(
    ctx: typer.Context,
    app_id: str,
    reason: Annotated[str, Opt(help="Why.")] = "",
    token: TokenOpt = None,
) -> None:
    """Withdraw your grant application while it waits (operator)."""
    with acting(ctx.obj, token) as (platform, actor):
        app = _applications(platform).withdraw(actor, app_id, reason=reason)
    typer.echo(f"{app_id} {app['state']}")


def grant_applications(
    ctx: typer.Context,
    state: Annotated[str | None, Opt(help="Only applications in this state.")] = None,
    as_json: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Grant applications you are party to (all, for admins and auditors)."""
    with acting(ctx.obj, token) as (platform, actor):
        found = _applications(platform).read(actor, state=state)
    echo_rows(found, as_json, _application_line)


def _application_line(app: dict[str, Any]) -> str:
    return (
        f"{app['id']}  {app['dataset']:<24} {app['operator']:<12} {app['state']:<9} "
        f"{app['asked']['purpose_code']}" + (f"  grant {app['grant']}" if app["grant"] else "")
    )


def add_grant_application_commands(grant_app: typer.Typer) -> None:
    """``sandbox grant apply|approve|reject|applications|withdraw-application``."""
    grant_app.command("apply")(grant_apply)
    grant_app.command("approve")(grant_approve)
    grant_app.command("reject")(grant_reject)
    grant_app.command("applications")(grant_applications)
    grant_app.command("withdraw-application")(grant_withdraw_application)
