"""What workflow code holds while it runs: `WorkflowContext`, its durable state and logger.

The context forwards every durable act (an activity, a timer, a signal wait, a state
change) to the `WorkflowRuntime` the engine gives it; it is re-exported by `api.py`.
"""

from __future__ import annotations

import copy
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from .definitions import ActivityDefinition, InputT, StateT, activity_definition
from .determinism import workflow_uuid4

P = ParamSpec("P")
R = TypeVar("R")


class WorkflowRuntime(Protocol):
    """What the engine offers workflow code through its context."""

    @property
    def workflow_id(self) -> str: ...
    @property
    def workflow_name(self) -> str: ...
    @property
    def step_name(self) -> str | None: ...
    @property
    def is_replaying(self) -> bool: ...

    @property
    def rng(self) -> random.Random:
        """The workflow's generator, seeded from its history."""
        ...

    def now(self) -> datetime: ...
    def schedule_activity(
        self, definition: ActivityDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Awaitable[Any]: ...
    def start_timer(self, seconds: float) -> Awaitable[None]: ...
    def wait_for_signal(self, name: str, timeout: float | None) -> Awaitable[Any]: ...
    def record_state_set(self, key: str, value: Any, state: dict[str, Any]) -> None: ...
    def record_state_update(self, state: dict[str, Any]) -> None: ...


class WorkflowState(Generic[StateT]):
    """The workflow's durable state: read like a dict, change with `await set/update`."""

    def __init__(self, runtime: WorkflowRuntime, initial: dict[str, Any] | None = None) -> None:
        self._runtime = runtime
        self._data: dict[str, Any] = dict(initial or {})
        self._batch_depth = 0
        self._batch_dirty = False

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(f"workflow state has no key {key!r}") from None

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the state, safe to keep and change."""
        return copy.deepcopy(self._data)

    def keys(self) -> list[str]:
        return list(self._data)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._data.items())

    async def set(self, key: str, value: Any) -> None:
        """Set one key: one STATE_SET event (or part of the enclosing batch's STATE_UPDATE)."""
        if not isinstance(key, str):
            raise TypeError(f"state keys are strings, got {key!r}")
        if self._batch_depth:
            self._data[key] = value
            self._batch_dirty = True
            return
        self._runtime.record_state_set(key, value, {**self._data, key: value})
        self._data[key] = value

    async def update(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Replace the whole state with `fn(current state)`: one STATE_UPDATE event."""
        new_state = fn(dict(self._data))
        if not isinstance(new_state, dict):
            raise TypeError(
                f"state.update's function must return the complete new state as a dict, "
                f"got {type(new_state).__name__}"
            )
        if self._batch_depth:
            self._data = dict(new_state)
            self._batch_dirty = True
            return
        self._runtime.record_state_update(new_state)
        self._data = dict(new_state)

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[WorkflowState[StateT]]:
        """Collect the `set` calls inside into one STATE_UPDATE event, emitted on exit.

        If the block raises, its changes are discarded.
        """
        before = copy.deepcopy(self._data) if self._batch_depth == 0 else None
        self._batch_depth += 1
        try:
            yield self
        except BaseException:
            self._batch_depth -= 1
            if before is not None:
                self._data = before
                self._batch_dirty = False
            raise
        self._batch_depth -= 1
        if self._batch_depth == 0 and self._batch_dirty:
            self._batch_dirty = False
            self._runtime.record_state_update(self._data)


class _ReplayAwareLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logs only when the workflow runs for real, never while history is replayed."""

    def __init__(self, runtime: WorkflowRuntime, base: logging.Logger) -> None:
        super().__init__(base, {"workflow_id": runtime.workflow_id})
        self._runtime = runtime

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self._runtime.is_replaying:
            super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        # Its own fields: the workflow's asyncio tasks keep the context of the worker
        # task that created them, which a later task of the workflow does not share.
        runtime = self._runtime
        kwargs["extra"] = {
            "workflow_id": runtime.workflow_id,
            "workflow": runtime.workflow_name,
            "step": runtime.step_name,
            **kwargs.get("extra", {}),
        }
        return f"[{runtime.workflow_id}] {msg}", kwargs


class WorkflowContext(Generic[InputT, StateT]):
    """What a step receives: input, durable state, activities, timers, signals, time."""

    def __init__(
        self, runtime: WorkflowRuntime, input: InputT, initial_state: dict[str, Any] | None = None
    ) -> None:
        self._runtime = runtime
        self.input: InputT = input
        self.state: WorkflowState[StateT] = WorkflowState(runtime, initial_state)
        self.logger: logging.LoggerAdapter = _ReplayAwareLogger(  # type: ignore[type-arg]
            runtime, logging.getLogger("loom_redis.workflow")
        )

    @property
    def workflow_id(self) -> str:
        return self._runtime.workflow_id

    @property
    def id(self) -> str:
        return self._runtime.workflow_id

    @property
    def is_replaying(self) -> bool:
        """True while the engine replays history (the code already ran this far once)."""
        return self._runtime.is_replaying

    def now(self) -> datetime:
        """The workflow's time (UTC): when this workflow task first ran; the same on replay."""
        return self._runtime.now()

    def random(self) -> random.Random:
        """The workflow's random generator: seeded when the workflow starts, so that a
        replay draws the same numbers (`random`'s module functions draw from it too,
        inside workflow code)."""
        return self._runtime.rng

    def uuid4(self) -> uuid.UUID:
        """A random UUID (version 4) that a replay makes again, drawn from `random()`."""
        return workflow_uuid4(self._runtime.rng)

    # An async activity's result is what its coroutine returns (the worker awaits it),
    # so its overload comes before the plain function's, which would give the coroutine.
    @overload
    async def activity(
        self, fn: Callable[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
    ) -> R: ...
    @overload
    async def activity(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    async def activity(self, fn: str, *args: Any, **kwargs: Any) -> Any: ...
    async def activity(self, fn: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Any:
        """Run an activity on a worker and return its result (raises ActivityFailedError).

        `fn` is a `@loom.activity` function (type checkers check the arguments against it
        and give its result type) or the name it was registered under (typed `Any`).
        """
        definition = activity_definition(fn)
        return await self._runtime.schedule_activity(definition, args, kwargs)

    async def sleep(
        self,
        delta: timedelta | float | None = None,
        *,
        seconds: float | None = None,
        until: datetime | None = None,
    ) -> None:
        """Wait durably: `delta=timedelta(...)`, `seconds=...` or `until=datetime`."""
        given = {"delta": delta, "seconds": seconds, "until": until}
        passed = {name: value for name, value in given.items() if value is not None}
        if len(passed) != 1:
            shown = ", ".join(f"{name}={value!r}" for name, value in passed.items()) or "nothing"
            raise ValueError(f"ctx.sleep takes exactly one of delta, seconds or until; got {shown}")
        if until is not None:
            if until.tzinfo is None:
                raise ValueError(
                    f"ctx.sleep(until=...) needs a timezone-aware datetime, got the naive "
                    f"{until!r}; e.g. datetime.now(UTC) or ctx.now() plus a timedelta"
                )
            wait = (until - self.now()).total_seconds()
        elif isinstance(delta, timedelta):
            wait = delta.total_seconds()
        else:
            wait = float(delta if delta is not None else seconds)  # type: ignore[arg-type]
        await self._runtime.start_timer(max(wait, 0.0))

    async def wait_for_signal(self, name: str, timeout: float | timedelta | None = None) -> Any:
        """Wait for signal `name` and return its payload; signals sent earlier are buffered.

        With `timeout` (seconds), raises `loom.SignalTimeoutError` if none arrives in time.
        """
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        return await self._runtime.wait_for_signal(name, timeout)

    async def wait_until_signal(self, name: str, timeout: float | timedelta | None = None) -> Any:
        """Alias of `wait_for_signal` (the spelling of the published loom-core package)."""
        return await self.wait_for_signal(name, timeout)
