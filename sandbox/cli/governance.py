"""``sandbox registration`` and ``sandbox catalog`` (grant applications: ``grant_applications``).

The same procedures as the HTTP routes (``sandbox.governance``), on this home, as the
account of ``--token`` (or ``SANDBOX_TOKEN``); without one, the host console, an admin:
it accepts, reviews, resolves and issues, but never applies for a bureau or an operator.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandbox.cli.common import JsonOpt, Opt, TokenOpt, echo_json, fen, settings_of
from sandbox.core.errors import InvalidInput

if TYPE_CHECKING:
    from policies import Actor
    from sandbox.platform import Platform

__all__ = ["acting", "catalog_app", "echo_rows", "registration_app"]

registration_app = typer.Typer(
    help="The registration procedure (申请、受理、审查、公示、凭证发放).", no_args_is_help=True
)
catalog_app = typer.Typer(help="The data catalog operators browse.", no_args_is_help=True)


@contextmanager
def acting(obj: Any, token: str | None) -> Iterator[tuple["Platform", "Actor"]]:
    """This home's platform and the acting account (the host console without a token)."""
    import getpass

    from policies import Actor
    from sandbox.platform import Platform

    platform = Platform(settings_of(obj))
    try:
        authority = platform.authority
        actor = authority.authenticate(token) if token else Actor.host(getpass.getuser())
        yield platform, actor
    finally:
        platform.close()


def echo_rows(
    found: list[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any]], str]
) -> None:
    """A governance listing: JSON with ``--json``, else one ``line`` per row."""
    if as_json:
        echo_json(found)
        return
    for row in found:
        typer.echo(line(row))


def _registration_line(app: dict[str, Any]) -> str:
    return (
        f"{app['id']}  {app['dataset']:<24} {app['state']:<10} {app['form']:<5} "
        f"by {app['applicant']}"
        + (f"  publicity until {app['publicity_until']}" if app["publicity_until"] else "")
        + (f"  {app['open_objections']} open objection(s)" if app["open_objections"] else "")
    )


# -- registration ----------------------------------------------------------------------------


@registration_app.command("apply")
def registration_apply(
    ctx: typer.Context,
    classification: Annotated[Path, typer.Argument(help="The bureau's classification TOML.")],
    update_frequency: Annotated[str, Opt(help="How often it is updated, e.g. monthly.")],
    source: Annotated[
        Path | None,
        Opt(
            help="The data file (csv, parquet, json, arrow); omit it to reclassify a "
            "registered dataset's rows as loaded (a revision)."
        ),
    ] = None,
    fmt: Annotated[str | None, Opt("--format", help="Format (default: suffix).")] = None,
    public_interest: Annotated[bool, Opt(help="Offered free for public interest.")] = True,
    commercial: Annotated[bool, Opt(help="Offered for commercial use.")] = False,
    price_per_query: Annotated[str | None, Opt(help="Listed CNY per query.")] = None,
    price_per_million_rows: Annotated[str | None, Opt(help="Listed CNY per M rows.")] = None,
    terms: Annotated[str, Opt(help="Conditions of use, in words.")] = "",
    engine: Annotated[
        str,
        Opt(
            help="Where the rows live once issued: duckdb (the enclave file) or spark "
            "(the Parquet warehouse)."
        ),
    ] = "duckdb",
    token: TokenOpt = None,
) -> None:
    """Apply to register (or re-register, or revise the classification of) a dataset."""
    from sandbox.governance.registrations import Registrations, SourceFile

    try:
        text = classification.read_text("utf-8")
    except OSError:
        raise InvalidInput(
            f"cannot read classification file {classification}", rule="cli.file"
        ) from None
    if source is not None and not source.is_file():
        raise InvalidInput(f"no file {source}", rule="cli.file")
    priced = (commercial, terms, price_per_query, price_per_million_rows)
    listing: dict[str, Any] | None = {
        "public_interest": public_interest,
        "commercial": commercial,
        "price_per_query_fen": fen(price_per_query, "price per query"),
        "price_per_million_rows_fen": fen(price_per_million_rows, "price per million rows"),
        "terms": terms,
    }
    if source is None and public_interest and not any(priced):
        listing = None  # a revision without a file keeps the terms last issued
    with acting(ctx.obj, token) as (platform, actor):
        app = Registrations(platform).apply(
            actor,
            classification=text,
            source=None if source is None else SourceFile(source, source.name, format=fmt),
            update_frequency=update_frequency,
            listing=listing,
            engine=engine,
        )
    typer.echo(f"applied {app['id']}: {app['dataset']} ({app['form']} form), {app['state']}")


