"""The dead-letter stream: `loom dead list` shows what went there and why, `loom dead
retry` puts tasks back on their queues."""

from __future__ import annotations

import json

import click

from ..client import Client
from ..store.wire import Reply
from ._common import json_option, limit_option, namespace_option, shown, url_option, with_client


@click.group()
def dead() -> None:
    """Tasks that went to the dead-letter stream: list them, put them back."""


@dead.command(name="list")
@url_option
@namespace_option
@limit_option
@json_option
def dead_list(url: str | None, namespace: str | None, limit: int, as_json: bool) -> None:
    """List dead-lettered tasks, newest first, with the reason each was moved."""
    rows = with_client(url, namespace, lambda client: client.dead_letters(limit))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'ID':<18} {'KIND':<9} {'WORKFLOW ID':<34} REASON")
    for row in rows:
        click.echo(
            f"{shown(row['id']):<18} {shown(row['kind']):<9} "
            f"{shown(row['workflow_id'] or '-'):<34} {shown(row['reason'])}"
        )


@dead.command(name="retry")
@click.argument("entry_ids", nargs=-1, required=True)
@url_option
@namespace_option
def dead_retry(entry_ids: tuple[str, ...], url: str | None, namespace: str | None) -> None:
    """Put dead-lettered tasks back on their queues (once their cause is fixed)."""

    async def redrive(client: Client) -> list[tuple[str, str]]:
        outcomes = []
        for entry_id in entry_ids:
            try:
                outcomes.append((entry_id, await client.redrive(entry_id)))
            except LookupError as exc:
                outcomes.append((entry_id, str(exc)))
        return outcomes

    failed = False
    for entry_id, outcome in with_client(url, namespace, redrive):
        click.echo(f"{shown(entry_id)}: {shown(outcome)}")
        failed = failed or outcome not in (Reply.OK, Reply.ALREADY_QUEUED)
    if failed:
        raise SystemExit(1)
