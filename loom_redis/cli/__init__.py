"""The `loom` command line: worker, init, list, inspect, stats, signal, cancel, dead,
history, prune, web, acl.

One module per group of commands, as `loom --help` reads: `namespace` (init),
`worker` (worker, workers), `workflows` (list, inspect, stats, signal, cancel),
`dead_letters` (dead list, dead retry), `retention` (history export, prune), `web` and
`acl` (acl rules, acl apply); `_common` holds what they share."""

from __future__ import annotations

import os

import click

from .. import __version__
from ..logs import LogFormat, configure
from ..store.cluster import CLUSTER_ENV
from ..store.replication import DURABILITIES, DURABILITY_ENV
from . import acl, dead_letters, namespace, retention, web, worker, workflows

__all__ = ["main"]


@click.group()
@click.version_option(__version__, prog_name="loom-redis")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="LOOM_LOG_FORMAT",
    help="Log lines as text, or as JSON objects carrying each task's workflow id and "
    "name, step, activity and attempt (env LOOM_LOG_FORMAT).",
)
@click.option(
    "--cluster",
    is_flag=True,
    envvar=CLUSTER_ENV,
    help="The Redis URL names a Redis Cluster, by one or more of its nodes (as a "
    "redis+cluster:// URL does; env LOOM_REDIS_CLUSTER).",
)
@click.option(
    "--durability",
    type=click.Choice(DURABILITIES),
    envvar=DURABILITY_ENV,
    help="When a transition counts as written: once its master has it (async, the "
    "default), or once a replica has it too (replicated); env LOOM_DURABILITY.",
)
def main(verbose: bool, log_format: LogFormat, cluster: bool, durability: str | None) -> None:
    """loom-redis: durable workflows on Redis Streams."""
    configure(verbose=verbose, log_format=log_format)
    # Both read where every command connects (the store's connect_redis, Store.open).
    if cluster:
        os.environ[CLUSTER_ENV] = "1"
    if durability:
        os.environ[DURABILITY_ENV] = durability


# Click lists the commands in alphabetical order, whatever the order they are added in.
for command in (
    namespace.init,
    worker.worker,
    worker.workers,
    workflows.list_,
    workflows.inspect,
    workflows.stats,
    workflows.signal_,
    workflows.cancel,
    dead_letters.dead,
    retention.history,
    retention.prune,
    web.web,
    acl.acl,
):
    main.add_command(command)
