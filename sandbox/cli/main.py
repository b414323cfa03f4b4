"""The `sandbox` command line: one home directory per deployment (``--home``).

Every error is a :class:`SandboxError`, printed as ``error[code]: message (rule)``
on stderr with a non-zero exit status; nothing prints a data value.

Start-up matters (``bench/cli_startup.py``): building the command line imports only
typer and light modules; DuckDB, pyarrow, sqlglot, SQLAlchemy, Casbin, FastAPI,
pydantic (the settings) and the cryptography library are imported inside the
commands that use them, and the settings are loaded on first use (``LazySettings``).
The modules that define commands do without ``from __future__ import annotations``:
typer would ``eval`` every string annotation of every command each time it builds the
command line (about two thirds of building it); names imported only for type checking
are quoted instead.
"""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sandbox.cli.accounts import account_app, token_app
from sandbox.cli.alerts import alerts_app
from sandbox.cli.audit import audit_app
from sandbox.cli.bounds import propose_bounds_command
from sandbox.cli.common import LazySettings, settings_of
from sandbox.cli.contribution_notes import drawn_bounds, registration_note, undeclared_bounds
from sandbox.cli.data_lists import add_co_approve_command, important_app, negative_app
from sandbox.cli.governance import catalog_app, registration_app
from sandbox.cli.grant_applications import add_grant_application_commands
from sandbox.cli.grants import grant_app
from sandbox.cli.job import job_app
from sandbox.cli.keys import keys_app
from sandbox.cli.operations import freeze, statement, unfreeze, usage
from sandbox.cli.products import product_app
from sandbox.cli.quality import quality_command
from sandbox.cli.query import query, receipt_app
from sandbox.cli.witness import witness_app
from sandbox.core.errors import CertificateError, InvalidInput, SandboxError
from sandbox.core.wording import counted, noun

if TYPE_CHECKING:
    from connectors.base import Source
    from sandbox.platform import Platform

__all__ = ["app", "main"]

app = typer.Typer(
    help="Sandbox: a governed enclave for licensed analysis of public data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich imported ~0.1 s of modules
)
dataset_app = typer.Typer(help="Register, inspect and certify datasets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
dataset_app.command("propose-bounds")(propose_bounds_command)
dataset_app.command("quality")(quality_command)
app.add_typer(account_app, name="account")
app.add_typer(token_app, name="token")
app.add_typer(grant_app, name="grant")
add_grant_application_commands(grant_app)
add_co_approve_command(grant_app)
app.add_typer(negative_app, name="negative-list")
dataset_app.add_typer(important_app, name="important")
app.add_typer(registration_app, name="registration")
app.add_typer(catalog_app, name="catalog")
app.add_typer(product_app, name="product")
app.add_typer(audit_app, name="audit")
app.add_typer(receipt_app, name="receipt")
app.add_typer(job_app, name="job")
app.add_typer(alerts_app, name="alerts")
app.add_typer(keys_app, name="keys")
app.add_typer(witness_app, name="witness")
app.command()(query)
app.command()(freeze)
app.command()(unfreeze)
app.command()(usage)
app.command()(statement)


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Deployment home directory.", envvar="SANDBOX_HOME"),
    ] = None,
) -> None:
    ctx.obj = LazySettings(home)


