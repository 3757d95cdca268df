"""The workers: `loom worker` runs one for the workflows and activities of the modules
it imports; `loom workers` lists the live ones from their heartbeats."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from ..client import default_namespace, default_url
from ..errors import LoomError, RedisAuthenticationError, RedisUnavailableError
from ..store import Store
from ..store.keys import validate_queue
from ..worker import Worker
from ._common import (
    error_message,
    json_option,
    namespace_option,
    run,
    shown,
    url_option,
    with_client,
)

MODULES_ENV = "LOOM_WORKER_MODULES"


def _worker_modules(modules: tuple[str, ...]) -> tuple[str, ...]:
    """The MODULES arguments, else those of LOOM_WORKER_MODULES (comma or space
    separated): a worker that registers nothing would dead-letter every task."""
    if modules:
        return modules
    listed = tuple(os.environ.get(MODULES_ENV, "").replace(",", " ").split())
    if not listed:
        raise click.UsageError(
            "no workflow modules: pass the modules that define your workflows and "
            f"activities (loom worker myapp.workflows) or set {MODULES_ENV} "
            "(comma or space separated)"
        )
    return listed


def _module_name(given: str) -> str:
    """The module to import for a MODULES item: a module name as it is, or the path of a
    .py file (greeting.py, ./flows/greeting.py), whose directory goes on sys.path (the
    directory above its package, when it is in one)."""
    if not (given.endswith(".py") or "/" in given or os.sep in given):
        return given
    path = Path(given)
    if path.suffix != ".py" or not path.is_file():
        suggestion = ".".join(p for p in path.with_suffix("").parts if p.isidentifier())
        raise click.ClickException(
            f"cannot import workflow module {given!r}: no such .py file; give the path of "
            f"a .py file or a module name, such as {suggestion!r}"
        )
    path = path.resolve()
    parts = [path.stem]
    directory = path.parent
    while (directory / "__init__.py").is_file():
        parts.insert(0, directory.name)
        directory = directory.parent
    sys.path.insert(0, str(directory))
    return ".".join(parts)


def _import_modules(modules: tuple[str, ...]) -> None:
    sys.path.insert(0, ".")
    for given in modules:
        module = _module_name(given)
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise click.ClickException(
                f"cannot import workflow module {given!r}: {type(exc).__name__}: {exc}"
            ) from None


def _check_queues(_ctx: Any, _param: Any, queues: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(validate_queue(queue) for queue in queues)
    except LoomError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("modules", nargs=-1)
@url_option
@namespace_option
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Tasks run at once (default 16).",
)
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Loom's name for --concurrency.",
)
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    callback=_check_queues,
    help="Task queue(s) (default 'default').",
)
@click.option(
    "-p",
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Longest wait of one blocking read, seconds.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds before a silent worker's task is taken over.",
)
@click.option(
    "--max-deliveries",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Deliveries before a task goes to the dead-letter stream.",
)
@click.option(
    "--on-nondeterminism",
    type=click.Choice(["fail", "suspend"]),
    default="fail",
    show_default=True,
    help="What a history the code cannot replay does.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Serve /metrics, /healthz and /readyz on this port.",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option(
    "--drain",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds SIGTERM waits for in-flight tasks before handing them back.",
)
@click.option(
    "--eager-seconds",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="How long a workflow task waits for the first activity it schedules, run at once "
    "on this worker, to write both in one commit (0: queue every activity).",
)
@click.option(
    "--unregistered-grace",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds a task for a workflow or activity that no live worker of its queue "
    "registers is handed back before it goes to the dead-letter stream.",
)
@click.option(
    "--wait-for-redis",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    envvar="LOOM_WAIT_FOR_REDIS",
    help="Seconds to keep trying to reach Redis at start (0: fail at once).",
)
def worker(
    modules: tuple[str, ...],
    url: str | None,
    namespace: str | None,
    concurrency: int | None,
    workers: int | None,
    queues: tuple[str, ...],
    poll_interval: float,
    lease: float,
    max_deliveries: int,
    on_nondeterminism: str,
    metrics_port: int | None,
    metrics_host: str,
    drain: float,
    eager_seconds: float,
    unregistered_grace: float,
    wait_for_redis: float,
) -> None:
    """Run a worker for the workflows and activities defined in MODULES (module names or
    .py paths; else env LOOM_WORKER_MODULES)."""
    _import_modules(_worker_modules(modules))

    async def go() -> bool:
        store = await _open_when_reachable(
            url or default_url(), namespace or default_namespace(), wait_for_redis
        )
        runner = Worker(
            store,
            queues=queues or ("default",),
            concurrency=concurrency or workers or 16,
            lease_seconds=lease,
            max_deliveries=max_deliveries,
            poll_interval=poll_interval,
            on_nondeterminism="suspend" if on_nondeterminism == "suspend" else "fail",
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            drain_seconds=drain,
            eager_seconds=eager_seconds,
            unregistered_grace_seconds=unregistered_grace,
        )

        signals: list[str] = []

        async def stop_on_signal() -> None:
            """The first signal drains; a second one hands the unfinished tasks back at
            once. The receiver stays open until the worker stops: a later Ctrl-C must not
            become click's KeyboardInterrupt ("Aborted!")."""
            log = logging.getLogger("loom_redis.worker")
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for signum in received:
                    signals.append(name := signal.Signals(signum).name)
                    if len(signals) == 1:
                        log.info(
                            "%s: draining (a second SIGINT or SIGTERM stops at once, handing "
                            "the unfinished tasks back)",
                            name,
                        )
                        runner.stop()
                    elif len(signals) == 2:
                        log.warning("%s again: handing the unfinished tasks back", name)
                        await runner.abort()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(stop_on_signal)
                await runner.run()
                group.cancel_scope.cancel()
        finally:
            await store.close()
        return len(signals) > 1

    if run(go):
        sys.exit(130)  # as a shell reports a process that Ctrl-C interrupted


