"""`sandbox dataset propose-bounds`: C, G and clamping bounds from DP quantiles.

The owning bureau's command (``--token``; the host console, an admin, is refused
``dataset.classify``): it spends a small owner-side ε, recorded
in the audit trail before anything is read, and prints a TOML snippet for the
classification, or with ``--write`` records it as the dataset's new classification
(a reclassification: a new version and certificate).  See
:mod:`sandbox.query.bounds_proposal`.
"""

import getpass
import json
from typing import Annotated

import typer

from sandbox.cli.common import TokenOpt, settings_of

__all__ = ["propose_bounds_command"]


def propose_bounds_command(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="domain.table")],
    epsilon: Annotated[
        float | None,
        typer.Option(help="Owner-side ε to spend (default: the bounds_epsilon setting)."),
    ] = None,
    percentile: Annotated[
        float | None,
        typer.Option(help="Share of entities C and G keep whole (default: bounds_percentile)."),
    ] = None,
    value_percentile: Annotated[
        float | None,
        typer.Option(help="Quantile for clamping bounds (default: bounds_value_percentile)."),
    ] = None,
    write: Annotated[
        bool, typer.Option("--write", help="Record the proposal as a new classification.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    token: TokenOpt = None,
) -> None:
    """Propose [contribution] and clamping bounds from DP quantiles (spends ε, audited)."""
    from policies import Actor
    from sandbox.core.errors import Forbidden
    from sandbox.platform import Platform
    from sandbox.query.bounds_proposal import propose_bounds
    from sandbox.reclassify import reclassify

    platform = Platform(settings_of(ctx.obj))
    try:
        actor = platform.authority.authenticate(token) if token else Actor.host(getpass.getuser())
        try:
            proposal = propose_bounds(
                platform,
                dataset,
                actor,
                epsilon=epsilon,
                percentile=percentile,
                value_percentile=value_percentile,
            )
        except Forbidden as exc:
            if token or exc.rule != "role.not_permitted":
                raise
            # The host console acts as the admin, who does not classify: say who does.
            raise Forbidden(
                f"{exc.message}: propose-bounds runs as the bureau that owns {dataset}; "
                "pass --token with a token of that bureau's account (an admin makes one: "
                "sandbox account create NAME --role bureau --domain DOMAIN --org ORG, "
                "sandbox token enrol NAME, then sandbox token redeem CODE)",
                rule=exc.rule,
            ) from None
        version = None
        if write:
            spec = proposal.apply_to(platform.catalog.get(dataset).spec)
            version = reclassify(platform, spec, actor).record.version
    finally:
        platform.close()
    if as_json:
        typer.echo(json.dumps({**proposal.to_dict(), "written_version": version}, indent=2))
        return
    typer.echo(proposal.toml(), nl=False)
    typer.echo(
        f"# spent ε {proposal.epsilon:g} on {dataset} "
        f"(owner-side total {proposal.owner_epsilon_spent:g}, in the audit trail)"
    )
    if version is not None:
        typer.echo(f"# recorded as {dataset} v{version}")
