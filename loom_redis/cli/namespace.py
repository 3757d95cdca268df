"""The namespace: `loom init` checks the connection and creates it."""

from __future__ import annotations

import click

from ..client import default_namespace, default_url
from ..errors import ConfigurationError
from ..store import Store
from ..store.connection import mask_url
from ..store.keys import validate_queue
from ._common import namespace_option, run, url_option


@click.command()
@url_option
@namespace_option
@click.option("--shards", type=int, default=None, help="Shard count of a new namespace (16).")
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    help="A task queue whose streams and consumer groups to create (repeatable), so that "
    "autoscalers and dashboards find them before any worker starts.",
)
def init(
    url: str | None, namespace: str | None, shards: int | None, queues: tuple[str, ...]
) -> None:
    """Check the Redis connection and create the namespace."""
    for queue in queues:
        try:
            validate_queue(queue)
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint="--queue") from None

    async def go() -> None:
        store = await Store.open(url or default_url(), namespace or default_namespace(), shards)
        try:
            await store.ensure_groups(queues)
        finally:
            await store.close()
        created = f" and queue(s) {', '.join(queues)}" if queues else ""
        click.echo(
            f"namespace {store.keys.namespace!r}{created} ready on {mask_url(store.url)} "
            f"with {store.keys.shards} shards"
        )

    run(go)
