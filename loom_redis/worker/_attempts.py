"""One attempt of an activity: the user's function run, and what is to be written of
it (its result or error, or the retry of the next attempt)."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from ..codec import decode, encode
from ..engine import clip
from ..errors import PayloadError
from ..events import USER_VALUES, Event, EventType
from ..logs import about_task
from ..metrics import ACTIVITY_SECONDS, labelled
from ..store import Task
from ..store.connection import now_ms
from ..store.wire import TaskField

logger = logging.getLogger("loom_redis.worker")


@dataclass(frozen=True)
class Attempt:
    """What one attempt of an activity came to: an outcome to record (`encoded`: its
    result or error as it is written), or, with attempts left after a failure, the next
    one's due time."""

    number: int
    failed: bool
    encoded: bytes = b""
    retry_due_ms: int | None = None

    def outcome_event(self, seq: int) -> Event:
        """The outcome as the event a replay of the history will apply (decoded from
        what is written), for an instance this worker holds."""
        event_type = EventType.ACTIVITY_FAILED if self.failed else EventType.ACTIVITY_COMPLETED
        return Event("", event_type, seq, now_ms(), decode(self.encoded))


def scheduled_activity(task: Task) -> dict[str, Any]:
    """What an activity task asks for (name, args, kwargs, timeout, retry policy)."""
    scheduled = decode(task.fields.get(TaskField.PAYLOAD), what=f"activity task {task.id}")
    if not isinstance(scheduled, dict) or "name" not in scheduled:
        raise PayloadError(f"activity task {task.id} of workflow {task.workflow_id!r} has no name")
    return scheduled


def attempt_number(task: Task) -> int:
    """Which attempt of its activity an activity task is (1 for the first)."""
    return int(task.fields.get(TaskField.ATTEMPT, b"1"))


async def run_attempt(task: Task, scheduled: dict[str, Any], fn: Any) -> Attempt:
    """Run one attempt of the activity and say what is to be written."""
    name = str(scheduled["name"])
    attempt = attempt_number(task)
    timeout = scheduled.get("timeout_seconds")
    started = time.perf_counter()
    # Its records, the activity code's included, carry the activity and attempt (run at
    # once for a workflow task, the attempt shares that task's context).
    with about_task(activity=name, attempt=attempt):
        try:
            call = _call(fn, scheduled.get("args") or [], scheduled.get("kwargs") or {})
            if timeout is None:
                result = await call
            else:
                with anyio.fail_after(timeout):
                    result = await call
            # The whole record, as it will be written: a result that cannot be written
            # fails the activity here, with a clear error, instead of leaving its task in
            # limbo.
            data = {"result": result, "attempts": attempt}
            encoded = encode(
                data,
                what=f"result of activity {name!r}",
                carries=USER_VALUES[EventType.ACTIVITY_COMPLETED],
            )
        except Exception as exc:
            labelled(ACTIVITY_SECONDS, name, "failed").observe(time.perf_counter() - started)
            if isinstance(exc, TimeoutError) and timeout is not None:
                message = f"timed out after {timeout:g}s"
            else:
                message = clip(f"{type(exc).__name__}: {exc}")
            return _failed_attempt(task, scheduled, attempt, exc, message)
    labelled(ACTIVITY_SECONDS, name, "completed").observe(time.perf_counter() - started)
    return Attempt(attempt, failed=False, encoded=encoded)


def _failed_attempt(
    task: Task,
    scheduled: dict[str, Any],
    attempt: int,
    error: Exception,
    message: str,
) -> Attempt:
    name = scheduled["name"]
    max_attempts = int(scheduled.get("retry_count") or 0) + 1
    if attempt < max_attempts:
        delay = float(scheduled.get("retry_backoff_seconds", 1.0)) * float(
            scheduled.get("backoff_multiplier", 2.0)
        ) ** (attempt - 1)
        delay = min(delay, float(scheduled.get("max_backoff_seconds", 60.0)))
        logger.warning(
            "activity %s (workflow %s) attempt %d/%d failed: %s; retry in %.2gs",
            name,
            task.workflow_id,
            attempt,
            max_attempts,
            message,
            delay,
        )
        return Attempt(attempt, failed=True, retry_due_ms=now_ms() + int(delay * 1000))
    logger.error(
        "activity %s (workflow %s) failed after %d attempt(s): %s",
        name,
        task.workflow_id,
        attempt,
        message,
    )
    data = {"error_type": type(error).__name__, "message": message, "attempts": attempt}
    return Attempt(attempt, failed=True, encoded=encode(data))


async def _call(fn: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    return await anyio.to_thread.run_sync(
        functools.partial(fn, *args, **kwargs), abandon_on_cancel=True
    )
