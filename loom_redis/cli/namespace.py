"""The namespace: `loom init` checks the connection and creates it."""

from __future__ import annotations

import click

from ..client import default_namespace, default_url
from ..store import Store
from ..store.connection import mask_url
from ._common import namespace_option, run, url_option


@click.command()
@url_option
@namespace_option
@click.option("--shards", type=int, default=None, help="Shard count of a new namespace (16).")
def init(url: str | None, namespace: str | None, shards: int | None) -> None:
    """Check the Redis connection and create the namespace."""

    async def go() -> None:
        store = await Store.open(url or default_url(), namespace or default_namespace(), shards)
        click.echo(
            f"namespace {store.keys.namespace!r} ready on {mask_url(store.url)} "
            f"with {store.keys.shards} shards"
        )
        await store.close()

    run(go)
