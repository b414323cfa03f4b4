"""``sandbox account`` and ``sandbox token``: accounts, operator licences and API tokens.

Tokens go only to their own account: ``token issue`` asks for one with a token the
account holds, ``token enrol`` (admin) issues a one-time code that the account's
holder redeems with ``token redeem``.  Nobody, the host console included, gets a
token of another account.  ``token redeem`` makes the token on the holder's machine
and sends only its SHA-256; a code an admin account issued then waits for a second
administrator's ``token approve`` with the fingerprint the holder reads to them.
"""

from datetime import datetime, timedelta
from typing import Annotated

import typer

from sandbox.cli.common import JsonOpt, TokenOpt, choice, echo_json, moment, services
from sandbox.core.errors import InvalidInput

__all__ = ["account_app", "token_app"]

account_app = typer.Typer(help="Accounts and operator licences (admin).", no_args_is_help=True)
token_app = typer.Typer(
    help="API tokens: your own (issue), enrolment codes (enrol and approve, admin; redeem), "
    "revoke (admin).",
    no_args_is_help=True,
)


# -- accounts --------------------------------------------------------------------------------


@account_app.command("create")
def account_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Account name, e.g. op-bank.")],
    role: Annotated[str, typer.Option(help="operator, bureau, auditor or admin.")],
    organisation: Annotated[str, typer.Option("--org", help="Organisation name.")],
    domain: Annotated[list[str] | None, typer.Option(help="A bureau's domain (repeat).")] = None,
    licence_number: Annotated[str | None, typer.Option(help="Operator licence number.")] = None,
    licence_valid_until: Annotated[
        str | None, typer.Option(help="Operator licence end (YYYY-MM-DD).")
    ] = None,
    token: TokenOpt = None,
) -> None:
    """Create an account (operators need a licence, bureaus a domain)."""
    from policies.actors import Licence, Role

    kind = choice(Role, role, "--role")
    licence = None
    if licence_number or licence_valid_until:
        if not (licence_number and licence_valid_until):
            raise InvalidInput("a licence needs a number and an end date", rule="cli.licence")
        licence = Licence(
            number=licence_number, valid_until=moment(licence_valid_until, "licence end")
        )
    with services(ctx.obj, token) as (admin, actor):
        account = admin.create_account(
            actor, name, role=kind, organisation=organisation, domains=domain or (), licence=licence
        )
    typer.echo(f"created {account.role.value} account {account.name}")


@account_app.command("list")
def account_list(ctx: typer.Context, as_json: JsonOpt = False, token: TokenOpt = None) -> None:
    """Every account, with role, domains, status and licence."""
    with services(ctx.obj, token) as (admin, actor):
        found = admin.list_accounts(actor)
    if as_json:
        echo_json([a.to_dict() for a in found])
        return
    for a in found:
        extra = ",".join(a.domains)
        if a.licence is not None:
            lic = a.licence
            extra = f"licence {lic.number} {lic.status.value} until {lic.valid_until:%Y-%m-%d}"
        flags = " FROZEN" if a.frozen else ""
        typer.echo(
            f"{a.name:<20} {a.role.value:<9} {a.status.value:<9} {extra}{flags}  {a.organisation}"
        )


@account_app.command("disable")
def account_disable(
    ctx: typer.Context,
    name: str,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail).")] = "",
    token: TokenOpt = None,
) -> None:
    """Disable an account: its tokens stop working at once."""
    with services(ctx.obj, token) as (admin, actor):
        admin.disable_account(actor, name, reason=reason)
    typer.echo(f"disabled {name}")


@account_app.command("licence")
def account_licence(
    ctx: typer.Context,
    name: str,
    status: Annotated[str | None, typer.Option(help="active, suspended, withdrawn.")] = None,
    number: Annotated[str | None, typer.Option(help="New licence number.")] = None,
    valid_until: Annotated[str | None, typer.Option(help="New end date (YYYY-MM-DD).")] = None,
    token: TokenOpt = None,
) -> None:
    """Change an operator's licence (准入与退出)."""
    from policies.actors import LicenceStatus

    state = choice(LicenceStatus, status, "--status") if status is not None else None
    until = moment(valid_until, "valid until") if valid_until else None
    with services(ctx.obj, token) as (admin, actor):
        account = admin.set_licence(actor, name, number=number, valid_until=until, status=state)
    assert account.licence is not None
    typer.echo(f"{name}: licence {account.licence.number} {account.licence.status.value}")


# -- tokens ----------------------------------------------------------------------------------


