"""What every command shares: the --url/--namespace/--limit/--json options, durations,
running a command's coroutine with loom errors as command-line errors, and stored text
as printed."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import click

from ..client import Client, default_namespace, default_url, format_time
from ..errors import LoomError, RedisUnavailableError
from ..events import Status
from ..store.keys import CONTROL_CHARACTERS

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

CLI_URL_HINT = "pass --url or set LOOM_REDIS_URL"

# Seconds in each unit a duration may end with (none: seconds).
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def duration(_ctx: Any, _param: Any, value: str | None) -> timedelta | None:
    """A duration option's callback: `30s`, `15m`, `12h` or `7d` (a bare number is
    seconds) as a timedelta; click's error names the option and the value otherwise."""
    if value is None:
        return None
    found = _DURATION.fullmatch(value.strip())
    if not found:
        raise click.BadParameter(
            f"{value!r} is not a duration: write a number of seconds or a number with "
            "a unit, such as 30s, 15m, 12h or 7d"
        )
    return timedelta(seconds=float(found[1]) * DURATION_UNITS[found[2]])


def format_duration(ms: int) -> str:
    """A duration as `loom init --retention` takes it, in the largest unit that fits."""
    seconds = ms / 1000
    for unit in ("d", "h", "m", "s"):
        if seconds >= DURATION_UNITS[unit] and seconds % DURATION_UNITS[unit] == 0:
            return f"{int(seconds // DURATION_UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def loom_status(_ctx: Any, _param: Any, status: str | None) -> str | None:
    """A --status option's callback: Loom spells CANCELLED as CANCELED."""
    return str(Status.CANCELLED) if status == "CANCELED" else status


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; a loom error becomes the command's error message."""
    try:
        return anyio.run(fn)
    except LoomError as exc:
        raise click.ClickException(error_message(exc)) from None
    except BaseExceptionGroup as group:
        # A loom error raised inside a task group (the worker's startup, e.g. a missing
        # ACL permission) is as clear an error as one raised outside: no traceback.
        matched, rest = group.split(LoomError)
        if matched is None or rest is not None:
            raise
        raise click.ClickException(error_message(_first_leaf(matched))) from None


def error_message(error: BaseException) -> str:
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


def with_client(
    url: str | None, namespace: str | None, request: Callable[[Client], Awaitable[T]]
) -> T:
    """Run `request` with a client of --url and --namespace (else of their environment
    and defaults), as `run` does."""

    async def go() -> T:
        async with Client(url or default_url(), namespace or default_namespace()) as client:
            return await request(client)

    return run(go)


def shown(text: object) -> str:
    """Stored text as the CLI prints it: control characters written as escapes
    (`\\x1b`, `\\n`), so that an id, a name or a reason cannot clear the screen, move
    the cursor or break a row of a listing."""
    return CONTROL_CHARACTERS.sub(
        lambda found: found.group().encode("unicode_escape").decode(), str(text)
    )


def when(ms: int | None) -> str:
    """A time in milliseconds as printed; '-' for none."""
    return format_time(ms) if ms else "-"
