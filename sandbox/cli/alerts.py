"""``sandbox alerts ...``: list, acknowledge and resolve alerts; set response policies.

Without ``--token`` the command acts as the host console (an admin, audited as
``host:<os user>``): it sees every alert and may resolve and reverse; a bureau's
token sees its domains' alerts and sets response policies; an operator's token is
refused (``alerts.not_visible``).  Every call is audited like the HTTP routes'.
"""

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandbox.cli.common import JsonOpt, Opt, TokenOpt, echo_json, settings_of
from sandbox.core.errors import InvalidInput

if TYPE_CHECKING:
    from policies import Actor
    from sandbox.monitoring.desk import AlertDesk

__all__ = ["alerts_app"]

alerts_app = typer.Typer(
    help="Risk alerts (监测预警): list, acknowledge, resolve; response policies.",
    no_args_is_help=True,
)
policy_app = typer.Typer(help="Response policies of datasets and grants.", no_args_is_help=True)
alerts_app.add_typer(policy_app, name="policy")

ReasonOpt = Annotated[str, Opt("--reason", help="Why (recorded in the alert and the trail).")]


@contextmanager
def _desk(obj: Any, token: str | None) -> "Iterator[tuple[AlertDesk, Actor]]":
    from policies import Actor
    from sandbox.monitoring.desk import AlertDesk
    from sandbox.platform import Platform

    platform = Platform(settings_of(obj))
    try:
        actor = platform.authority.authenticate(token) if token else Actor.host(getpass.getuser())
        yield AlertDesk(platform, create=True), actor
    finally:
        platform.close()


def _line(alert: dict[str, Any]) -> str:
    where = alert["dataset"] or "-"
    return (
        f"{alert['id']}  {alert['state']:<12} {alert['severity']:<7} {alert['detector']:<12} "
        f"{alert['operator']:<14} {where:<24} {alert['summary']}"
    )


@alerts_app.command("list")
def list_(
    ctx: typer.Context,
    state: Annotated[str | None, Opt(help="open, acknowledged or resolved.")] = None,
    severity: Annotated[str | None, Opt(help="This severity and above.")] = None,
    dataset: Annotated[str | None, Opt(help="Only this dataset.")] = None,
    operator: Annotated[str | None, Opt(help="Only this operator.")] = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """The alerts you may see, newest first."""
    from sandbox.monitoring import AlertFilter

    filters = AlertFilter(state=state, severity=severity, dataset=dataset, operator=operator)
    with _desk(ctx.obj, token) as (desk, actor):
        found = desk.list_alerts(actor, filters)
    if json_out:
        echo_json(found)
        return
    for alert in found:
        typer.echo(_line(alert))
    if not found:
        typer.echo("no alerts")


@alerts_app.command("ack")
def ack(ctx: typer.Context, alert_id: str, reason: ReasonOpt = "", token: TokenOpt = None) -> None:
    """Acknowledge an open alert."""
    with _desk(ctx.obj, token) as (desk, actor):
        alert = desk.acknowledge(actor, alert_id, reason)
    typer.echo(f"{alert['id']} acknowledged by {alert['acknowledged_by']}")


@alerts_app.command("resolve")
def resolve(
    ctx: typer.Context,
    alert_id: str,
    reason: ReasonOpt = "",
    reverse: Annotated[
        bool, Opt("--reverse", help="Also undo its responses (resume, unfreeze, release mode).")
    ] = False,
    token: TokenOpt = None,
) -> None:
    """Resolve an alert (and with --reverse undo what it set off)."""
    with _desk(ctx.obj, token) as (desk, actor):
        alert = desk.resolve(actor, alert_id, reason, reverse=reverse)
    undone = ", ".join(a["action"] for a in alert["reversed"]) or "nothing"
    typer.echo(f"{alert['id']} resolved by {alert['resolved_by']}; reversed: {undone}")


@policy_app.command("set")
def policy_set(
    ctx: typer.Context,
    action: Annotated[str, Opt(help="notify, hold, suspend or freeze.")],
    dataset: Annotated[str | None, Opt(help="For this dataset.")] = None,
    grant: Annotated[str | None, Opt(help="For this grant.")] = None,
    min_severity: Annotated[str, Opt(help="warning or high.")] = "high",
    reason: ReasonOpt = "",
    token: TokenOpt = None,
) -> None:
    """Set the response to severe alerts on a dataset or grant (its bureau's token)."""
    if (dataset is None) == (grant is None):
        raise InvalidInput("name one --dataset or one --grant", rule="cli.alerts_policy")
    scope, target = ("dataset", dataset) if dataset is not None else ("grant", grant)
    assert target is not None
    with _desk(ctx.obj, token) as (desk, actor):
        policy = desk.set_policy(
            actor,
            scope=scope,
            target=target,
            action=action,
            min_severity=min_severity,
            reason=reason,
        )
    typer.echo(f"{scope} {target}: {policy['action']} from {policy['min_severity']}")


@policy_app.command("list")
def policy_list(ctx: typer.Context, json_out: JsonOpt = False, token: TokenOpt = None) -> None:
    """The response policies you may see."""
    with _desk(ctx.obj, token) as (desk, actor):
        found = desk.policies(actor)
    if json_out:
        echo_json(found)
        return
    for p in found:
        typer.echo(f"{p['scope']} {p['target']}: {p['action']} from {p['min_severity']}")
    if not found:
        typer.echo("no response policies (every alert only notifies)")
