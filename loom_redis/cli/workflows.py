"""The workflows: list them, inspect one, count them by status, signal or cancel one."""

from __future__ import annotations

import json
from typing import Any

import click

from ..client import Client
from ..events import Status
from ._common import (
    json_option,
    limit_option,
    loom_status,
    namespace_option,
    shown,
    url_option,
    when,
    with_client,
)


@click.command(name="list")
@url_option
@namespace_option
@click.option(
    "-s",
    "--status",
    type=click.Choice([*map(str, Status), "CANCELED"], case_sensitive=False),
    callback=loom_status,
    default=None,
    help="Only this status (any case).",
)
@limit_option
@json_option
def list_(
    url: str | None, namespace: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """List the most recently started workflows."""
    rows = with_client(
        url, namespace, lambda client: client.list_workflows(status=status, limit=limit)
    )
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    click.echo(f"{'WORKFLOW ID':<34} {'NAME':<22} {'STATUS':<10} {'STEP':<7} STARTED")
    for row in rows:
        step = f"{_read(row['current_step'])}/{_read(row['total_steps'])}"
        # Which fields cannot be read (`loom inspect` says why).
        spoilt = f"  unreadable: {', '.join(row['unreadable'])}" if row["unreadable"] else ""
        click.echo(
            f"{shown(row['workflow_id']):<34} {_read(row['workflow_name']):<22} "
            f"{_read(row['status']):<10} {step:<7} {when(row['started_ms'])}{spoilt}"
        )


def _read(value: Any) -> str:
    """A field of `describe()` as printed: None is a stored value that cannot be read
    (its `unreadable` entry says why)."""
    return "unreadable" if value is None else shown(value)


@click.command()
@click.argument("workflow_id")
@url_option
@namespace_option
@click.option("--events/--no-events", default=False, help="Show the full event history.")
@json_option
def inspect(
    workflow_id: str, url: str | None, namespace: str | None, events: bool, as_json: bool
) -> None:
    """Show one workflow: status, step, result or error, and optionally its history."""

    async def read(client: Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        info = await client.describe(workflow_id)
        info["waiting"] = (await client.explain_wait(workflow_id)).reason
        history = await client.history_entries(workflow_id) if events else []
        return info, history

    info, history = with_client(url, namespace, read)
    if as_json:
        click.echo(json.dumps({**info, "events": history}, default=str, indent=2))
        return
    for field in ("workflow_id", "workflow_name", "version", "status", "queue"):
        click.echo(f"{field:<16} {_read(info[field])}")
    for field in ("owner", "agent"):
        click.echo(f"{field:<16} {shown(info[field] or '-')}")
    step = f"{_read(info['current_step'])}/{_read(info['total_steps'])}"
    click.echo(f"{'step':<16} {step} {shown(info['step_name'] or '')}")
    click.echo(f"{'started':<16} {when(info['started_ms'])}")
    click.echo(f"{'closed':<16} {when(info['closed_ms'])}")
    for problem in info["unreadable"].values():
        click.echo(f"{'unreadable':<16} {shown(problem)}")
    if info["status"] is None or not Status(info["status"]).is_terminal:
        click.echo(f"{'waiting':<16} {shown(info['waiting'] or '-')}")
    if info["dead_letter"]:
        # What an open workflow that moves no more may be waiting for: its task.
        entry = shown(info["dead_letter"])
        click.echo(
            f"{'dead letter':<16} {entry} (its task: loom dead list, loom dead retry {entry})"
        )
    click.echo(f"{'input':<16} {json.dumps(info['input'], default=str)}")
    if info["result"] is not None:
        click.echo(f"{'result':<16} {json.dumps(info['result'], default=str)}")
    if info["error"]:
        error = info["error"]
        if "type" in error:
            click.echo(
                f"{'error':<16} {shown(error.get('type', ''))}: {shown(error.get('message', ''))}"
            )
        else:  # a cancellation's record holds only its reason
            click.echo(f"{'cancelled':<16} {shown(error.get('reason') or 'no reason given')}")
    for event in history:
        if event["type"] == "UNREADABLE":
            click.echo(f"  {'-':<23} {'':>4} {'unreadable':<26} {shown(event['problem'])}")
            continue
        data = json.dumps(event["data"], default=str)
        if len(data) > 100:
            data = data[:97] + "..."
        seq = event["seq"] or ""
        click.echo(f"  {when(event['time_ms'])} {seq!s:>4} {shown(event['type']):<26} {data}")


@click.command()
@url_option
@namespace_option
@json_option
def stats(url: str | None, namespace: str | None, as_json: bool) -> None:
    """Count workflows by status."""
    counts = with_client(url, namespace, lambda client: client.stats())
    if as_json:
        click.echo(json.dumps(counts, indent=2))
        return
    for status, count in counts.items():
        click.echo(f"{status:<10} {count}")


@click.command(name="signal")
@click.argument("workflow_id")
@click.argument("name")
@click.argument("payload", required=False, default="null")
@url_option
@namespace_option
def signal_(
    workflow_id: str, name: str, payload: str, url: str | None, namespace: str | None
) -> None:
    """Send signal NAME with a JSON PAYLOAD to a workflow."""
    try:
        value = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"payload is not JSON: {exc}") from None

    with_client(url, namespace, lambda client: client.signal(workflow_id, name, value))
    click.echo(f"signal {name!r} sent to {shown(workflow_id)}")


@click.command()
@click.argument("workflow_id")
@click.option("--reason", default=None)
@url_option
@namespace_option
def cancel(workflow_id: str, reason: str | None, url: str | None, namespace: str | None) -> None:
    """Request cancellation of a workflow."""
    with_client(url, namespace, lambda client: client.cancel(workflow_id, reason))
    click.echo(f"cancel requested for {shown(workflow_id)}")
