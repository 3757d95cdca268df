"""The public workflow API: decorators, `Workflow`, `WorkflowContext` and its state.

This is Loom's API (the `loom-core` package): a Loom user changes `import loom`
to `import loom_redis as loom` and their workflows run unchanged. The decorators record
definitions (`definitions.py`); the context workflow code receives is in `context.py`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Generic, TypeVar, overload

from .client import WorkflowHandle, default_client
from .context import WorkflowContext, WorkflowRuntime, WorkflowState
from .definitions import (
    ActivityDefinition,
    IdReusePolicy,
    InputT,
    NondeterminismPolicy,
    StateT,
    StepDefinition,
    WorkflowDefinition,
    register_activity,
    register_workflow,
)
from .determinism import check_workflow_code
from .errors import WorkflowDefinitionError

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

__all__ = [
    "ActivityDefinition",
    "Workflow",
    "WorkflowContext",
    "WorkflowDefinition",
    "WorkflowRuntime",
    "WorkflowState",
    "activity",
    "declared_types",
    "step",
    "workflow",
]


@overload
def activity(fn: F, /) -> F: ...
@overload
def activity(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    retry_count: int = 0,
    timeout_seconds: float | None = None,
    retry_backoff_seconds: float = 1.0,
    backoff_multiplier: float = 2.0,
    max_backoff_seconds: float = 60.0,
) -> Callable[[F], F]: ...
def activity(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    retry_count: int = 0,
    timeout_seconds: float | None = None,
    retry_backoff_seconds: float = 1.0,
    backoff_multiplier: float = 2.0,
    max_backoff_seconds: float = 60.0,
) -> F | Callable[[F], F]:
    """Declare a function (async or plain) as an activity: a side effect run by workers.

    `retry_count` retries after the first failure, waiting `retry_backoff_seconds`,
    multiplied by `backoff_multiplier` each time, at most `max_backoff_seconds`.
    `timeout_seconds` cancels an attempt that runs longer; it counts as a failure.
    """

    def decorate(func: F) -> F:
        # Checked here, where the function is known, so that the error names it.
        what = f"activity {name or getattr(func, '__qualname__', func)!r}"
        if not isinstance(retry_count, int) or retry_count < 0:
            raise WorkflowDefinitionError(
                f"{what}: retry_count must be a whole number >= 0, got {retry_count!r}"
            )
        if timeout_seconds is not None and not timeout_seconds > 0:
            raise WorkflowDefinitionError(
                f"{what}: timeout_seconds must be > 0 (or None for no timeout), "
                f"got {timeout_seconds!r}"
            )
        for option, value, least in (
            ("retry_backoff_seconds", retry_backoff_seconds, 0.0),
            ("backoff_multiplier", backoff_multiplier, 1.0),
            ("max_backoff_seconds", max_backoff_seconds, 0.0),
        ):
            if not value >= least:
                raise WorkflowDefinitionError(
                    f"{what}: {option} must be >= {least:g}, got {value!r}"
                )
        definition = ActivityDefinition(
            name=name or func.__name__,
            fn=func,
            retry_count=retry_count,
            timeout_seconds=timeout_seconds,
            retry_backoff_seconds=retry_backoff_seconds,
            backoff_multiplier=backoff_multiplier,
            max_backoff_seconds=max_backoff_seconds,
        )
        register_activity(definition)
        func.__loom_activity__ = definition  # type: ignore[attr-defined]
        return func

    return decorate(fn) if fn is not None else decorate


@overload
def step(fn: F, /) -> F: ...
@overload
def step(
    fn: None = None, /, *, name: str | None = None, description: str | None = None
) -> Callable[[F], F]: ...
def step(
    fn: F | None = None, /, *, name: str | None = None, description: str | None = None
) -> F | Callable[[F], F]:
    """Mark an async method of a workflow as a step; steps run in definition order.

    `description` completes the agent's sentence in progress reports
    ("Robin is <description>").
    """

    def decorate(func: F) -> F:
        if not inspect.iscoroutinefunction(func):
            raise WorkflowDefinitionError(
                f"step {func.__qualname__!r} must be an async method (async def)"
            )
        func.__loom_step__ = (name or func.__name__, description)  # type: ignore[attr-defined]
        return func

    return decorate(fn) if fn is not None else decorate


def workflow(
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    agent: str | None = None,
    *,
    on_nondeterminism: NondeterminismPolicy | None = None,
) -> Callable[[C], C]:
    """Declare a `loom.Workflow` subclass as a workflow; its `@loom.step` methods run in order.

    `on_nondeterminism="suspend"` parks a workflow whose code no longer matches its
    history instead of failing it (the worker's setting applies when this is None).
    """

    def decorate(cls: C) -> C:
        if not (isinstance(cls, type) and issubclass(cls, Workflow)):
            raise WorkflowDefinitionError(
                f"@loom.workflow decorates a subclass of loom.Workflow, got {cls!r}"
            )
        steps: list[StepDefinition] = []
        seen: set[str] = set()
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                marker = getattr(value, "__loom_step__", None)
                if marker is None or attr in seen:
                    continue
                seen.add(attr)
                steps.append(StepDefinition(marker[0], marker[1], attr, len(steps) + 1))
        if not steps:
            raise WorkflowDefinitionError(
                f"workflow {cls.__qualname__!r} has no steps: mark async methods with @loom.step"
            )
        check_workflow_code(name or cls.__name__, cls)
        input_type, state_type = declared_types(cls)
        definition = WorkflowDefinition(
            name=name or cls.__name__,
            version=version,
            description=description,
            agent=agent,
            cls=cls,
            steps=tuple(steps),
            on_nondeterminism=on_nondeterminism,
            input_type=input_type,
            state_type=state_type,
        )
        register_workflow(definition)
        cls.__loom_workflow__ = definition  # type: ignore[attr-defined]
        return cls

    return decorate


class Workflow(Generic[InputT, StateT]):
    """Base class of workflows: subclass it, decorate with `@loom.workflow`, add steps."""

    @classmethod
    async def start(
        cls,
        input: InputT,
        initial_state: StateT | None = None,
        *,
        workflow_id: str | None = None,
        owner: str | None = None,
        queue: str | None = None,
        id_reuse: IdReusePolicy = "reject",
        retention: timedelta | float | None = None,
    ) -> WorkflowHandle[StateT]:
        """Start this workflow through the default client (`loom.configure` / LOOM_REDIS_URL).

        `initial_state` (a dict) is the state the first step sees; `retention` (a
        timedelta or seconds) how long it is kept after it closes, in place of the
        namespace's.
        """
        client = await default_client()
        return await client.start(
            cls,
            input,
            initial_state,
            workflow_id=workflow_id,
            owner=owner,
            queue=queue,
            id_reuse=id_reuse,
            retention=retention,
        )


def declared_types(cls: type) -> tuple[Any, Any]:
    """The (input, state) type arguments of `loom.Workflow[...]` in the class's bases,
    or (None, None) when the class does not give them."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            if typing.get_origin(base) is Workflow:
                args = typing.get_args(base)
                if len(args) == 2:
                    return args[0], args[1]
    return None, None