@token_app.command("issue")
def token_issue(
    ctx: typer.Context,
    account: Annotated[
        str | None, typer.Argument(help="Your own account (the default); no other.")
    ] = None,
    days: Annotated[float, typer.Option(help="Lifetime in days (at most 366).")] = 90,
    label: Annotated[str, typer.Option(help="A note, e.g. where it is used.")] = "",
    replace: Annotated[
        bool, typer.Option("--replace", help="Revoke the token you ask with.")
    ] = False,
    token: TokenOpt = None,
) -> None:
    """A new token for your own account, asked for with --token (printed once, stored hashed).

    Refused for any other account (rule token.not_own), the host console's requests
    included: an account without a token enrols with a code (``sandbox token enrol``).
    """
    with services(ctx.obj, token) as (admin, actor):
        issued = admin.issue_token(
            actor, account, ttl=timedelta(days=days), label=label, replace_current=replace
        )
    typer.echo(
        f"token id {issued.id} for {issued.account}, expires {issued.expires_at:%Y-%m-%d %H:%M}Z"
    )
    typer.echo(issued.token)


@token_app.command("enrol")
def token_enrol(
    ctx: typer.Context,
    account: str,
    hours: Annotated[float, typer.Option(help="How long the code is valid (at most 168).")] = 24,
    days: Annotated[float, typer.Option(help="Lifetime of the token it gives.")] = 90,
    label: Annotated[str, typer.Option(help="A note for the token.")] = "",
    token: TokenOpt = None,
) -> None:
    """A one-time enrolment code for an account (admin): give it to the account's holder,
    who redeems it for the token (``sandbox token redeem`` or ``POST /v1/enrol``)."""
    with services(ctx.obj, token) as (admin, actor):
        issued = admin.issue_enrolment(
            actor,
            account,
            ttl=timedelta(hours=hours),
            token_ttl=timedelta(days=days),
            label=label,
        )
    typer.echo(
        f"enrolment {issued.id} for {account}, single-use, "
        f"valid until {issued.expires_at:%Y-%m-%d %H:%M}Z"
    )
    if issued.needs_approval:
        typer.echo(
            "its token needs a second administrator's approval "
            f"(sandbox token approve {issued.id} --fingerprint …)"
        )
    typer.echo(issued.code)


@token_app.command("redeem")
def token_redeem(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(envvar="SANDBOX_ENROLMENT_CODE", help="The sbe_ code.")],
    url: Annotated[
        str | None, typer.Option(envvar="SANDBOX_URL", help="Redeem through this server.")
    ] = None,
) -> None:
    """Redeem an enrolment code for your account's token: the token is made here and only
    its SHA-256 is sent.  An admin account's code then waits for a second administrator,
    to whom you read the fingerprint printed; the token works once they approve."""
    from policies.bearer import new_secret
    from policies.tokens import TOKEN_PREFIX, hash_token

    token = new_secret(TOKEN_PREFIX)
    digest = hash_token(token)
    assert digest is not None
    if url is not None:
        from sandbox.client import SandboxClient

        answer = SandboxClient.redeem(url, code, token_sha256=digest)
        enrolment, account = answer["enrolment"], answer["account"]
        token_id, shown, expires = answer["id"], answer["fingerprint"], answer["expires_at"]
    else:
        with services(ctx.obj, None) as (admin, _host):
            redeemed = admin.redeem_with_token(code, digest)
        enrolment, account, shown = redeemed.enrolment, redeemed.account, redeemed.fingerprint
        token_id = redeemed.token.id if redeemed.token else None
        expires = redeemed.token.expires_at.isoformat() if redeemed.token else None
    if token_id is None or expires is None:
        typer.echo(f"enrolment {enrolment} for {account} waits for a second administrator:")
        typer.echo(f"read them this fingerprint: {shown}")
        typer.echo("your token (it works once they approve; keep it, it is shown only here):")
    else:
        until = datetime.fromisoformat(expires)
        typer.echo(f"token id {token_id} for {account}, expires {until:%Y-%m-%d %H:%M}Z")
    typer.echo(token)


@token_app.command("approve")
def token_approve(
    ctx: typer.Context,
    enrolment: Annotated[str, typer.Argument(help="The enrolment id (en_…).")],
    fingerprint: Annotated[
        str, typer.Option(help="As the holder read it to you (XXXX-XXXX-XXXX-XXXX).")
    ],
    token: TokenOpt = None,
) -> None:
    """Approve a redeemed enrolment as the second administrator (admin; never the code's
    issuer): the holder's own token then works.  Check who reads you the fingerprint."""
    with services(ctx.obj, token) as (admin, actor):
        issued = admin.approve_enrolment(actor, enrolment, fingerprint)
    typer.echo(
        f"approved {enrolment}: token id {issued.id} for {issued.account}, "
        f"expires {issued.expires_at:%Y-%m-%d %H:%M}Z"
    )


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: str, token: TokenOpt = None) -> None:
    """Revoke a token by its id (tk_...)."""
    with services(ctx.obj, token) as (admin, actor):
        record = admin.revoke_token(actor, token_id)
    typer.echo(f"revoked {record.id} of {record.account}")
