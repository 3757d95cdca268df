"""The namespace: `loom init` checks the connection, creates it and sets its retention."""

from __future__ import annotations

from datetime import timedelta

import click

from ..client import default_namespace, default_url
from ..store import Store
from ..store.connection import mask_url
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
def init(
    url: str | None, namespace: str | None, shards: int | None, retention: timedelta | None
) -> None:
    """Check the Redis connection, create the namespace and set its retention."""

    async def go() -> None:
        store = await Store.open(url or default_url(), namespace or default_namespace(), shards)
        try:
            if retention is not None:
                await store.set_retention(round(retention.total_seconds() * 1000))
        finally:
            await store.close()
        click.echo(
            f"namespace {store.keys.namespace!r} ready on {mask_url(store.url)} "
            f"with {store.keys.shards} shards, retention {format_duration(store.retention_ms)}"
        )

    run(go)
