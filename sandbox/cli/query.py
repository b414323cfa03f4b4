"""`sandbox query` (an operator's analysis, local home) and `sandbox receipt verify`."""

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandbox.cli.common import settings_of
from sandbox.core.errors import CertificateError, InvalidInput, QueryRefused
from sandbox.core.wording import counted

if TYPE_CHECKING:  # imported where used, so that building the command line stays fast
    import pyarrow as pa

__all__ = ["query", "receipt_app"]

receipt_app = typer.Typer(help="Release receipts: verify one offline.", no_args_is_help=True)

FORMATS = ("table", "json", "csv")


def _json_default(value: Any) -> Any:
    return str(value)


def _finite(value: Any) -> Any:
    """NaN and ±inf (a ratio over a noisy 0) as null, as over HTTP: JSON has neither."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def format_table(table: "pa.Table") -> str:
    """A plain aligned text table (what `--format table` prints)."""
    rows = [[("" if v is None else str(v)) for v in row.values()] for row in table.to_pylist()]
    header = table.column_names
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def with_intervals(table: "pa.Table", accuracy: dict[str, Any] | None) -> "pa.Table":
    """``table`` with a ``name ±95%`` column after each average whose result metadata
    gives every row's 95% half-width (``cell_accuracy.result_accuracy``); "unbounded" where
    a cell's noisy count is within its own noise (an outside analyst read small groups'
    averages, 0.0 and five times the truth, with nothing beside them saying so)."""
    import pyarrow as pa

    for name, entry in (accuracy or {}).items():
        widths = entry.get("half_widths") if isinstance(entry, dict) else None
        if name not in table.column_names or not isinstance(widths, list):
            continue
        if len(widths) != table.num_rows:
            continue
        shown = ["unbounded" if w is None else f"{w:,.4g}" for w in widths]
        at = table.column_names.index(name) + 1
        table = table.add_column(at, f"{name} ±95%", pa.array(shown, pa.string()))
    return table


def query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="One SELECT over datasets you hold grants on.")],
    token: Annotated[
        str,
        typer.Option("--token", envvar="SANDBOX_TOKEN", help="Your operator API token."),
    ],
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    explain: Annotated[
        bool, typer.Option("--explain", help="Check and cost the query without running it.")
    ] = False,
    purpose: Annotated[str | None, typer.Option(help="Purpose tag recorded in the audit.")] = None,
    epsilon: Annotated[
        float | None,
        typer.Option(help="ε for this query, up to the grant's per-query maximum (its default)."),
    ] = None,
    receipt: Annotated[
        Path | None, typer.Option(help="Write the signed release receipt to this file.")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="SANDBOX_URL", help="A Sandbox server (else the local home)."),
    ] = None,
) -> None:
    """Run an analysis query and print the released (aggregated, desensitized) result.

    Exit status 0 with the rows on stdout; on a refusal the rule and reason go to
    stderr and the exit status is 2.  With --explain the verdict is printed and the
    exit status is 0 if the query would be accepted, 2 if not.
    """
    if fmt not in FORMATS:
        raise InvalidInput(f"--format is one of {', '.join(FORMATS)}", rule="cli.format")
    if url is not None:
        from sandbox.cli.job import remote_query

        result = remote_query(url, token, sql, purpose=purpose, explain=explain, epsilon=epsilon)
        if result is None:
            return
        _print_result(result, fmt, receipt)
        return
    from sandbox.platform import Platform
    from sandbox.query.service import QueryService

    platform = Platform(settings_of(ctx.obj))
    try:
        actor = platform.authority.authenticate(token)
        service = QueryService(platform)
        if explain:
            verdict = service.explain(actor, sql, purpose=purpose, epsilon=epsilon)
            typer.echo(json.dumps(verdict, indent=2, ensure_ascii=False))
            if not verdict["accepted"]:
                raise QueryRefused(verdict["message"], rule=verdict["rule"])
            return
        result = service.run(actor, sql, purpose=purpose, epsilon=epsilon)
    finally:
        platform.close()
    _print_result(result, fmt, receipt)


def _print_result(result: Any, fmt: str, receipt: Path | None) -> None:
    if receipt is not None:
        receipt.write_text(json.dumps(result.receipt, indent=2, ensure_ascii=False) + "\n")
    if fmt == "json":
        rows = [{k: _finite(v) for k, v in r.items()} for r in result.table.to_pylist()]
        doc = {"rows": rows, "meta": result.meta, "receipt": result.receipt}
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=_json_default))
        return
    if fmt == "csv":
        import pyarrow as pa
        import pyarrow.csv as pacsv

        sink = pa.BufferOutputStream()
        pacsv.write_csv(result.table, sink)
        sys.stdout.write(sink.getvalue().to_pybytes().decode("utf-8"))
    else:
        typer.echo(format_table(with_intervals(result.table, result.meta.get("accuracy"))))
    meta = result.meta
    eps = f", ε spent {meta['epsilon_spent']:g}" if meta.get("epsilon_spent") else ""
    remaining = meta.get("epsilon_remaining")
    eps += f", ε remaining {remaining:g}" if remaining is not None else ""
    # A repeat answered from the cache has its own audit entry; its receipt is the first
    # release's.  Entries are named by hash: a seq would count every account's activity.
    entry = meta.get("audit_entry_hash") or result.receipt["receipt"]["audit"]["entry_hash"]
    # Reported under a privacy budget only (without one it is null), as a noisy lower
    # bound: at least that many groups were held back (97.5% confidence).
    withheld = meta.get("groups_suppressed")
    shown = "" if withheld is None else f", at least {counted(withheld, 'group')} suppressed"
    # Under a budget: each output's 95% half-width (an average's bound is in the meta).
    widths = [
        f"{name} ±{a['half_width']:,g}"
        for name, a in (meta.get("accuracy") or {}).items()
        if a.get("half_width") is not None
    ]
    eps += f", 95% within {', '.join(widths)}" if widths else ""
    # A quantile's statement is in rows of rank (its bin's rows near the target rank).
    ranks = [
        f"{name} within {a['rank_half_width']:,} rows of its rank"
        for name, a in (meta.get("accuracy") or {}).items()
        if a.get("rank_half_width") is not None
    ]
    eps += f", 95%: {', '.join(ranks)}" if ranks else ""
    # Under a budget, grouped: what a group needs to be shown (data-independent).
    selection = next(
        (a for a in (meta.get("accuracy") or {}).values() if a.get("released_from")), None
    )
    if selection is not None:
        eps += (
            f", groups shown where their noisy count of {selection['counting']} reaches "
            f"{selection['released_from']:,}"
        )
    # Under a budget: what the intervals leave out (the caps' and the clamps' bias).
    eps += _beyond_caps(meta) if widths or _has_cell_widths(meta) else ""
    # Under a budget: what a WHERE or a group key was compared with (released values).
    thresholds = meta.get("thresholds") or []
    if thresholds:
        values = ", ".join("withheld" if v is None else f"{v:,.6g}" for v in thresholds)
        eps += f", subquer{'ies' if len(thresholds) > 1 else 'y'} released first as {values}"
    typer.echo(
        f"# {counted(meta['rows'], 'row')}{shown} (k={meta['k']})"
        f"{eps}{', from cache' if meta.get('cached') else ''}; audit entry {entry}",
        err=True,
    )


def _number(value: float) -> str:
    """A bound as written: ``1,000,000,000``, ``-0.5``."""
    whole = float(value).is_integer() and abs(value) < 1e15
    return f"{int(value):,}" if whole else f"{value:,.6g}"


def _has_cell_widths(meta: dict[str, Any]) -> bool:
    entries = (meta.get("accuracy") or {}).values()
    return any(isinstance(a.get("half_widths"), list) for a in entries)


def _beyond_caps(meta: dict[str, Any]) -> str:
    """What an interval does not cover: rows beyond the per-entity caps are left out and
    values beyond their bounds count as the bound (an outside analyst read a count 3.7%
    low, from rows beyond T, as outside its stated interval)."""
    caps = meta.get("contribution")
    if not isinstance(caps, dict):
        return ""
    c, t = caps.get("max_rows_per_entity"), caps.get("max_total_rows_per_entity")
    if not isinstance(c, int):
        return ""
    text = f"; intervals are the noise alone: at most {counted(c, 'row')} an entity in a group"
    text += f", {t:,} in all" if t else ""
    bounds = sorted(
        {tuple(b) for a in (meta.get("accuracy") or {}).values() for b in a.get("clamped_to", [])}
    )
    if bounds:
        shown = [f"[{_number(lo)}, {_number(hi)}]" for lo, hi in bounds]
        text += ", measures clamped to " + " and ".join(shown)
    return text + " (what lies beyond is not counted)"


@receipt_app.command("verify")
def receipt_verify(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Receipt JSON file.")],
    public_key: Annotated[
        Path | None, typer.Option(help="File holding the platform's base64 public key.")
    ] = None,
) -> None:
    """Verify a release receipt offline with the platform's public key."""
    from audit.keys import KeyRingError, key_id_of, load_public_keys, public_key_from_b64
    from sandbox.query.receipts import verify_receipt

    try:
        if public_key is not None:
            key = public_key_from_b64(public_key.read_text())
            keys = {key_id_of(key): key}
        else:
            keys = load_public_keys(settings_of(ctx.obj).keys_dir)
        doc = json.loads(file.read_text())
    except (OSError, KeyRingError, ValueError) as exc:
        raise CertificateError(
            f"cannot read the receipt or keys ({type(exc).__name__})", rule="receipt.read"
        ) from None
    body = verify_receipt(doc, keys)
    typer.echo(
        f"valid: request {body['request_id']} by {body['operator']}: "
        f"{counted(body['rows'], 'row')}, "
        f"result sha256 {body['result_sha256']}, ε {body['epsilon_spent']:g}, "
        f"audit entry {body['audit']['entry_hash']}"
    )
