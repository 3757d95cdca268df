"""The public workflow API: decorators, `Workflow`, `WorkflowContext` and its state.

This is Loom's API (the `loom-core` package): a Loom user changes `import loom`
to `import loom_redis as loom` and their workflows run unchanged.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import random
import re
import types
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

from .determinism import check_workflow_code, workflow_uuid4
from .errors import WorkflowDefinitionError, WorkflowInputError

if TYPE_CHECKING:
    from .client import WorkflowHandle

InputT = TypeVar("InputT")
StateT = TypeVar("StateT")
F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)
P = ParamSpec("P")
R = TypeVar("R")

NondeterminismPolicy = Literal["fail", "suspend"]
IdReusePolicy = Literal["reject", "return_existing"]

logger = logging.getLogger("loom_redis")


@dataclass(frozen=True)
class ActivityDefinition:
    """What `@loom.activity` records about a function."""

    name: str
    fn: Callable[..., Any]
    retry_count: int = 0
    timeout_seconds: float | None = None
    retry_backoff_seconds: float = 1.0
    backoff_multiplier: float = 2.0
    max_backoff_seconds: float = 60.0

    @property
    def origin(self) -> str:
        return _origin(self.fn)


@dataclass(frozen=True)
class StepDefinition:
    name: str
    description: str | None
    method_name: str
    index: int


@dataclass(frozen=True)
class WorkflowDefinition:
    """What `@loom.workflow` records about a class."""

    name: str
    version: str
    description: str | None
    agent: str | None
    cls: type[Workflow[Any, Any]]
    steps: tuple[StepDefinition, ...]
    on_nondeterminism: NondeterminismPolicy | None = None

    @property
    def origin(self) -> str:
        return _origin(self.cls)

    @functools.cached_property
    def start_checks(self) -> StartChecks:
        """What check_start_arguments checks, worked out once."""
        return StartChecks.of(self.cls)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "agent": self.agent,
            "steps": [
                {"name": s.name, "description": s.description, "index": s.index} for s in self.steps
            ],
        }


_WORKFLOWS: dict[str, WorkflowDefinition] = {}
_ACTIVITIES: dict[str, ActivityDefinition] = {}


def _origin(code: Any) -> str:
    """Where a workflow class or an activity function is defined: module.qualname."""
    return f"{getattr(code, '__module__', '?')}.{getattr(code, '__qualname__', code)}"


def _register(
    registry: dict[str, Any], kind: str, definition: WorkflowDefinition | ActivityDefinition
) -> None:
    """Register `definition` under its name. The same code registered again (its module
    imported again, or reloaded) replaces itself; other code under a taken name is refused,
    since a worker would otherwise run whichever definition was imported last."""
    previous = registry.get(definition.name)
    if previous is not None and previous.origin != definition.origin:
        raise WorkflowDefinitionError(
            f"{kind} name {definition.name!r} is already registered by {previous.origin}; "
            f"{definition.origin} cannot take it: give one of them another name"
        )
    registry[definition.name] = definition


def registered_workflow(name: str) -> WorkflowDefinition | None:
    return _WORKFLOWS.get(name)


def registered_activity(name: str) -> ActivityDefinition | None:
    return _ACTIVITIES.get(name)


def registered_workflows() -> dict[str, WorkflowDefinition]:
    return dict(_WORKFLOWS)


def registered_activities() -> dict[str, ActivityDefinition]:
    return dict(_ACTIVITIES)


def workflow_definition(cls: Any) -> WorkflowDefinition:
    """The definition of a `@loom.workflow` class, or a clear error naming the class."""
    definition = getattr(cls, "__loom_workflow__", None)
    if not isinstance(definition, WorkflowDefinition) or definition.cls is not cls:
        raise WorkflowDefinitionError(
            f"{getattr(cls, '__qualname__', cls)!r} is not a workflow: decorate the class "
            "with @loom.workflow(name=...) and derive it from loom.Workflow"
        )
    return definition


def activity_definition(fn: Callable[..., Any] | str) -> ActivityDefinition:
    if isinstance(fn, str):
        known = _ACTIVITIES.get(fn)
        return known if known is not None else ActivityDefinition(name=fn, fn=_unknown_activity)
    definition = getattr(fn, "__loom_activity__", None)
    if not isinstance(definition, ActivityDefinition):
        raise WorkflowDefinitionError(
            f"{getattr(fn, '__qualname__', fn)!r} is not an activity: decorate it with "
            "@loom.activity(name=...)"
        )
    return definition


def _unknown_activity(*_: Any) -> Any:
    raise WorkflowDefinitionError("activity called by name is not registered in this process")


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


def _is_typeddict(tp: Any) -> bool:
    # Duck-typed, so that typing_extensions' TypedDict counts as well as typing's.
    return (
        isinstance(tp, type)
        and issubclass(tp, dict)
        and hasattr(tp, "__required_keys__")
        and hasattr(tp, "__optional_keys__")
    )


# Under `from __future__ import annotations`, Python < 3.12 does not see NotRequired[...]
# (the annotation is a string) and lists the key as required.
_NOT_REQUIRED = re.compile(r"^\s*(typing(_extensions)?\.)?NotRequired\[")


def _required_keys(tp: Any) -> set[str]:
    annotations = getattr(tp, "__annotations__", {})
    required: set[str] = set()
    for key in tp.__required_keys__:
        annotation = annotations.get(key)
        text = getattr(annotation, "__forward_arg__", annotation)
        if not (isinstance(text, str) and _NOT_REQUIRED.match(text)):
            required.add(key)
    return required


# The declared input types whose top level a start checks: the types msgpack carries.
# Other classes (a dataclass, a model) and Any, TypeVars, Literal... are not checked.
_WIRE_TYPES = (dict, list, tuple, str, bytes, int, float, bool, type(None), datetime)


def _top_level_types(tp: Any) -> tuple[type, ...]:
    """The classes an input declared as `tp` may be an instance of; () when the
    declaration says nothing that can be checked."""
    if _is_typeddict(tp):
        return (dict,)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [_top_level_types(arg) for arg in typing.get_args(tp)]
        return () if not all(members) else tuple(t for m in members for t in m)
    base = tp if origin is None else origin
    if base not in _WIRE_TYPES:
        return ()
    if base is float:  # an int is a valid float (PEP 484's numeric tower)
        return (float, int)
    if base in (list, tuple):  # msgpack sends both as a list
        return (list, tuple)
    return (base,)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and isinstance(tp, type):
        return "None" if tp is type(None) else tp.__qualname__
    return repr(tp).replace("typing.", "")


@dataclass(frozen=True)
class StartChecks:
    """What a workflow class's declared types let a start check."""

    input_type: Any  # the declared input type (None: none declared)
    input_classes: tuple[type, ...]  # what the input's top level may be (): anything
    input_typeddict: Any  # the input TypedDict, or None
    required: frozenset[str]  # its required keys
    state_typeddict: Any  # the state TypedDict, or None

    @classmethod
    def of(cls, workflow_cls: type) -> StartChecks:
        input_type, state_type = declared_types(workflow_cls)
        typed = input_type if _is_typeddict(input_type) else None
        return cls(
            input_type=input_type,
            input_classes=() if input_type is None else _top_level_types(input_type),
            input_typeddict=typed,
            required=frozenset(_required_keys(typed)) if typed is not None else frozenset(),
            state_typeddict=state_type if _is_typeddict(state_type) else None,
        )


