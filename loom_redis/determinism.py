"""Workflow code's sources of chance and time, made to replay as they ran.

Workflow code that calls `random.random()`, `uuid.uuid4()` or `time.time()` would get
other values when another worker replays it. Inside workflow code (while a workflow
instance is the running event loop of the thread), `random`'s module functions draw from
the workflow's own generator, seeded from its history, `uuid.uuid4()` makes its ids from
that generator and `time.time()`/`time.time_ns()` read the workflow's time; everywhere
else (activities, their threads, the worker itself) they are the originals. They are
replaced when the engine is imported, so a name bound earlier (`from random import
random` in a module imported before loom_redis's worker) keeps the original: `ctx.random()`
and `ctx.uuid4()` are the sources that always replay.

`datetime.now()`, `utcnow()` and `date.today()` cannot be replaced (methods of a C
type), and catching their calls at run time would slow every workflow task by about
half; `check_workflow_code` refuses a workflow whose code calls them, when it is defined.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime
import dis
import functools
import random
import time
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from .errors import WorkflowDefinitionError


class ReplayedSources:
    """What a workflow instance (the running loop of workflow code) offers the
    stand-ins: its generator and its time."""

    @property
    def rng(self) -> random.Random:
        raise NotImplementedError

    def time(self) -> float:
        raise NotImplementedError


def workflow_uuid4(rng: random.Random) -> uuid.UUID:
    """A version 4 UUID drawn from `rng`."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _running_workflow() -> ReplayedSources | None:
    loop = asyncio.events._get_running_loop()
    return loop if isinstance(loop, ReplayedSources) else None


def _drawing(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def draw(*args: Any, **kwargs: Any) -> Any:
        workflow = _running_workflow()
        if workflow is None:
            return original(*args, **kwargs)
        return getattr(workflow.rng, name)(*args, **kwargs)

    return draw


def _uuid4(original: Callable[[], uuid.UUID]) -> Callable[[], uuid.UUID]:
    @functools.wraps(original)
    def uuid4() -> uuid.UUID:
        workflow = _running_workflow()
        return original() if workflow is None else workflow_uuid4(workflow.rng)

    return uuid4


def _clock(original: Callable[[], Any], scale: Callable[[float], Any]) -> Callable[[], Any]:
    @functools.wraps(original)
    def now() -> Any:
        workflow = _running_workflow()
        return original() if workflow is None else scale(workflow.time())

    return now


# random's module functions are methods of one hidden generator; these are the ones
# that draw from it (seed, getstate and setstate are left alone).
_RANDOM_FUNCTIONS = [
    "betavariate",
    "binomialvariate",
    "choice",
    "choices",
    "expovariate",
    "gammavariate",
    "gauss",
    "getrandbits",
    "lognormvariate",
    "normalvariate",
    "paretovariate",
    "randbytes",
    "randint",
    "random",
    "randrange",
    "sample",
    "shuffle",
    "triangular",
    "uniform",
    "vonmisesvariate",
    "weibullvariate",
]


@functools.cache
def install() -> None:
    """Replace the module functions by their stand-ins, once per process."""
    for name in _RANDOM_FUNCTIONS:
        original = getattr(random, name, None)
        if original is not None:  # binomialvariate is new in 3.12
            setattr(random, name, _drawing(name, original))
    uuid.uuid4 = _uuid4(uuid.uuid4)
    time.time = _clock(time.time, float)
    time.time_ns = _clock(time.time_ns, lambda seconds: round(seconds * 1e9))


# -- clock reads refused at definition ----------------------------------------------

_CLOCK_TYPES = (datetime.datetime, datetime.date)
_CLOCK_READS = frozenset({"now", "utcnow", "today"})
_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_ATTRIBUTES = frozenset({"LOAD_ATTR", "LOAD_METHOD"})


def check_workflow_code(workflow_name: str, cls: type) -> None:
    """Refuse, naming the place, workflow code that reads the wall clock through
    datetime: the methods of the class and the plain functions of its module they call
    (activities excepted: they run outside workflow code)."""
    seen: set[types.CodeType] = set()
    for where, function in _workflow_functions(cls):
        found = _clock_read(function, cls.__module__, seen)
        if found is not None:
            call, place, via = found
            called = f" (through {via})" if via else ""
            raise WorkflowDefinitionError(
                f"workflow {workflow_name!r}: {where} calls {call}(){called} at {place}; "
                "workflow code must not read the clock, which differs when another worker "
                "replays it: use ctx.now() (the workflow's time, the same on replay), or "
                "read the clock in an activity"
            )


def _workflow_functions(cls: type) -> Iterator[tuple[str, types.FunctionType]]:
    for klass in cls.__mro__:
        if klass.__module__.startswith("loom_redis") or klass is object:
            continue
        for attr, value in vars(klass).items():
            function = value.__func__ if isinstance(value, classmethod | staticmethod) else value
            if isinstance(function, types.FunctionType):
                kind = "step" if hasattr(function, "__loom_step__") else "method"
                yield f"{kind} {attr!r}", function


def _clock_read(
    function: types.FunctionType, module: str, seen: set[types.CodeType], via: str = ""
) -> tuple[str, str, str] | None:
    """(the call, file:line, the helper it is in) of the first clock read in `function`'s
    code or in a plain function of `module` it calls, or None."""
    for code in _code_objects(function.__code__):
        if code in seen:
            continue
        seen.add(code)
        loaded: Any = None
        for instruction in dis.get_instructions(code):
            name = instruction.argval
            if instruction.opname in _LOADS:
                loaded = function.__globals__.get(name, getattr(builtins, name, None))
                if (
                    isinstance(loaded, types.FunctionType)
                    and loaded.__module__ == module
                    and not hasattr(loaded, "__loom_activity__")
                ):
                    helper = f"{via} -> {name}()" if via else f"{name}()"
                    found = _clock_read(loaded, module, seen, helper)
                    if found is not None:
                        return found
                continue
            if instruction.opname in _ATTRIBUTES and loaded is not None:
                if isinstance(loaded, type) and issubclass(loaded, _CLOCK_TYPES):
                    if name in _CLOCK_READS:
                        line = instruction.positions.lineno if instruction.positions else None
                        place = f"{code.co_filename}:{line or code.co_firstlineno}"
                        return f"{loaded.__name__}.{name}", place, via
                    loaded = None
                elif isinstance(loaded, types.ModuleType):  # datetime.datetime.now
                    loaded = getattr(loaded, name, None)
                else:
                    loaded = None
                continue
            if instruction.opname not in ("PUSH_NULL", "CACHE", "PRECALL"):
                loaded = None
    return None


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """A code object and those nested in it (comprehensions, inner functions, lambdas)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)
