"""`WorkflowInstance`: one workflow's code on its own deterministic event loop.

It runs only while the worker hands it a workflow task, sets itself as the running loop
for that time and restores the worker's loop after (see the package's docstring).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import determinism
from ..codec import encode
from ..context import WorkflowContext
from ..definitions import ActivityDefinition, WorkflowDefinition
from ..determinism import ReplayedSources
from ..errors import (
    ActivityFailedError,
    NonDeterministicWorkflowError,
    SignalTimeoutError,
    WorkflowExecutionError,
)
from ..events import (
    STATUS_OF_TERMINAL_EVENT,
    USER_VALUES,
    Command,
    Event,
    EventType,
    Status,
    describe_command,
)
from .history import split_tasks
from .mismatch import VALUE_CAUSE, mismatch_error, value_difference
from .records import failure_record

logger = logging.getLogger("loom_redis.engine")

# A workflow task's commands are written by one Lua script, which blocks Redis while it
# runs: 10,000 gathered activities take 0.1-0.2 s to commit on a 2-core machine. Code that
# makes more commands than this in one task fails the workflow, and none of them is
# written.
MAX_COMMANDS_PER_TASK = 20_000

determinism.install()


@dataclass
class Activation:
    """What one workflow task produced: new commands and where the workflow stands."""

    commands: list[Command] = field(default_factory=list)
    status: Status = Status.RUNNING
    # Sequence numbers of activities and timers still waiting when the task ended.
    pending_activities: set[int] = field(default_factory=set)
    pending_timers: set[int] = field(default_factory=set)
    # Names of the signals the code waits for when the task ended.
    waiting_signals: list[str] = field(default_factory=list)
    # Whether there were new events to act on (else the task was redundant).
    ran: bool = False

    @property
    def current_step(self) -> Command | None:
        steps = [c for c in self.commands if c.type == EventType.STEP_STARTED]
        return steps[-1] if steps else None


class WorkflowInstance(asyncio.AbstractEventLoop, ReplayedSources):
    """One workflow's code, its deterministic event loop, and its replay bookkeeping."""

    def __init__(self, definition: WorkflowDefinition, workflow_id: str) -> None:
        self.definition = definition
        self._workflow_id = workflow_id
        # The seed WORKFLOW_STARTED records; the id seeds histories written before seeds.
        self._seed: int | str = workflow_id
        self._rng: random.Random | None = None
        self._ready: deque[asyncio.Handle] = deque()
        self._now_ms = 0
        # When the workflow was started (its WORKFLOW_STARTED entry's time), once replayed.
        self.started_ms: int | None = None
        self._replaying = False
        self._next_seq = 1
        self._produced: list[Command] = []
        self._activities: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._timers: dict[int, asyncio.Future[None]] = {}
        self._signals: dict[str, deque[Any]] = {}
        self._signal_waiters: dict[str, deque[asyncio.Future[Any]]] = {}
        self._main: asyncio.Task[Any] | None = None
        self._context: WorkflowContext[Any, Any] | None = None
        self._current_step: str | None = None
        self._cancel_reason: str | None = None
        self._closed = False
        self._terminal_status: Status | None = None
        self.events_applied = 0

    # -- the worker's entry point ------------------------------------------------

    def apply(self, events: list[Event], now_ms: int) -> Activation:
        """Apply history events not applied before, and run the code on the new ones.

        Events that complete earlier workflow tasks are replayed; events after the
        last WORKFLOW_TASK_COMPLETED form a new task run at `now_ms`, whose
        commands are returned to be committed.
        """
        batches = split_tasks(events, self._workflow_id)
        for batch in batches[:-1]:
            assert batch.time_ms is not None
            self._activate(batch.externals, batch.time_ms, replaying=True)
            self._check_replayed(batch.commands)
        tail = batches[-1]
        self.events_applied += len(events)
        activation = Activation()
        if tail.commands:
            raise NonDeterministicWorkflowError(
                f"workflow {self._workflow_id!r}: history ends with commands that no "
                "workflow task completed; the history was written by something else"
            )
        if tail.externals and not self._closed:
            self._activate(tail.externals, max(now_ms, self._now_ms), replaying=False)
            if len(self._produced) > MAX_COMMANDS_PER_TASK:
                self._refuse_commands()
            activation.commands = self._produced
            activation.ran = True
        self._produced = []
        activation.status = self.status
        activation.pending_activities = set(self._activities)
        activation.pending_timers = {s for s, f in self._timers.items() if not f.done()}
        if self._signal_waiters:
            activation.waiting_signals = sorted(
                name
                for name, waiters in self._signal_waiters.items()
                if any(not waiter.done() for waiter in waiters)
            )
        return activation

    @property
    def status(self) -> Status:
        if self._main is None:
            return Status.PENDING
        return self._terminal_status or Status.RUNNING

    # -- activation --------------------------------------------------------------

    def _activate(self, externals: list[Event], time_ms: int, *, replaying: bool) -> None:
        self._now_ms = max(self._now_ms, time_ms)
        self._replaying = replaying
        self._produced = []
        for event in externals:
            self._deliver(event)
        self._run_until_blocked()
        if self._main is not None and self._main.done() and self._terminal_status is None:
            self._finish(self._main)

    def _deliver(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == EventType.WORKFLOW_STARTED:
            self.started_ms = event.time_ms
            if data.get("seed") is not None:
                self._seed = data["seed"]
            self._start(data.get("input"), data.get("state"))
        elif event.type in (EventType.ACTIVITY_COMPLETED, EventType.ACTIVITY_FAILED):
            name, future = self._take(self._activities, event)
            if future.done():  # the code stopped waiting (cancelled) before the result came
                return
            if event.type == EventType.ACTIVITY_COMPLETED:
                future.set_result(data.get("result"))
            else:
                future.set_exception(
                    ActivityFailedError(
                        name,
                        str(data.get("message", "")),
                        error_type=str(data.get("error_type", "")),
                        attempts=int(data.get("attempts", 1)),
                    )
                )
        elif event.type == EventType.TIMER_FIRED:
            timer = self._timers.pop(event.seq, None)
            if timer is None:
                raise self._mismatch(event.seq, f"TIMER_FIRED for seq {event.seq}", "no such timer")
            if not timer.done():
                timer.set_result(None)
        elif event.type == EventType.SIGNAL_RECEIVED:
            self._receive_signal(str(data.get("name")), data.get("payload"))
        elif event.type == EventType.WORKFLOW_CANCEL_REQUESTED:
            self._cancel_reason = data.get("reason")
            if self._main is not None and not self._main.done():
                self._main.cancel(self._cancel_reason)

    def _take(
        self, pending: dict[int, tuple[str, asyncio.Future[Any]]], event: Event
    ) -> tuple[str, asyncio.Future[Any]]:
        entry = pending.pop(event.seq, None)
        if entry is None:
            raise self._mismatch(
                event.seq, f"{event.type} for seq {event.seq}", "no activity with that seq"
            )
        return entry

    def _check_replayed(self, recorded: list[Event]) -> None:
        produced = self._produced
        for index in range(max(len(recorded), len(produced))):
            history = recorded[index] if index < len(recorded) else None
            code = produced[index] if index < len(produced) else None
            seq = history.seq if history else code.seq if code else 0
            step = code.step if code else self._current_step
            history_says = describe_command(history.type, history.data) if history else "nothing"
            code_did = describe_command(code.type, code.data) if code else "nothing"
            if history_says != code_did:
                raise self._mismatch(seq, history_says, code_did, step)
            assert history is not None and code is not None
            difference = value_difference(history, code)
            if difference is not None:
                raise self._mismatch(seq, *difference, step, VALUE_CAUSE)
        self._produced = []

    def _mismatch(
        self, seq: int, history_says: str, code_did: str, step: str | None = None, *cause: str
    ) -> NonDeterministicWorkflowError:
        return mismatch_error(
            self._workflow_id,
            self.definition.name,
            seq,
            history_says,
            code_did,
            step or self._current_step,
            *cause,
        )

    def _start(self, workflow_input: Any, initial_state: dict[str, Any] | None) -> None:
        self._context = WorkflowContext(self, workflow_input, initial_state)
        self._main = self.create_task(self._run_steps(self._context))

    async def _run_steps(self, ctx: WorkflowContext[Any, Any]) -> dict[str, Any]:
        instance = self.definition.cls()
        for step in self.definition.steps:
            self._current_step = step.name
            self._emit(
                EventType.STEP_STARTED,
                {"name": step.name, "index": step.index, "description": step.description},
            )
            method: Callable[[WorkflowContext[Any, Any]], Awaitable[Any]] = getattr(
                instance, step.method_name
            )
            await method(ctx)
        return ctx.state.snapshot()

    def _finish(self, main: asyncio.Task[Any]) -> None:
        if main.cancelled():
            self._emit(EventType.WORKFLOW_CANCELLED, {"reason": self._cancel_reason})
        elif (error := main.exception()) is None:
            self._emit(EventType.WORKFLOW_COMPLETED, {"result": main.result()})
        else:
            self._emit(EventType.WORKFLOW_FAILED, failure_record(error, self._current_step))
        self._terminal_status = STATUS_OF_TERMINAL_EVENT[self._produced[-1].type]
        self._closed = True

    def _refuse_commands(self) -> None:
        """Fail the workflow in place of the commands this task made, more than one
        commit may write: none of them is written, no activity of them runs."""
        produced = self._produced
        first, step = produced[0].seq, produced[-1].step
        kinds = Counter(str(command.type) for command in produced)
        error = WorkflowExecutionError(
            f"workflow {self._workflow_id!r} ({self.definition.name}): step {step!r} made "
            f"{len(produced)} commands in one workflow task ("
            + ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
            + f"), more than the {MAX_COMMANDS_PER_TASK} one task may write; none was "
            f"written. Gather at most {MAX_COMMANDS_PER_TASK} activities at once (in batches)",
            self._workflow_id,
        )
        for pending in (self._activities, self._timers):
            for seq in [seq for seq in pending if seq >= first]:
                del pending[seq]
        self._next_seq, self._produced = first, []
        self._emit(EventType.WORKFLOW_FAILED, failure_record(error, step))
        self._terminal_status = Status.FAILED
        self._closed = True

    # -- commands (the WorkflowRuntime protocol) -----------------------------------

    @property
    def workflow_id(self) -> str:
        return self._workflow_id

    @property
    def is_replaying(self) -> bool:
        return self._replaying

    @property
    def workflow_name(self) -> str:
        return self.definition.name

    @property
    def step_name(self) -> str | None:
        """The step the code runs (or ran last), None before the first."""
        return self._current_step

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now_ms / 1000, tz=UTC)

    @property
    def rng(self) -> random.Random:
        # Made when the code first draws: most workflows never do, and seeding costs.
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng

    def _emit(
        self,
        event_type: EventType,
        data: Any,
        *,
        due_ms: int = 0,
        state: dict[str, Any] | None = None,
    ) -> Command:
        """Make the command; `state`, the workflow's state after it, is checked to fit."""
        command = Command(event_type, self._next_seq, data, step=self._current_step, due_ms=due_ms)
        if not self._replaying:

            def what() -> str:
                return (
                    f"{command.describe()} of workflow {self._workflow_id!r} "
                    f"in step {command.step!r}"
                )

            # Encoding now raises a bad payload at the line of workflow code that made it.
            command.encoded = encode(data, what=what, carries=USER_VALUES.get(event_type))
            if state is not None:
                # The final state is the workflow's result: a state that outgrows the
                # limit fails at the line that grew it, not at the workflow's end.
                encode(state, what=lambda: f"the state after {what()}")
        self._next_seq += 1
        self._produced.append(command)
        return command

    def schedule_activity(
        self, definition: ActivityDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        command = self._emit(
            EventType.ACTIVITY_SCHEDULED,
            {
                "name": definition.name,
                "args": list(args),
                "kwargs": kwargs,
                "retry_count": definition.retry_count,
                "timeout_seconds": definition.timeout_seconds,
                "retry_backoff_seconds": definition.retry_backoff_seconds,
                "backoff_multiplier": definition.backoff_multiplier,
                "max_backoff_seconds": definition.max_backoff_seconds,
            },
        )
        future: asyncio.Future[Any] = self.create_future()
        self._activities[command.seq] = (definition.name, future)
        return future

    def start_timer(self, seconds: float) -> asyncio.Future[None]:
        return self._timers[self._start_timer(seconds)]

    def _start_timer(self, seconds: float) -> int:
        due_ms = self._now_ms + round(seconds * 1000)
        command = self._emit(
            EventType.TIMER_STARTED, {"seconds": seconds, "due_ms": due_ms}, due_ms=due_ms
        )
        self._timers[command.seq] = self.create_future()
        return command.seq

    def _cancel_timer(self, seq: int) -> None:
        """Drop a timer nobody waits for any more, so it never fires into history."""
        if not self._timers.pop(seq).done():
            self._emit(EventType.TIMER_CANCELLED, {"timer_seq": seq})

    def wait_for_signal(self, name: str, timeout: float | None) -> Awaitable[Any]:
        return self._wait_for_signal(name, timeout)

    async def _wait_for_signal(self, name: str, timeout: float | None) -> Any:
        buffered = self._signals.get(name)
        if buffered:
            return buffered.popleft()
        waiter: asyncio.Future[Any] = self.create_future()
        self._signal_waiters.setdefault(name, deque()).append(waiter)
        if timeout is None:
            return await waiter
        timer_seq = self._start_timer(timeout)
        timer = self._timers[timer_seq]
        await asyncio.wait([waiter, timer], return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            self._cancel_timer(timer_seq)
            return waiter.result()
        self._signal_waiters[name].remove(waiter)
        waiter.cancel()
        raise SignalTimeoutError(name, timeout)

    def _receive_signal(self, name: str, payload: Any) -> None:
        waiters = self._signal_waiters.get(name)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(payload)
                return
        self._signals.setdefault(name, deque()).append(payload)

    def record_state_set(self, key: str, value: Any, state: dict[str, Any]) -> None:
        self._emit(EventType.STATE_SET, {"key": key, "value": value}, state=state)

    def record_state_update(self, state: dict[str, Any]) -> None:
        self._emit(EventType.STATE_UPDATE, {"state": dict(state)})

    # -- the event loop ------------------------------------------------------------

    def _run_until_blocked(self) -> None:
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            while self._ready:
                handle = self._ready.popleft()
                if not handle.cancelled():
                    handle._run()
        finally:
            asyncio.events._set_running_loop(previous)

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(  # type: ignore[override]
        self, delay: float, callback: Callable[..., object], *args: Any, **_: Any
    ) -> Any:
        raise RuntimeError(
            "workflow code cannot use asyncio timers (asyncio.sleep, wait_for with a timeout): "
            "use `await ctx.sleep(...)`, which is durable and replays"
        )

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any, **_: Any
    ) -> Any:
        return self.call_later(0, callback)

    def time(self) -> float:
        return self._now_ms / 1000

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(self, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=self, **kwargs)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return asyncio.events._get_running_loop() is self

    def is_closed(self) -> bool:
        return False

    def get_exception_handler(self) -> None:
        return None

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        logger.debug("workflow %s: %s", self._workflow_id, context.get("message"))

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)