def _platform(ctx: typer.Context) -> "Platform":
    from sandbox.platform import Platform

    return Platform(settings_of(ctx.obj))


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the home: platform signing key, enclave file and control-plane database."""
    platform = _platform(ctx)
    platform.init()
    key = platform.keyring.active()
    typer.echo(f"home {platform.settings.home} ready; platform key {key.key_id}")
    _tell_master_key(platform)


def _tell_master_key(platform: "Platform") -> None:
    if platform.created_master_key is not None:
        typer.echo(
            f"master key: {platform.created_master_key} (mode 0600); back it up apart from "
            "the home: without it the encrypted data cannot be read"
        )


@app.command("demo-data")
def demo_data(
    ctx: typer.Context,
    scale: Annotated[float, typer.Option(help="1 = about 1 million claim rows.")] = 1.0,
) -> None:
    """Generate and register the four demo datasets (deterministic)."""
    platform = _platform(ctx)
    platform.init()
    _tell_master_key(platform)
    for reg in platform.load_demo_data(scale):
        rows = counted(reg.record.row_count, "row")
        typer.echo(f"registered {reg.record.id} v{reg.record.version}: {rows}")


@app.command()
def demo(
    ctx: typer.Context,
    scale: Annotated[float, typer.Option(help="1 = about 1 million claim rows.")] = 1.0,
) -> None:
    """Create a demo home: keys, enclave, the four bureaus' datasets, accounts, grants, tokens."""
    from sandbox.cli.demo import demo_accounts

    demo_data(ctx, scale)
    settings = settings_of(ctx.obj)
    demo_accounts(settings)
    typer.echo(f"demo home ready at {settings.home}")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Server processes (default SANDBOX_WORKERS, 1).")
    ] = None,
) -> None:
    """Run the HTTP API (uvicorn); several worker processes share the home safely."""
    from sandbox.cli.serve import serve_app
    from sandbox.startup import check_home

    platform = _platform(ctx)
    try:
        check_home(platform)  # a damaged home is refused here, in one line, before any worker
    finally:
        platform.close()
    serve_app(settings_of(ctx.obj), host=host, port=port, workers=workers)


@dataset_app.command("register")
def dataset_register(
    ctx: typer.Context,
    classification: Annotated[Path, typer.Argument(help="The bureau's classification TOML.")],
    source: Annotated[str, typer.Option(help="A file path, or a postgresql:// URL.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, parquet, json, arrow (default: suffix).")
    ] = None,
    table: Annotated[str | None, typer.Option(help="PostgreSQL table (schema.name).")] = None,
    query: Annotated[str | None, typer.Option(help="PostgreSQL query.")] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="Where the rows live: duckdb (the enclave file) or spark (the Parquet "
            "warehouse, queried by the Spark engine)."
        ),
    ] = "duckdb",
) -> None:
    """Load a source as a dataset; re-registering replaces it atomically."""
    from connectors.files import FileSource
    from connectors.postgres import PostgresSource
    from sandbox.core.classification import parse_classification
    from sandbox.enclave.registry import check_engine

    check_engine(engine)
    platform = _platform(ctx)
    try:
        text = classification.read_text("utf-8")
    except OSError:
        raise InvalidInput(
            f"cannot read classification file {classification}", rule="cli.file"
        ) from None
    spec = parse_classification(text, source_name=classification.name)
    if source.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        src: Source = PostgresSource(source, table=table, query=query)
    else:
        src = FileSource(Path(source), platform.settings.staging_dir, fmt)
    reg = platform.register(spec, src, engine=engine)
    verb = "replaced" if reg.replaced else "registered"
    rows = counted(reg.record.row_count, "row")
    where = "" if reg.record.engine == "duckdb" else f", in the {reg.record.engine} warehouse"
    typer.echo(f"{verb} {reg.record.id} v{reg.record.version}: {rows}{where}")
    if spec.contribution is None:  # the noise a bureau did not choose: say so once, here
        for line in registration_note(platform, spec, reg.record):
            typer.echo(line)
    cert_dir = platform.settings.certificates_dir
    typer.echo(f"certificate: {cert_dir / f'{reg.record.id}.v{reg.record.version}.json'}")


@dataset_app.command("list")
def dataset_list(ctx: typer.Context) -> None:
    """Registered datasets."""
    for rec in _platform(ctx).catalog.list():
        frozen = "  FROZEN" if rec.frozen else ""
        where = "" if rec.engine == "duckdb" else f"  [{rec.engine}]"
        rows = f"{rec.row_count:>12,} {noun(rec.row_count, 'row'):<4}"
        typer.echo(f"{rec.id:<26} v{rec.version:<3} {rows} {rec.title}{frozen}{where}")


