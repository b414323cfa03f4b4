"""``sandbox freeze``, ``unfreeze``, ``usage`` and ``statement``: emergency stop and metering."""

from pathlib import Path
from typing import Annotated

import typer

from sandbox.cli.common import JsonOpt, Opt, TokenOpt, echo_json, services
from sandbox.core.errors import InvalidInput

__all__ = ["freeze", "statement", "unfreeze", "usage"]


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
        echo_json([{**r.__dict__, "charge_fen": r.charge} for r in rows])
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
