"""``sandbox product``: data products (数据产品) on this home, as the account of ``--token``.

The same steps as the HTTP routes (``sandbox.governance.products``): a bureau publishes
(``publish FILE``) and decides proposals and subscriptions; an operator proposes,
subscribes and runs (``run PRODUCT --param name=value``: a job under the subscription's
grant, run at once on this home).  A product file is TOML::

    dataset = "health.claims"
    title = "Claims per district"
    description = "Claims per district for one gender."
    template = '''SELECT district, count(*) AS n FROM health.claims
                  WHERE gender = :g GROUP BY district'''
    columns = ["district", "gender"]
    groupable = ["gender"]
    price_per_run = "2.50"             # CNY, commercial use; public-interest use is free
    terms = "cite the bureau"
    [params.g]
    type = "string"
    domain = "health.claims.gender"    # the column's declared values
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandbox.cli.common import JsonOpt, Opt, TokenOpt, choice, echo_json, fen, settings_of
from sandbox.core.errors import InvalidInput

if TYPE_CHECKING:
    from policies import Actor
    from sandbox.governance.products import Offer, Products

__all__ = ["product_app"]

product_app = typer.Typer(
    help="Data products (数据产品): publish, propose, subscribe, run.", no_args_is_help=True
)


@contextmanager
def _products(obj: Any, token: str | None) -> Iterator[tuple["Products", "Actor"]]:
    import getpass
    import uuid

    from policies import Actor
    from sandbox.governance.products import Products
    from sandbox.query.product_guard import template_guard
    from sandbox.services import Services

    services = Services(settings_of(obj))
    try:
        platform = services.platform
        actor = platform.authority.authenticate(token) if token else Actor.host(getpass.getuser())

        def submit(who: "Actor", sql: str, purpose: str) -> dict[str, Any]:
            job = services.desk.submit(
                who, sql, purpose=purpose, fmt="json", rid=uuid.uuid4().hex, client="cli"
            )
            return services.runner.run_now(job.id).to_dict()

        yield (
            Products(
                platform,
                services.administration(),
                guard=template_guard(platform),
                submit=submit,
            ),
            actor,
        )
    finally:
        services.platform.close()


def _offer(path: Path) -> "Offer":
    import tomllib

    from sandbox.governance.products import Offer

    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise InvalidInput(
            f"{path.name}: not a readable TOML file", rule="cli.product_file"
        ) from None
    known = {
        "dataset",
        "title",
        "description",
        "template",
        "params",
        "columns",
        "groupable",
        "price_per_run",
        "terms",
        "public_interest",
    }
    if set(doc) - known or not all(isinstance(doc.get(k), str) for k in ("dataset", "template")):
        raise InvalidInput(
            f"{path.name}: keys are {sorted(known)}; dataset and template are text",
            rule="cli.product_file",
        )
    price = doc.get("price_per_run", "0")
    return Offer(
        dataset=doc["dataset"],
        title=str(doc.get("title", "")),
        description=str(doc.get("description", "")),
        template=doc["template"],
        params=dict(doc.get("params", {})),
        columns=tuple(doc.get("columns", ())),
        groupable=tuple(doc.get("groupable", ())),
        price_per_run=fen(str(price), "price_per_run"),
        terms=str(doc.get("terms", "")),
        **({"public_interest": str(doc["public_interest"])} if "public_interest" in doc else {}),
    )


def _line(p: dict[str, Any]) -> str:
    usage = p["usage"]
    return (
        f"{p['id']}  {p['dataset']:<22} {p['state']:<10} "
        f"{p['price_per_run_fen'] / 100:>8.2f} CNY/run  runs {usage['runs']:<5} "
        f"subscribers {usage['subscribers']:<3} {p['title']}"
    )


def _echo(found: dict[str, Any], as_json: bool) -> None:
    echo_json(found) if as_json else typer.echo(_line(found))


FileArg = Annotated[Path, typer.Argument(help="The product file (TOML).")]
ReasonOpt = Annotated[str, Opt(help="Why, in words the other side reads.")]


@product_app.command("publish")
def publish(
    ctx: typer.Context, file: FileArg, as_json: JsonOpt = False, token: TokenOpt = None
) -> None:
    """Publish a product of your bureau's dataset (the guard checks every parameter)."""
    with _products(ctx.obj, token) as (products, actor):
        _echo(products.publish(actor, _offer(file)), as_json)


