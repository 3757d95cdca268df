"""The namespace: `loom init` checks the connection, creates it and sets its retention."""

from __future__ import annotations

from datetime import timedelta

import click

from ..client import default_namespace, default_url
from ..errors import ConfigurationError
from ..store import Store
from ..store.connection import mask_url
from ..store.keys import validate_queue
from ._common import duration, format_duration, namespace_option, run, url_option


@click.command()
@url_option
@namespace_option
@click.option("--shards", type=int, default=None, help="Shard count of a new namespace (16).")
@click.option(
    "--retention",
    callback=duration,
    default=None,
    help="How long closed workflows are kept, from their close (30s, 15m, 12h, 7d; "
    "7d for a new namespace). Also changes an existing namespace's.",
)
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    help="A task queue whose streams and consumer groups to create (repeatable), so that "
    "autoscalers and dashboards find them before any worker starts.",
)
def init(
    url: str | None,
    namespace: str | None,
    shards: int | None,
    retention: timedelta | None,
    queues: tuple[str, ...],
) -> None:
    """Check the Redis connection, create the namespace and set its retention."""
    for queue in queues:
        try:
            validate_queue(queue)
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint="--queue") from None

    async def go() -> None:
        store = await Store.open(url or default_url(), namespace or default_namespace(), shards)
        try:
            await store.ensure_groups(queues)
            if retention is not None:
                await store.set_retention(round(retention.total_seconds() * 1000))
        finally:
            await store.close()
        created = f" and queue(s) {', '.join(queues)}" if queues else ""
        click.echo(
            f"namespace {store.keys.namespace!r}{created} ready on {mask_url(store.url)} "
            f"with {store.keys.shards} shards, retention {format_duration(store.retention_ms)}"
        )

    run(go)