def check_start_arguments(
    definition: WorkflowDefinition, workflow_input: Any, initial_state: Any
) -> None:
    """Refuse an input whose top-level type contradicts the workflow's declared input
    type (a list for a dict; element types are not checked), or that does not match its
    input TypedDict (a required key missing, an unknown key), or an initial state with
    keys its state TypedDict does not declare. Of a TypedDict, only the keys are checked."""
    checks = definition.start_checks
    if checks.input_typeddict is not None:
        _check_keys(definition, "input", checks.input_typeddict, workflow_input, checks.required)
    elif checks.input_classes and not isinstance(workflow_input, checks.input_classes):
        raise WorkflowInputError(
            f"input of workflow {definition.name!r} must be {_type_name(checks.input_type)}, "
            f"the input type its class {definition.cls.__qualname__} declares; "
            f"got {type(workflow_input).__name__} {workflow_input!r:.80}"
        )
    if initial_state is not None and checks.state_typeddict is not None:
        # A state fills up as the steps run: its keys may all be absent at the start.
        _check_keys(definition, "initial state", checks.state_typeddict, initial_state, frozenset())


def _check_keys(
    definition: WorkflowDefinition, what: str, tp: Any, value: Any, required: frozenset[str]
) -> None:
    declared = set(tp.__required_keys__) | set(tp.__optional_keys__)
    where = f"{what} of workflow {definition.name!r}"
    if not isinstance(value, dict):
        raise WorkflowInputError(
            f"{where} must be a dict with the keys of {tp.__qualname__}, "
            f"got {type(value).__name__} {value!r:.80}"
        )
    if not declared:  # an empty TypedDict (such as loom.Input itself) declares nothing
        return
    problems = []
    missing = sorted(required - value.keys())
    if missing:
        problems.append("missing required key(s) " + ", ".join(map(repr, missing)))
    unknown = sorted((repr(k) for k in value if k not in declared), key=str)
    if unknown:
        problems.append("unknown key(s) " + ", ".join(unknown))
    if problems:
        raise WorkflowInputError(
            f"{where} does not match {tp.__qualname__}: {'; '.join(problems)} "
            f"(declared keys: {', '.join(map(repr, sorted(declared)))})"
        )


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
        _register(_ACTIVITIES, "activity", definition)
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
        definition = WorkflowDefinition(
            name=name or cls.__name__,
            version=version,
            description=description,
            agent=agent,
            cls=cls,
            steps=tuple(steps),
            on_nondeterminism=on_nondeterminism,
        )
        _register(_WORKFLOWS, "workflow", definition)
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
    ) -> WorkflowHandle[StateT]:
        """Start this workflow through the default client (`loom.configure` / LOOM_REDIS_URL).

        `initial_state` (a dict) is the state the first step sees.
        """
        from .client import default_client

        client = await default_client()
        return await client.start(
            cls,
            input,
            initial_state,
            workflow_id=workflow_id,
            owner=owner,
            queue=queue,
            id_reuse=id_reuse,
        )


class WorkflowRuntime(Protocol):
    """What the engine offers workflow code through its context."""

    @property
    def workflow_id(self) -> str: ...
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
        return f"[{self._runtime.workflow_id}] {msg}", kwargs


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
