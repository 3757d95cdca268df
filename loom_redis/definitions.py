"""What the decorators record: workflow and activity definitions, and the registry of them.

The engine, the worker and the client read definitions from here; the user-facing
decorators and `Workflow` (`api.py`) write them. This module imports no other part of
loom-redis but the errors, so that every layer may depend on it.
"""

from __future__ import annotations

import contextlib
import functools
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from .errors import ConfigurationError, WorkflowDefinitionError, WorkflowInputError

InputT = TypeVar("InputT")
StateT = TypeVar("StateT")

NondeterminismPolicy = Literal["fail", "suspend"]
IdReusePolicy = Literal["reject", "return_existing"]


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
    cls: type[Any]  # a loom.Workflow subclass
    steps: tuple[StepDefinition, ...]
    on_nondeterminism: NondeterminismPolicy | None = None
    # The type arguments of `loom.Workflow[input, state]` in the class's bases (None: none).
    input_type: Any = None
    state_type: Any = None

    @property
    def origin(self) -> str:
        return _origin(self.cls)

    @functools.cached_property
    def start_checks(self) -> StartChecks:
        """What check_start_arguments checks, worked out once."""
        return StartChecks.of(self)

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


def register_workflow(definition: WorkflowDefinition) -> None:
    _register(_WORKFLOWS, "workflow", definition)


def register_activity(definition: ActivityDefinition) -> None:
    _register(_ACTIVITIES, "activity", definition)


@contextlib.contextmanager
def isolated_registry(*, without: Iterable[str] = ()) -> Iterator[None]:
    """Undo, on exit, what the block registers: the workflows and activities of this
    process are then what they were on entry.

    The workflows and activities named in `without` are unregistered inside the block, so
    that it may register other code under their names (a test of changed code) or run a
    worker that lacks them. Use it around a test, or as a fixture:

    >>> @pytest.fixture(autouse=True)
    ... def registry():
    ...     with loom_redis.testing.isolated_registry():
    ...         yield
    """
    workflows, activities = dict(_WORKFLOWS), dict(_ACTIVITIES)
    try:
        for name in without:
            found = [registry.pop(name, None) for registry in (_WORKFLOWS, _ACTIVITIES)]
            if not any(found):
                raise ConfigurationError(
                    f"isolated_registry(without=...): no workflow or activity is registered "
                    f"as {name!r}"
                )
        yield
    finally:
        _WORKFLOWS.clear()
        _WORKFLOWS.update(workflows)
        _ACTIVITIES.clear()
        _ACTIVITIES.update(activities)


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
    def of(cls, definition: WorkflowDefinition) -> StartChecks:
        input_type, state_type = definition.input_type, definition.state_type
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
