"""The `loom` command line: worker, init, list, inspect, stats, signal, cancel, dead."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from .. import __version__
from ..client import Client, default_namespace, default_url, format_time
from ..errors import LoomError, RedisAuthenticationError, RedisUnavailableError
from ..events import Status
from ..store import Store
from ..store.connection import mask_url
from ..store.keys import CONTROL_CHARACTERS, validate_queue
from ..worker import Worker

T = TypeVar("T")

url_option = click.option(
    "--url",
    envvar="LOOM_REDIS_URL",
    default=None,
    help="Redis URL (env LOOM_REDIS_URL, default redis://127.0.0.1:6379/0).",
)
namespace_option = click.option(
    "--namespace",
    envvar="LOOM_NAMESPACE",
    default=None,
    help="Namespace (env LOOM_NAMESPACE, default 'default').",
)
limit_option = click.option(
    "-l", "--limit", type=click.IntRange(min=1), default=50, show_default=True
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return anyio.run(fn)
    except LoomError as exc:
        raise click.ClickException(_message(exc)) from None
    except BaseExceptionGroup as group:
        # A loom error raised inside a task group (the worker's startup, e.g. a missing
        # ACL permission) is as clear an error as one raised outside: no traceback.
        matched, rest = group.split(LoomError)
        if matched is None or rest is not None:
            raise
        raise click.ClickException(_message(_first_leaf(matched))) from None


def _message(error: BaseException) -> str:
    """The error's message, in the words of the command line: where Python is told
    `url=`, a command is told `--url`. It may quote stored text (a failed workflow's
    error), so it is shown escaped."""
    if isinstance(error, RedisUnavailableError) and error.names_url:
        return shown(f"{error.reason}; {CLI_URL_HINT}")
    return shown(error)


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


CLI_URL_HINT = "pass --url or set LOOM_REDIS_URL"
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


@click.group()
@click.version_option(__version__, prog_name="loom-redis")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """loom-redis: durable workflows on Redis Streams."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
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

    _run(go)


def _check_queues(_ctx: Any, _param: Any, queues: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(validate_queue(queue) for queue in queues)
    except LoomError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
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

    if _run(go):
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
                "%s; retrying in %.1fs", _message(exc), delay
            )
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _client(url: str | None, namespace: str | None) -> Client:
    return Client(url or default_url(), namespace or default_namespace())


def shown(text: object) -> str:
    """Stored text as the CLI prints it: control characters written as escapes
    (`\\x1b`, `\\n`), so that an id, a name or a reason cannot clear the screen, move
    the cursor or break a row of a listing."""
    return CONTROL_CHARACTERS.sub(
        lambda found: found.group().encode("unicode_escape").decode(), str(text)
    )


def _when(ms: int | None) -> str:
    return format_time(ms) if ms else "-"


def _loom_status(_ctx: Any, _param: Any, status: str | None) -> str | None:
    # Loom spells it CANCELED.
    return str(Status.CANCELLED) if status == "CANCELED" else status


@main.command(name="list")
@url_option
@namespace_option
@click.option(
    "-s",
    "--status",
    type=click.Choice([*map(str, Status), "CANCELED"], case_sensitive=False),
    callback=_loom_status,
    default=None,
    help="Only this status (any case).",
)
@limit_option
@json_option
def list_(
    url: str | None, namespace: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """List the most recently started workflows."""

    async def go() -> list[dict[str, Any]]:
        async with _client(url, namespace) as client:
            return await client.list_workflows(status=status, limit=limit)

    rows = _run(go)
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
            f"{_read(row['status']):<10} {step:<7} {_when(row['started_ms'])}{spoilt}"
        )


def _read(value: Any) -> str:
    """A field of `describe()` as printed: None is a stored value that cannot be read
    (its `unreadable` entry says why)."""
    return "unreadable" if value is None else shown(value)


