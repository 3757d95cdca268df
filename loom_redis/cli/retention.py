"""Retention: keep a workflow's history before it expires (`loom history export`), and
delete closed workflows by hand (`loom prune`)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import IO

import click

from ..events import Status
from ._common import (
    duration,
    loom_status,
    namespace_option,
    shown,
    url_option,
    with_client,
)


@click.group()
def history() -> None:
    """A workflow's history."""


@history.command()
@click.argument("workflow_id")
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="Write to this file (default: standard output).",
)
@url_option
@namespace_option
def export(workflow_id: str, output: IO[str], url: str | None, namespace: str | None) -> None:
    """Write a workflow's history as JSON lines, one event a line, payloads decoded
    (to keep it past its retention)."""
    entries = with_client(url, namespace, lambda client: client.history_entries(workflow_id))
    for entry in entries:
        output.write(json.dumps(entry, default=str) + "\n")


@click.command()
@click.option(
    "--older-than",
    callback=duration,
    required=True,
    help="Delete workflows closed longer ago than this (30s, 15m, 12h, 7d).",
)
@click.option(
    "-s",
    "--status",
    type=click.Choice([*(s for s in Status if s.is_terminal), "CANCELED"], case_sensitive=False),
    callback=loom_status,
    default=None,
    help="Only closed workflows of this status.",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@url_option
@namespace_option
def prune(
    older_than: timedelta,
    status: str | None,
    dry_run: bool,
    url: str | None,
    namespace: str | None,
) -> None:
    """Delete closed workflows (history, meta, index entries) that closed more than
    --older-than ago. Open workflows are never deleted."""
    found = with_client(
        url,
        namespace,
        lambda client: client.prune(older_than, status=status, dry_run=dry_run),
    )
    if dry_run:
        for workflow_id, closed in found:
            click.echo(f"{shown(workflow_id)} {closed}")
    counts = Counter(closed for _, closed in found)
    done = "would delete" if dry_run else "deleted"
    by_status = ", ".join(f"{closed} {n}" for closed, n in sorted(counts.items()))
    click.echo(f"{done} {len(found)} workflow(s)" + (f" ({by_status})" if by_status else ""))