async def _open_when_reachable(url: str, namespace: str, patience: float) -> Store:
    """Store.open, retried with back-off for up to `patience` seconds while Redis is
    unreachable (a worker started during a Redis outage waits instead of crash-looping).
    Wrong credentials and missing permissions fail at once."""
    deadline = anyio.current_time() + patience
    delay = 0.2
    while True:
        try:
            return await Store.open(url, namespace)
        except RedisUnavailableError as exc:
            if isinstance(exc, RedisAuthenticationError) or (
                anyio.current_time() + delay > deadline
            ):
                raise
            logging.getLogger("loom_redis.worker").warning(
                "%s; retrying in %.1fs", error_message(exc), delay
            )
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)


@click.command()
@url_option
@namespace_option
@json_option
@click.option(
    "--require-live",
    type=click.IntRange(min=1),
    default=None,
    help="Exit 1 unless at least N workers (of the --queue queues, if given) have a "
    "fresh heartbeat: a check for deploys and `helm test`.",
)
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    help="With --require-live: count these queues' workers.",
)
def workers(
    url: str | None,
    namespace: str | None,
    as_json: bool,
    require_live: int | None,
    queues: tuple[str, ...],
) -> None:
    """List the workers of the namespace from their heartbeats."""
    rows = with_client(url, namespace, lambda client: client.workers())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _show_workers(rows)
    if require_live is not None:
        live = with_client(url, namespace, lambda client: client.live_workers(queues))
        of = f" of queue(s) {', '.join(queues)}" if queues else ""
        click.echo(f"{len(live)} live worker(s){of}; at least {require_live} required", err=True)
        if len(live) < require_live:
            sys.exit(1)


def _show_workers(rows: list[dict[str, Any]]) -> None:
    now = dt.datetime.now(tz=dt.UTC).timestamp() * 1000
    click.echo(f"{'WORKER':<36} {'HOST':<20} {'PID':>7} {'QUEUES':<16} {'BUSY':>9} LAST SEEN")
    for row in rows:
        if "unreadable" in row:
            click.echo(f"{shown(row['name']):<36} unreadable: {shown(row['unreadable'])}")
            continue
        busy = f"{row['in_flight']}/{row['concurrency']}"
        seen = f"{(now - row['seen_ms']) / 1000:.0f}s ago"
        click.echo(
            f"{shown(row['name']):<36} {shown(row['host']):<20} {shown(row['pid']):>7} "
            f"{shown(','.join(row['queues'])):<16} {busy:>9} {seen}"
        )
        click.echo(
            f"  workflows: {shown(', '.join(row.get('workflows', ()))) or 'none'}; "
            f"activities: {shown(', '.join(row.get('activities', ()))) or 'none'}"
        )