@main.command()
@click.argument("workflow_id")
@url_option
@namespace_option
@click.option("--events/--no-events", default=False, help="Show the full event history.")
@json_option
def inspect(
    workflow_id: str, url: str | None, namespace: str | None, events: bool, as_json: bool
) -> None:
    """Show one workflow: status, step, result or error, and optionally its history."""

    async def go() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with _client(url, namespace) as client:
            info = await client.describe(workflow_id)
            info["waiting"] = (await client.explain_wait(workflow_id)).reason
            history = await client.history_entries(workflow_id) if events else []
            return info, history

    info, history = _run(go)
    if as_json:
        click.echo(json.dumps({**info, "events": history}, default=str, indent=2))
        return
    for field in ("workflow_id", "workflow_name", "version", "status", "queue"):
        click.echo(f"{field:<16} {_read(info[field])}")
    for field in ("owner", "agent"):
        click.echo(f"{field:<16} {shown(info[field] or '-')}")
    step = f"{_read(info['current_step'])}/{_read(info['total_steps'])}"
    click.echo(f"{'step':<16} {step} {shown(info['step_name'] or '')}")
    click.echo(f"{'started':<16} {_when(info['started_ms'])}")
    click.echo(f"{'closed':<16} {_when(info['closed_ms'])}")
    for problem in info["unreadable"].values():
        click.echo(f"{'unreadable':<16} {shown(problem)}")
    if info["status"] is None or not Status(info["status"]).is_terminal:
        click.echo(f"{'waiting':<16} {shown(info['waiting'] or '-')}")
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
        click.echo(f"  {_when(event['time_ms'])} {seq!s:>4} {shown(event['type']):<26} {data}")


@main.command()
@url_option
@namespace_option
@json_option
def stats(url: str | None, namespace: str | None, as_json: bool) -> None:
    """Count workflows by status."""

    async def go() -> dict[str, int]:
        async with _client(url, namespace) as client:
            return await client.stats()

    counts = _run(go)
    if as_json:
        click.echo(json.dumps(counts, indent=2))
        return
    for status, count in counts.items():
        click.echo(f"{status:<10} {count}")


@main.command(name="signal")
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

    async def go() -> None:
        async with _client(url, namespace) as client:
            await client.signal(workflow_id, name, value)

    _run(go)
    click.echo(f"signal {name!r} sent to {shown(workflow_id)}")


@main.command()
@click.argument("workflow_id")
@click.option("--reason", default=None)
@url_option
@namespace_option
def cancel(workflow_id: str, reason: str | None, url: str | None, namespace: str | None) -> None:
    """Request cancellation of a workflow."""

    async def go() -> None:
        async with _client(url, namespace) as client:
            await client.cancel(workflow_id, reason)

    _run(go)
    click.echo(f"cancel requested for {shown(workflow_id)}")


@main.group()
def dead() -> None:
    """Tasks that went to the dead-letter stream: list them, put them back."""


@dead.command(name="list")
@url_option
@namespace_option
@limit_option
@json_option
def dead_list(url: str | None, namespace: str | None, limit: int, as_json: bool) -> None:
    """List dead-lettered tasks, newest first, with the reason each was moved."""

    async def go() -> list[dict[str, Any]]:
        async with _client(url, namespace) as client:
            return await client.dead_letters(limit)

    rows = _run(go)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'ID':<18} {'KIND':<9} {'WORKFLOW ID':<34} REASON")
    for row in rows:
        click.echo(
            f"{shown(row['id']):<18} {shown(row['kind']):<9} "
            f"{shown(row['workflow_id'] or '-'):<34} {shown(row['reason'])}"
        )


@dead.command(name="retry")
@click.argument("entry_ids", nargs=-1, required=True)
@url_option
@namespace_option
def dead_retry(entry_ids: tuple[str, ...], url: str | None, namespace: str | None) -> None:
    """Put dead-lettered tasks back on their queues (once their cause is fixed)."""

    async def go() -> list[tuple[str, str]]:
        async with _client(url, namespace) as client:
            outcomes = []
            for entry_id in entry_ids:
                try:
                    outcomes.append((entry_id, await client.redrive(entry_id)))
                except LookupError as exc:
                    outcomes.append((entry_id, str(exc)))
            return outcomes

    failed = False
    for entry_id, outcome in _run(go):
        click.echo(f"{shown(entry_id)}: {shown(outcome)}")
        failed = failed or outcome not in ("ok", "already-queued")
    if failed:
        raise SystemExit(1)


@main.command()
@url_option
@namespace_option
@json_option
def workers(url: str | None, namespace: str | None, as_json: bool) -> None:
    """List the workers of the namespace from their heartbeats."""

    async def go() -> list[dict[str, Any]]:
        async with _client(url, namespace) as client:
            return await client.workers()

    rows = _run(go)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
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
