"""The `loom` command line: worker, init, list, inspect, stats, signal, cancel, dead,
history, prune.

One module per group of commands, as `loom --help` reads: `namespace` (init),
`worker` (worker, workers), `workflows` (list, inspect, stats, signal, cancel),
`dead_letters` (dead list, dead retry) and `retention` (history export, prune);
`_common` holds what they share."""

from __future__ import annotations

import logging

import click

from .. import __version__
from . import dead_letters, namespace, retention, worker, workflows

__all__ = ["main"]


@click.group()
@click.version_option(__version__, prog_name="loom-redis")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """loom-redis: durable workflows on Redis Streams."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
):
    main.add_command(command)
