"""Eager activities: the first activity a workflow task schedules, run at once by the
worker that ran the task, before its scheduling is written."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from ..definitions import registered_activity
from ..engine import Activation
from ..errors import NonDeterministicWorkflowError, PayloadError
from ..events import Command, EventType
from ..metrics import EAGER_ACTIVITIES, labelled
from ..store import Store, Task, TaskPlan
from ..store.connection import RedisError, now_ms
from ..store.wire import Reply, TaskField
from ._activity_tasks import ActivityTasks
from ._attempts import Attempt, run_attempt
from ._in_flight import InFlight
from ._intake import Intake
from ._outcomes import TaskOutcome
from ._timers import TimerSweep
from ._trouble import RedisTrouble
from ._workflow_commits import Loaded, WorkflowCommits, plan_of

logger = logging.getLogger("loom_redis.worker")


@dataclass
class _Hold:
    """An activity run at once for a workflow task, and how its scheduling got written:
    if the eager window ends before the attempt does, the watchdog starts a job (run
    in `job`'s scope) that writes it and sets `written` once its commit came back with
    `outcome`."""

    task: Task
    queue: str
    loaded: Loaded
    plan: TaskPlan
    held: Task
    attempt_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    # Both made when the window ends first.
    job: anyio.CancelScope | None = None
    written: asyncio.Event | None = None
    outcome: str = ""


class EagerActivities:
    """Runs the first activity a workflow task schedules at once, within the eager
    window (`eager_ms`), and writes it with the task (see run)."""

    def __init__(
        self,
        store: Store,
        eager_ms: int,
        lease_ms: int,
        in_flight: InFlight,
        intake: Intake,
        timers: TimerSweep,
        commits: WorkflowCommits,
        activity_tasks: ActivityTasks,
        trouble: RedisTrouble,
        beat: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self._trouble = trouble
        self._beat = beat
        self._eager_ms = eager_ms
        self._lease_ms = lease_ms
        self._in_flight = in_flight
        self._intake = intake
        self._timers = timers
        self._commits = commits
        self._activity_tasks = activity_tasks
        # The holds whose window ended before their attempt, for the watchdog.
        self._windows_ended: deque[tuple[_Hold, anyio.CancelScope, asyncio.Event]] = deque()
        self._watchdog_wakeup = asyncio.Event()

    async def watchdog(self) -> None:
        """Start the job of each attempt whose eager window ended first (see
        _hold_slow_attempt), as a child of this task: run in the executors' task group,
        the jobs end with it."""
        async with anyio.create_task_group() as jobs:
            while True:
                while not self._windows_ended:
                    self._watchdog_wakeup = asyncio.Event()
                    await self._watchdog_wakeup.wait()
                jobs.start_soon(self._hold_slow_attempt, *self._windows_ended.popleft())

    def _window_ended(self, hold: _Hold) -> None:
        hold.job = anyio.CancelScope()
        hold.written = asyncio.Event()
        self._windows_ended.append((hold, hold.job, hold.written))
        self._watchdog_wakeup.set()

    def candidate(
        self, activation: Activation, loaded: Loaded, take_next_for: str
    ) -> tuple[Command, Any] | None:
        """The first activity a workflow task schedules, with its function, if this worker
        runs it at once (see run)."""
        if (
            self._eager_ms <= 0
            or not take_next_for  # draining, or new tasks wait for capacity
            or loaded.completing is not None
            or activation.status.is_terminal
        ):
            return None
        for command in activation.commands:
            if command.type == EventType.ACTIVITY_SCHEDULED:
                definition = registered_activity(str((command.data or {}).get("name")))
                return None if definition is None else (command, definition.fn)
        return None

    async def run(
        self, task: Task, queue: str, loaded: Loaded, plan: TaskPlan, command: Command, fn: Any
    ) -> str:
        """Run the first activity the workflow task scheduled at once, on this worker,
        before its scheduling is written (a crash before the commit loses only work that a
        replay redoes: activities run at least once).

        If its attempt ends within the eager window, one commit writes the workflow task,
        the activity's outcome and what the code did next (or the retry of its next
        attempt): the history is the one the queued way writes, one round trip and two
        hops shorter. Otherwise a job writes the scheduling at the window's end, with
        a timer member in place of the task (its lease, renewed while the attempt runs,
        that queues the activity again if this worker dies), and the outcome is recorded
        when it comes.
        """
        held = self._store.held_activity_task(task.workflow_id, queue, command)
        hold = _Hold(task, queue, loaded, plan, held)
        # The attempt runs here, before anything else this worker has to do (such as its
        # next read) gets a turn: no task is made for it, nor for its hold unless the
        # window ends first (a timer callback hands it to the watchdog, see watchdog).
        window = asyncio.get_running_loop().call_later(
            self._eager_ms / 1000, self._window_ended, hold
        )
        try:
            with hold.attempt_scope:
                attempt = await run_attempt(held, dict(command.data or {}), fn)
            window.cancel()
            if hold.written is not None:
                await hold.written.wait()
        finally:
            window.cancel()
            if hold.job is not None:
                hold.job.cancel()
            # Until here, a drain hands its lease back (see Worker.abort).
            self._in_flight.release(task)
        if hold.attempt_scope.cancelled_caught:  # its scheduling could not be written
            return hold.outcome
        if hold.written is None:
            merged = await self._commit_with_outcome(task, queue, loaded, plan, held, attempt)
            if merged is not None:
                labelled(EAGER_ACTIVITIES, "with_outcome").inc()
                return merged
            # The instance refused the outcome and is ahead of the history: not kept.
            hold.outcome = await self._hold(task, queue, loaded, plan, held, keep=False)
            if hold.outcome != Reply.OK:
                return hold.outcome
        await self._activity_tasks.settle(held, queue, attempt)
        # A task the outcome's commit delivered runs after this workflow task.
        self._in_flight.pass_follow_up(held, task)
        return hold.outcome

    async def _hold_slow_attempt(
        self, hold: _Hold, job: anyio.CancelScope, written: asyncio.Event
    ) -> None:
        """At the eager window's end, write the scheduling of the activity still running,
        then renew its lease until the attempt ends; if the scheduling cannot be written
        (the history moved, Redis failed), cancel the attempt: a replay schedules it
        again."""
        task, held = hold.task, hold.held
        with job:
            try:
                # Named in the heartbeat before its lease is written: should this worker
                # die, the others find the lease by it (see Takeover). Retried, as the
                # commit is, while Redis cannot be reached: given up, it would cancel
                # the attempt, and the activity would run again a lease later.
                self._in_flight.name_lease(task, held)
                await self._trouble.while_unreachable(task, self._beat)
                hold.outcome = await self._hold(
                    task, hold.queue, hold.loaded, hold.plan, held, keep=True
                )
            except Exception as exc:  # the attempt waits for an outcome, whatever happened
                log = logger.warning if isinstance(exc, RedisError) else logger.exception
                # Named by workflow and seq: the task carries the activity's arguments.
                log(
                    "could not write the scheduling of activity seq %s of workflow %s: %s",
                    int(held.fields[TaskField.SEQ]),
                    held.workflow_id,
                    exc,
                )
                hold.outcome = TaskOutcome.ERROR
            finally:
                written.set()
            if hold.outcome != Reply.OK:
                hold.attempt_scope.cancel()
                return
            self._in_flight.hold(task, held)  # a drain hands its lease back
            while True:
                await anyio.sleep(self._lease_ms / 3000)
                try:
                    await self._store.renew_activity_lease(held, now_ms() + self._lease_ms)
                except RedisError as exc:
                    logger.warning(
                        "could not renew the lease of activity seq %s of workflow %s: %s",
                        int(held.fields[TaskField.SEQ]),
                        held.workflow_id,
                        exc,
                    )

    async def _hold(
        self, task: Task, queue: str, loaded: Loaded, plan: TaskPlan, held: Task, *, keep: bool
    ) -> str:
        """Commit the workflow task with its eager activity's lease in place of its task."""
        labelled(EAGER_ACTIVITIES, "before_outcome").inc()
        lease = (now_ms() + self._lease_ms, held.lease)
        outcome = await self._commits.commit(
            task, queue, loaded, [replace(plan, extra_timers=[lease])], keep=keep
        )
        self._timers.wake()  # the sweep learns when the lease is due
        return outcome

    async def _commit_with_outcome(
        self,
        task: Task,
        queue: str,
        loaded: Loaded,
        plan: TaskPlan,
        held: Task,
        attempt: Attempt,
    ) -> str | None:
        """The workflow task and its eager activity's attempt in one commit: with the
        retry of the next attempt, or with the outcome and the code's next activation.
        None if the instance refused the outcome (the caller writes them apart)."""
        seq = int(held.fields[TaskField.SEQ])
        if attempt.retry_due_ms is not None:
            retry = self._store.retry_member(
                task.workflow_id, queue, seq, 2, held.fields[TaskField.PAYLOAD]
            )
            plans = [replace(plan, extra_timers=[(attempt.retry_due_ms, retry)])]
            self._timers.wake()
        else:
            event = attempt.outcome_event(seq)
            try:
                activation = loaded.instance.apply([event], event.time_ms)
            except (NonDeterministicWorkflowError, PayloadError):
                return None
            plans = [plan, plan_of(activation, event.time_ms, event, attempt.encoded)]
        return await self._commits.commit(
            task, queue, loaded, plans, take_next_for=self._intake.take_next_for()
        )