@dataset_app.command("show")
def dataset_show(
    ctx: typer.Context,
    dataset_id: Annotated[str, typer.Argument(help="domain.table")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Metadata, provenance and column classification (never rows)."""
    platform = _platform(ctx)
    rec = platform.catalog.get(dataset_id)
    if as_json:
        body = rec.to_dict()
        if rec.spec.contribution is None:
            body["contribution_drawn"] = drawn_bounds(platform, rec)
        typer.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
    typer.echo(f"{rec.id}  v{rec.version}  {rec.title}")
    typer.echo(f"owner domain: {rec.domain}   entity key: {rec.entity_key}   rows: {rec.row_count}")
    typer.echo(f"source: {rec.connector} {rec.source_uri}")
    typer.echo(f"source sha256: {rec.source_sha256}   loaded: {rec.loaded_at}")
    typer.echo(
        "engine: duckdb (the enclave file)"
        if rec.engine == "duckdb"
        else f"engine: {rec.engine} (the Parquet warehouse, v{rec.version})"
    )
    bounds = rec.spec.contribution
    total = None if bounds is None else bounds.max_total_rows_per_entity
    typer.echo(
        undeclared_bounds(platform, rec)
        if bounds is None
        else f"contribution: C = {bounds.max_rows_per_entity} rows per entity and group, "
        f"G = {bounds.max_groups_per_entity} groups per entity"
        + ("" if total is None else f", T = {total} rows per entity in all")
        + ("; ranked at registration" if bounds.ranked else "")
    )
    typer.echo("")
    typer.echo(f"{'column':<16} {'type':<14} {'level':<5} {'role':<10} rules")
    for col in rec.spec.columns:
        rules = []
        if col.bounds:
            rules.append(f"bounds {col.bounds[0]:g}..{col.bounds[1]:g}")
        if col.generalize:
            rules.append(col.generalize.describe())
        if col.joinable:
            rules.append("joinable with " + ", ".join(col.joinable))
        if col.name == rec.entity_key:
            rules.append("entity key")
        typer.echo(
            f"{col.name:<16} {col.type or '':<14} {col.level.name:<5} {col.role.value:<10} "
            + "; ".join(rules)
        )


@dataset_app.command("verify-cert")
def dataset_verify_cert(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Certificate JSON file.")],
    public_key: Annotated[
        Path | None, typer.Option(help="File holding the platform's base64 public key.")
    ] = None,
    keys_dir: Annotated[
        Path | None, typer.Option(help="Directory of *.pub keys (default: HOME/keys).")
    ] = None,
) -> None:
    """Verify a registration certificate offline with the platform's public key."""
    from audit.keys import KeyRingError, key_id_of, load_public_keys, public_key_from_b64
    from sandbox.enclave.certificates import read_certificate, verify_certificate

    try:
        if public_key is not None:
            key = public_key_from_b64(public_key.read_text())
            keys = {key_id_of(key): key}
        else:
            keys = load_public_keys(keys_dir or settings_of(ctx.obj).keys_dir)
    except (OSError, KeyRingError, ValueError) as exc:
        raise CertificateError(
            f"cannot read public keys ({type(exc).__name__})", rule="certificate.keys"
        ) from None
    body = verify_certificate(read_certificate(file), keys)
    typer.echo(
        f"valid: {body['dataset']} v{body['version']} owner {body['owner']}, "
        f"{counted(body['row_count'], 'row')}, source sha256 {body['source']['sha256']}, "
        f"issued {body['issued_at']}"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; exit with the command's status, never with a traceback.

    Typer 0.29 runs on its own bundled click (``typer._click``): with
    ``standalone_mode=False`` a ``typer.Exit(n)`` comes back as the return value
    ``n``, and usage errors are typer's exceptions (:class:`typer.TyperException`),
    not the ``click`` package's.  Status: 0 success; 1 a command's own "something
    is wrong" (``audit verify``) or an abort; 2 a usage error (a ``Usage:`` line
    and ``Error: ...`` on stderr) or a :class:`SandboxError` (``error[code]: ...``).
    """
    try:
        status = app(args=argv, prog_name="sandbox", standalone_mode=False)
    except SandboxError as exc:
        rule = f" (rule: {exc.rule})" if exc.rule else ""
        typer.echo(f"error[{exc.code}]: {exc.message}{rule}", err=True)
        raise SystemExit(2) from None
    except typer.TyperException as exc:  # usage errors: MissingParameter, NoSuchOption, ...
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"Error: {exc.format_message()}", err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        raise SystemExit(1) from None
    if isinstance(status, int) and not isinstance(status, bool) and status != 0:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