@registration_app.command("list")
def registration_list(
    ctx: typer.Context,
    state: Annotated[str | None, Opt(help="Only applications in this state.")] = None,
    as_json: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Applications you may see (all in publicity; your domains'; all for admins)."""
    from sandbox.governance.registrations import Registrations

    with acting(ctx.obj, token) as (platform, actor):
        found = Registrations(platform).read(actor, state=state)
    echo_rows(found, as_json, _registration_line)


@registration_app.command("show")
def registration_show(ctx: typer.Context, app_id: str, token: TokenOpt = None) -> None:
    """One application with its steps and objections (JSON)."""
    from sandbox.governance.registrations import Registrations

    with acting(ctx.obj, token) as (platform, actor):
        echo_json(Registrations(platform).read(actor, app_id)[0])


def _step(ctx: typer.Context, token: str | None, app_id: str, step: str, **kw: Any) -> None:
    from sandbox.governance.registration_states import RegStep
    from sandbox.governance.registrations import Registrations

    with acting(ctx.obj, token) as (platform, actor):
        app = Registrations(platform).step(actor, app_id, RegStep(step), **kw)
    typer.echo(_registration_line(app))


@registration_app.command("accept")
def registration_accept(
    ctx: typer.Context,
    app_id: str,
    refuse: Annotated[bool, Opt(help="Refuse it (不予受理) instead.")] = False,
    comment: Annotated[str, Opt(help="Why (required to refuse).")] = "",
    token: TokenOpt = None,
) -> None:
    """Accept (受理) an application, or refuse it (admin)."""
    _step(ctx, token, app_id, "refuse" if refuse else "accept", comment=comment)


@registration_app.command("review")
def registration_review(
    ctx: typer.Context,
    app_id: str,
    comment: Annotated[str, Opt(help="The review's comment.")],
    reject: Annotated[bool, Opt(help="Reject instead of approving.")] = False,
    token: TokenOpt = None,
) -> None:
    """Review (审查): approval starts the publicity period (admin)."""
    if not comment.strip():
        raise InvalidInput("a review needs a comment", rule="registration.comment")
    _step(ctx, token, app_id, "reject" if reject else "approve", comment=comment)


@registration_app.command("object")
def registration_object(
    ctx: typer.Context,
    app_id: str,
    text: Annotated[str, Opt(help="The grounds of the objection.")],
    token: TokenOpt = None,
) -> None:
    """Object to an application in publicity (any account)."""
    from sandbox.governance.registrations import Registrations

    with acting(ctx.obj, token) as (platform, actor):
        app = Registrations(platform).object(actor, app_id, text)
    mine = [o["id"] for o in app["objections"] if o["filed_by"] == actor.name]
    typer.echo(f"objection {mine[-1]} filed on {app_id}")


@registration_app.command("resolve")
def registration_resolve(
    ctx: typer.Context,
    app_id: str,
    objection: str,
    comment: Annotated[str, Opt(help="The resolution, in words.")],
    uphold: Annotated[bool, Opt(help="Uphold it (the application is rejected).")] = False,
    token: TokenOpt = None,
) -> None:
    """Resolve an objection: dismiss it (default) or uphold it (admin)."""
    step = "uphold" if uphold else "dismiss"
    _step(ctx, token, app_id, step, comment=comment, objection=objection)


@registration_app.command("withdraw")
def registration_withdraw(
    ctx: typer.Context,
    app_id: str,
    comment: Annotated[str, Opt(help="Why.")] = "",
    token: TokenOpt = None,
) -> None:
    """Withdraw your bureau's open application."""
    _step(ctx, token, app_id, "withdraw", comment=comment)


@registration_app.command("issue")
def registration_issue(ctx: typer.Context, app_id: str, token: TokenOpt = None) -> None:
    """Load the reviewed file and issue the certificate (凭证发放) (admin)."""
    from sandbox.governance.registrations import Registrations

    with acting(ctx.obj, token) as (platform, actor):
        app, reg = Registrations(platform).issue(actor, app_id)
        cert_dir = platform.settings.certificates_dir
    typer.echo(f"issued {app['dataset']} v{reg.record.version} ({app_id})")
    typer.echo(f"certificate: {cert_dir / f'{reg.record.id}.v{reg.record.version}.json'}")


# -- catalog ---------------------------------------------------------------------------------


@catalog_app.command("list")
def catalog_list(ctx: typer.Context, as_json: JsonOpt = False, token: TokenOpt = None) -> None:
    """Every registered dataset: title, update frequency, whether prices are listed."""
    from sandbox.governance.catalog_view import read_catalog

    with acting(ctx.obj, token) as (platform, actor):
        found = read_catalog(platform, actor)
    echo_rows(found, as_json, _catalog_line)


def _catalog_line(entry: dict[str, Any]) -> str:
    every = entry["update_frequency"] or "-"
    priced = "priced" if entry["price_terms"] else "terms on application"
    return f"{entry['id']:<26} v{entry['version']:<3} {every:<10} {priced:<22} {entry['title']}"


@catalog_app.command("show")
def catalog_show(
    ctx: typer.Context, dataset: str, as_json: JsonOpt = False, token: TokenOpt = None
) -> None:
    """One dataset: description, columns with level and role, terms, how to apply."""
    from sandbox.governance.catalog_view import read_catalog

    with acting(ctx.obj, token) as (platform, actor):
        entry = read_catalog(platform, actor, dataset)[0]
    if as_json:
        echo_json(entry)
        return
    typer.echo(f"{entry['id']}  v{entry['version']}  {entry['title']}")
    typer.echo(entry["description"])
    typer.echo(f"update frequency: {entry['update_frequency'] or 'not declared'}")
    typer.echo(f"engine: {entry['engine']}")
    quality = entry["quality"]
    shown = (
        "no report yet" if quality is None else f"score {quality['score']} (v{quality['version']})"
    )
    typer.echo(f"quality: {shown}; sandbox dataset quality {entry['id']}")
    typer.echo(f"price terms: {entry['price_terms'] or 'set by the bureau on approval'}")
    typer.echo(f"{'column':<16} {'level':<5} {'role':<10} description")
    for col in entry["columns"]:
        typer.echo(f"{col['name']:<16} {col['level']:<5} {col['role']:<10} {col['description']}")
    typer.echo(f"apply: {entry['how_to_apply']['cli']}")
