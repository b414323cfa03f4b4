"""``sandbox dataset quality DATASET``: a dataset's quality report (数据质量评测).

The report the enclave computed when the newest version was loaded (aggregates only;
counts below k withheld), with timeliness as of now and every version's score; the
read is the catalog's ``catalog.read`` decision, recorded.  See
:mod:`sandbox.governance.quality_view`.
"""

from typing import Annotated, Any

import typer

from sandbox.cli.common import JsonOpt, TokenOpt, echo_json

__all__ = ["quality_command"]


def quality_command(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="domain.table")],
    as_json: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """The quality report: completeness, validity, uniqueness, consistency, timeliness."""
    from sandbox.cli.governance import acting
    from sandbox.governance.quality_view import read_quality

    with acting(ctx.obj, token) as (platform, actor):
        found = read_quality(platform, actor, dataset)
    if as_json:
        echo_json(found)
        return
    report = found["report"]
    if report is None:
        typer.echo(f"{dataset}: no quality report (registered before quality evaluation)")
        return
    typer.echo(
        f"{dataset} v{report['version']}  score {_num(report['score'])} "
        f"(certified {_num(report['certified_score'])}, sha256 {report['sha256'][:16]}…)"
    )
    for name in ("completeness", "validity", "uniqueness", "consistency", "timeliness"):
        typer.echo(f"  {name:<13} {_num(report[name]['rate'])}")
    t = report["timeliness"]
    typer.echo(f"  age {t['age_days']} days, declared {t['update_frequency']}")
    history = ", ".join(f"v{h['version']} {_num(h['score'])}" for h in found["history"])
    typer.echo(f"history: {history}")


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:g}"