@product_app.command("propose")
def propose(
    ctx: typer.Context, file: FileArg, as_json: JsonOpt = False, token: TokenOpt = None
) -> None:
    """Propose a product for the owning bureau to approve (operator)."""
    with _products(ctx.obj, token) as (products, actor):
        _echo(products.propose(actor, _offer(file)), as_json)


@product_app.command("list")
def listing(ctx: typer.Context, as_json: JsonOpt = False, token: TokenOpt = None) -> None:
    """Published products with usage counts (and the proposals you are party to)."""
    with _products(ctx.obj, token) as (products, actor):
        found = products.listing(actor)
    if as_json:
        echo_json(found)
        return
    for row in found:
        typer.echo(_line(row))


@product_app.command("show")
def show(ctx: typer.Context, product: str, token: TokenOpt = None) -> None:
    """One product (JSON): template, parameters, terms, usage, your subscriptions."""
    with _products(ctx.obj, token) as (products, actor):
        echo_json(products.show(actor, product))


@product_app.command("approve")
def approve(ctx: typer.Context, product: str, token: TokenOpt = None) -> None:
    """Approve a proposed product (the owning bureau)."""
    with _products(ctx.obj, token) as (products, actor):
        typer.echo(_line(products.decide(actor, product, approve=True)))


@product_app.command("reject")
def reject(
    ctx: typer.Context, product: str, reason: ReasonOpt = "", token: TokenOpt = None
) -> None:
    """Reject a proposed product, with a reason (the owning bureau)."""
    with _products(ctx.obj, token) as (products, actor):
        typer.echo(_line(products.decide(actor, product, approve=False, reason=reason)))


@product_app.command("withdraw")
def withdraw(
    ctx: typer.Context, product: str, reason: ReasonOpt = "", token: TokenOpt = None
) -> None:
    """Withdraw a published product (the owning bureau)."""
    with _products(ctx.obj, token) as (products, actor):
        typer.echo(_line(products.withdraw(actor, product, reason=reason)))


@product_app.command("subscribe")
def subscribe(
    ctx: typer.Context,
    product: str,
    purpose_text: Annotated[str, Opt("--purpose-text", help="What the use is for.")],
    days: Annotated[int, Opt(help="How long.")] = 90,
    use: Annotated[str, Opt(help="public_interest (free) or commercial (priced).")] = (
        "public_interest"
    ),
    release_mode: Annotated[str, Opt(help="dp (noised) or reviewed (exact, reviewed).")] = "dp",
    token: TokenOpt = None,
) -> None:
    """Ask to use a published product (operator); the owning bureau approves."""
    from policies import ReleaseMode, Use

    with _products(ctx.obj, token) as (products, actor):
        sub = products.subscribe(
            actor,
            product,
            use=choice(Use, use, "--use"),
            release_mode=choice(ReleaseMode, release_mode, "--release-mode"),
            purpose_text=purpose_text,
            duration_days=days,
        )
    typer.echo(f"{sub['id']}  {sub['state']}  {sub['use']}  {sub['release_mode']}")


@product_app.command("approve-subscription")
def approve_subscription(ctx: typer.Context, subscription: str, token: TokenOpt = None) -> None:
    """Approve a subscription: a grant for the product's queries is issued (bureau)."""
    with _products(ctx.obj, token) as (products, actor):
        sub = products.decide_subscription(actor, subscription, approve=True)
    typer.echo(f"{sub['id']}  {sub['state']}  grant {sub['grant']}")


@product_app.command("reject-subscription")
def reject_subscription(
    ctx: typer.Context, subscription: str, reason: ReasonOpt = "", token: TokenOpt = None
) -> None:
    """Reject a subscription, with a reason (bureau)."""
    with _products(ctx.obj, token) as (products, actor):
        sub = products.decide_subscription(actor, subscription, approve=False, reason=reason)
    typer.echo(f"{sub['id']}  {sub['state']}")


@product_app.command("run")
def run(
    ctx: typer.Context,
    product: str,
    param: Annotated[
        list[str] | None, Opt("--param", help="name=value, once per parameter.")
    ] = None,
    token: TokenOpt = None,
) -> None:
    """Run a product you subscribe to; prints the job (and its released rows) as JSON."""
    from sandbox.governance.product_templates import from_text, parse_params

    with _products(ctx.obj, token) as (products, actor):
        declared = {
            p.name: p
            for p in parse_params(
                products.show(actor, product, record=False)["params"], stored=True
            )
        }
        values: dict[str, Any] = {}
        for item in param or []:
            name, sep, text = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"{item!r} is not name=value", param_hint="--param")
            values[name] = from_text(declared[name], text) if name in declared else text
        echo_json(products.run(actor, product, values))
