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
            spread = store.shards_per_master()
        finally:
            await store.close()
        created = f" and queue(s) {', '.join(queues)}" if queues else ""
        click.echo(
            f"namespace {store.keys.namespace!r}{created} ready on {mask_url(store.url)} "
            f"with {store.keys.shards} shards, retention {format_duration(store.retention_ms)}"
        )
        if len(spread) > 1:
            _echo_spread(spread, store.keys.shards)

    run(go)


# A master serving more than this many times its even share of the shards does as
# much more of the work, and saturates first.
UNEVEN = 1.25


def _echo_spread(spread: dict[str, int], shards: int) -> None:
    """Say how the shards fall on a cluster's masters, and warn of an uneven spread."""
    listed = ", ".join(f"{name} {count}" for name, count in sorted(spread.items()))
    busiest = max(spread.values()) / shards
    click.echo(f"shards per master: {listed} (the busiest serves {busiest:.0%} of them)")
    if busiest > UNEVEN / len(spread):
        click.echo(
            f"warning: the {shards} shards fall unevenly on the {len(spread)} masters, and "
            "the busiest saturates first; a namespace for a cluster wants several times as "
            "many shards as masters (loom init --shards 64 on a new namespace; the count "
            "is fixed at creation)",
            err=True,
        )
