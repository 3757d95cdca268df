"""Redis ACL users: `loom acl rules` prints a role's rules, `loom acl apply` sets them on
every node of a server (the store's acl.py holds the rules)."""

from __future__ import annotations

import os

import click

from ..errors import ConfigurationError
from ..store.acl import ROLES, AclUser, Role, apply_user
from ._common import run, shown


@click.group()
def acl() -> None:
    """Redis ACL users for workers and dashboards, of one namespace or all."""


def _user(role: Role, namespace: str | None, user: str | None, password_env: str | None) -> AclUser:
    """The user the options name; a missing password variable is the option's error."""
    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if not password:
            raise click.BadParameter(
                f"the environment variable {password_env} is not set or empty",
                param_hint="--password-env",
            )
    name = user or "-".join(["loom", role, *([namespace] if namespace else [])])
    try:
        return AclUser(name, role, namespace, password)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None


role_option = click.option(
    "--role",
    type=click.Choice(ROLES),
    required=True,
    help="worker: workers and producers (start, signal, cancel, run); dashboard: read "
    "only (list, inspect, stats, progress, loom web).",
)
# No environment variable: LOOM_NAMESPACE names where a process works, not whom to confine.
confined_option = click.option(
    "--namespace",
    default=None,
    help="Confine the user to this namespace's keys (default: every namespace's, ~loom:*).",
)
user_option = click.option(
    "--user",
    default=None,
    help="The Redis user's name (default loom-<role>, or loom-<role>-<namespace>).",
)


@acl.command()
@role_option
@confined_option
@user_option
@click.option(
    "--password-env",
    metavar="VAR",
    default=None,
    help="The environment variable holding the user's password; the rules then carry "
    "its SHA-256 (#...), not the password. Without it they show >PASSWORD.",
)
@click.option(
    "--client-setinfo",
    is_flag=True,
    help="Add +client|setinfo, for Redis >= 7.2 and Valkey (Redis 7.0 refuses the rule).",
)
@click.option(
    "--aclfile", is_flag=True, help="Print a line of an ACL file, not an ACL SETUSER command."
)
def rules(
    role: Role,
    namespace: str | None,
    user: str | None,
    password_env: str | None,
    client_setinfo: bool,
    aclfile: bool,
) -> None:
    """Print the ACL rules of a role's user (docs/security.md shows them)."""
    acl_user = _user(role, namespace, user, password_env)
    if aclfile:
        click.echo(acl_user.aclfile_line(client_setinfo=client_setinfo))
    else:
        click.echo(acl_user.setuser(client_setinfo=client_setinfo))


@acl.command()
@role_option
@confined_option
@user_option
@click.option(
    "--password-env",
    metavar="VAR",
    required=True,
    help="The environment variable holding the user's password.",
)
@click.option(
    "--admin-url",
    envvar="LOOM_ADMIN_REDIS_URL",
    required=True,
    help="The URL of a Redis user that may run ACL SETUSER (env LOOM_ADMIN_REDIS_URL); "
    "a cluster's (redis+cluster://, or --cluster) sets the user on every node.",
)
def apply(
    role: Role, namespace: str | None, user: str | None, password_env: str, admin_url: str
) -> None:
    """Set a role's user on the server, or on every master and replica of a cluster.

    ACLs are per node and kept in memory: a node added later needs the user too, and a
    server restarted forgets it unless its aclfile or config has it (ACL SAVE)."""
    acl_user = _user(role, namespace, user, password_env)
    outcomes = run(lambda: apply_user(admin_url, acl_user))
    for outcome in outcomes:
        where = f"{outcome.address} ({outcome.kind}"
        where += f", {outcome.version})" if outcome.version else ")"
        if outcome.error is None:
            setinfo = ", with +client|setinfo" if outcome.client_setinfo else ""
            click.echo(f"{where}: user {acl_user.name} set{setinfo}")
        else:
            click.echo(f"{where}: {shown(outcome.error)}", err=True)
    if any(outcome.error is not None for outcome in outcomes):
        raise SystemExit(1)
