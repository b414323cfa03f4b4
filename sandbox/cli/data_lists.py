"""``sandbox negative-list add|list|remove`` and ``sandbox dataset important mark|list|unmark``:
the negative list (负面清单) and the important-data catalog (重要数据目录), as the account of
``--token`` (the host console, an admin, without one); ``sandbox grant co-approve``: the
admin's approval of a grant application's strictly limited items."""

from typing import Annotated, Any

import typer

from sandbox.cli.common import JsonOpt, Opt, TokenOpt
from sandbox.cli.governance import acting, echo_rows

__all__ = ["add_co_approve_command", "important_app", "negative_app"]

negative_app = typer.Typer(
    help="The negative list (负面清单): prohibited and strictly limited items.",
    no_args_is_help=True,
)
important_app = typer.Typer(
    help="The important-data catalog (重要数据目录): dp only, every release reviewed, "
    "no joins with another domain.",
    no_args_is_help=True,
)

ItemArg = Annotated[str, typer.Argument(help="domain.table, or domain.table.column")]
ReasonOpt = Annotated[str, Opt(help="Why, in words the other side reads.")]


def _line(row: dict[str, Any]) -> str:
    removed = row["removed"]
    gone = f"  removed by {removed['by']}: {removed['reason']}" if removed else ""
    return (
        f"{row['id']}  {row['kind']:<10} {row['item']:<36} by {row['added_by']} "
        f"({row['added_at'][:10]}): {row['reason']}{gone}"
    )


def _add(obj: Any, token: str | None, kind: str, item: str, reason: str) -> None:
    from sandbox.core.data_controls import ItemKind
    from sandbox.governance.data_lists import DataLists

    with acting(obj, token) as (platform, actor):
        row = DataLists(platform).add(actor, ItemKind(kind), item, reason=reason)
    typer.echo(f"{row['id']}: {row['item']} is {row['kind']}")


def _remove(obj: Any, token: str | None, row_id: str, reason: str) -> None:
    from sandbox.governance.data_lists import DataLists

    with acting(obj, token) as (platform, actor):
        row = DataLists(platform).remove(actor, row_id, reason=reason)
    typer.echo(f"{row['id']}: {row['item']} is no longer {row['kind']}")


def _list(obj: Any, token: str | None, name: str, dataset: str | None, removed: bool) -> Any:
    from sandbox.governance.data_lists import DataLists

    with acting(obj, token) as (platform, actor):
        return DataLists(platform).read(actor, name, dataset=dataset, removed=removed)


@negative_app.command("add")
def negative_add(
    ctx: typer.Context,
    item: ItemArg,
    reason: ReasonOpt,
    kind: Annotated[str, Opt(help="prohibited or limited.")] = "prohibited",
    token: TokenOpt = None,
) -> None:
    """Name a prohibited or strictly limited item (the admin; a bureau for its datasets)."""
    from sandbox.core.errors import InvalidInput

    if kind not in ("prohibited", "limited"):
        raise InvalidInput("--kind is prohibited or limited", rule="data_list.kind")
    _add(ctx.obj, token, kind, item, reason)


@negative_app.command("list")
def negative_list(
    ctx: typer.Context,
    dataset: Annotated[str | None, Opt(help="Only this dataset's items.")] = None,
    removed: Annotated[bool, Opt("--removed", help="Also items taken off.")] = False,
    as_json: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """The negative list (every account reads it)."""
    echo_rows(_list(ctx.obj, token, "negative", dataset, removed), as_json, _line)


@negative_app.command("remove")
def negative_remove(
    ctx: typer.Context, item_id: str, reason: ReasonOpt, token: TokenOpt = None
) -> None:
    """Take an item off the negative list (the admin only)."""
    _remove(ctx.obj, token, item_id, reason)


@important_app.command("mark")
def important_mark(
    ctx: typer.Context, item: ItemArg, reason: ReasonOpt, token: TokenOpt = None
) -> None:
    """Mark a dataset or column as important data (the admin; a bureau for its datasets)."""
    _add(ctx.obj, token, "important", item, reason)


@important_app.command("list")
def important_list(
    ctx: typer.Context,
    dataset: Annotated[str | None, Opt(help="Only this dataset's items.")] = None,
    removed: Annotated[bool, Opt("--removed", help="Also items unmarked.")] = False,
    as_json: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """The important-data catalog (every account reads it)."""
    echo_rows(_list(ctx.obj, token, "important", dataset, removed), as_json, _line)


@important_app.command("unmark")
def important_unmark(
    ctx: typer.Context, item_id: str, reason: ReasonOpt, token: TokenOpt = None
) -> None:
    """Take an item off the important-data catalog (the admin only)."""
    _remove(ctx.obj, token, item_id, reason)


def grant_co_approve(
    ctx: typer.Context, app_id: str, reason: ReasonOpt, token: TokenOpt = None
) -> None:
    """Approve the strictly limited items a grant application asks for (the admin)."""
    from policies import Administration
    from sandbox.governance.applications import Applications
    from sandbox.governance.co_approval import co_approve

    with acting(ctx.obj, token) as (platform, actor):
        admin = Administration(platform.authority, k_floor=platform.settings.k_floor)
        app = co_approve(Applications(platform, admin), actor, app_id, reason=reason)
    items = ", ".join(app["co_approval"]["items"])
    typer.echo(f"co-approved {app['id']} ({items}): the bureau's approval issues the grant")


def add_co_approve_command(grant_app: typer.Typer) -> None:
    grant_app.command("co-approve")(grant_co_approve)
