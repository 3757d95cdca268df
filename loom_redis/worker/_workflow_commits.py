"""Replaying a workflow instance and committing what its code did, or failing the
workflow when its history cannot be replayed."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..codec import encode
from ..definitions import NondeterminismPolicy
from ..engine import Activation, WorkflowInstance, failure_record
from ..errors import NonDeterministicWorkflowError, PayloadError, WorkflowExecutionError
from ..events import COMMAND_TYPES, Command, Event, EventType, Status
from ..logs import learned
from ..metrics import WORKFLOW_SECONDS, WORKFLOW_TASK_SECONDS, WORKFLOWS_CLOSED, labelled
from ..store import CommitResult, Store, Task, TaskPlan
from ..store.connection import now_ms
from ..store.wire import Reply, TimerKind
from ._in_flight import InFlight
from ._instances import InstanceCache
from ._intake import Intake
from ._options import Options
from ._outcomes import TaskOutcome
from ._timers import TimerSweep
from ._trouble import RedisTrouble

logger = logging.getLogger("loom_redis.worker")


@dataclass
class Loaded:
    """An instance and the history events it is about to apply.

    `completing` is set when the only event is an activity's outcome that this worker
    holds and the commit is to record (`completing_data` encoded): it is in no history
    yet.
    """

    instance: WorkflowInstance
    events: list[Event]
    base_length: int
    base_last_id: str
    completing: Event | None = None
    completing_data: bytes = b""
    # How many of the first events the instance's last commit left to this task: they
    # are counted in `base_length` and come before `base_last_id`.
    carried: int = 0
    # The events are the copy a workflow's first task carries, as of its queueing: what
    # came after them may have come before the task ran, so the code must see it first.
    queued_copy: bool = False

    @property
    def length(self) -> int:
        """The history length once the events are applied: the commit's fencing token
        (an outcome being completed is in no history yet)."""
        return self.base_length + len(self.events) - self.carried - (self.completing is not None)

    @property
    def last_id(self) -> str:
        """The id of the last history entry read (or being completed)."""
        return self.events[-1].id if len(self.events) > self.carried else self.base_last_id

    @property
    def skip_from(self) -> str:
        """The commit's `last_read_id`: "" when events after the last one read must fence
        it out (an outcome being completed is in no history; a queued copy is old)."""
        return "" if self.completing is not None or self.queued_copy else self.last_id


class RunsAtOnce(Protocol):
    """What runs the first activity a workflow task schedules at once (see
    EagerActivities)."""

    def candidate(
        self, activation: Activation, loaded: Loaded, take_next_for: str
    ) -> tuple[Command, Any] | None: ...

    async def run(
        self, task: Task, queue: str, loaded: Loaded, plan: TaskPlan, command: Command, fn: Any
    ) -> str: ...


class WorkflowCommits:
    """Applies loaded events to a workflow instance and writes what its code did, fenced
    by the history's length; then takes the task the commit delivered, wakes the timer
    sweep for new timers and keeps the instance for the workflow's next task."""

    def __init__(
        self,
        store: Store,
        options: Options,
        in_flight: InFlight,
        instances: InstanceCache,
        intake: Intake,
        timers: TimerSweep,
        trouble: RedisTrouble,
    ) -> None:
        self._store = store
        self._options = options
        self._trouble = trouble
        self._in_flight = in_flight
        self._instances = instances
        self._intake = intake
        self._timers = timers

    async def replay_and_commit(
        self, task: Task, queue: str, loaded: Loaded, *, at_once: RunsAtOnce | None = None
    ) -> str:
        """Apply the events to the instance and commit what its code did; with `at_once`,
        the first activity it schedules may run at once."""
        started = time.perf_counter()
        try:
            return await self._replay_and_commit_timed(task, queue, loaded, at_once)
        finally:
            name = loaded.instance.definition.name
            labelled(WORKFLOW_TASK_SECONDS, name).observe(time.perf_counter() - started)

    async def _replay_and_commit_timed(
        self, task: Task, queue: str, loaded: Loaded, at_once: RunsAtOnce | None
    ) -> str:
        instance = loaded.instance
        definition = instance.definition
        completing = loaded.completing
        learned(workflow=definition.name)
        try:
            task_time = completing.time_ms if completing is not None else now_ms()
            activation = instance.apply(loaded.events, task_time)
            learned(step=instance.step_name)
        except (NonDeterministicWorkflowError, PayloadError) as exc:
            if loaded.base_length:
                return TaskOutcome.RELOAD  # judge it on a replay of the whole history
            if isinstance(exc, PayloadError):
                return await self._fail(task, queue, loaded.events, exc)
            policy = definition.on_nondeterminism or self._options.on_nondeterminism
            return await self._nondeterministic(task, queue, loaded.events, exc, policy)
        take_next_for = self._intake.take_next_for()
        held = at_once.candidate(activation, loaded, take_next_for) if at_once is not None else None
        plan = plan_of(
            activation,
            task_time,
            completing,
            loaded.completing_data,
            # The outcome of an activity this worker held: its lease goes.
            timers_delete=[task.lease] if task.lease else (),
            held_activity=held[0].seq if held is not None else None,
        )
        if at_once is None or held is None:
            return await self.commit(task, queue, loaded, [plan], take_next_for=take_next_for)
        return await at_once.run(task, queue, loaded, plan, *held)

    async def commit(
        self,
        task: Task,
        queue: str,
        loaded: Loaded,
        plans: list[TaskPlan],
        *,
        take_next_for: str = "",
        keep: bool = True,
    ) -> str:
        """Write the plans of workflow task `task`, fenced by the history `loaded` read,
        and take what the commit delivered (see committed).

        Retried here while Redis cannot be reached, not by running the task again: an
        activity the task ran at once would run again (a repeat of a commit that was
        made is fenced out, and the history has it)."""
        result = await self._trouble.while_unreachable(
            task,
            lambda: self._store.commit_workflow_task(
                task.workflow_id,
                queue=queue,
                task_id=task.id,
                expected_length=loaded.length,
                plans=plans,
                take_next_for=take_next_for,
                task_stream=task.queue_key,
                last_read_id=loaded.skip_from,
            ),
        )
        return self._committed(task, loaded.instance, plans, result, loaded.last_id, keep=keep)

    def _committed(
        self,
        task: Task,
        instance: WorkflowInstance,
        plans: list[TaskPlan],
        result: CommitResult,
        last_id: str,
        *,
        keep: bool,
    ) -> str:
        """After a commit: take the task it delivered, wake the timer sweep for new timers,
        and keep the instance (`keep`) if the workflow goes on."""
        self._in_flight.adopt(task, result.next_task)
        if result.outcome == Reply.OK:
            commands = [command for plan in plans for command in plan.commands]
            if any(c.type == EventType.TIMER_STARTED for c in commands):
                self._timers.wake()
            status = plans[-1].status
            if status.is_terminal:
                name = instance.definition.name
                labelled(WORKFLOWS_CLOSED, name, str(status)).inc()
                if instance.started_ms is not None:
                    took = max(now_ms() - instance.started_ms, 0) / 1000
                    labelled(WORKFLOW_SECONDS, name, str(status)).observe(took)
            elif keep and result.skipped_events is not None:
                self._instances.keep(
                    task.workflow_id,
                    instance,
                    result.length,
                    result.last_id or last_id,
                    result.skipped_events,
                )
        return result.outcome

    async def _nondeterministic(
        self,
        task: Task,
        queue: str,
        history: list[Event],
        error: NonDeterministicWorkflowError,
        policy: NondeterminismPolicy,
    ) -> str:
        # The error quotes the values that differ (users' data): in full only at DEBUG.
        logger.debug("%s", error)
        if policy == "fail":
            logger.error(
                "workflow %s cannot replay its history (NonDeterministicWorkflowError): it "
                "fails; `loom inspect %s` shows where and what differs",
                task.workflow_id,
                task.workflow_id,
            )
            return await self._fail(task, queue, history, error)
        due = now_ms() + self._options.suspend_retry_ms
        logger.error(
            "workflow %s cannot replay its history (NonDeterministicWorkflowError): "
            "suspended, retried at %s; `loom inspect %s` shows where and what differs",
            task.workflow_id,
            time.ctime(due / 1000),
            task.workflow_id,
        )
        member = self._store.timer_member(TimerKind.RESUME, task.workflow_id, queue, 0)
        result = await self._store.commit_workflow_task(
            task.workflow_id,
            queue=queue,
            task_id=task.id,
            expected_length=len(history),
            plans=[
                TaskPlan(
                    [],
                    Status.SUSPENDED,
                    meta={"suspended": encode(failure_record(error, None))},
                    extra_timers=[(due, member)],
                    keep_task_flag=True,
                )
            ],
        )
        self._timers.wake()
        return TaskOutcome.SUSPENDED if result.outcome == Reply.OK else result.outcome

    async def fail_unreadable(self, task: Task, queue: str, error: PayloadError) -> str:
        """Fail a workflow whose history holds an entry that does not decode: it can never
        be replayed again. Only that workflow fails; the task does not go to the
        dead-letter stream. The commit is fenced by the history's length (XLEN)."""
        workflow_id = task.workflow_id
        self._instances.forget(workflow_id)
        length, last_seq = await self._store.history_summary(workflow_id)
        failure = WorkflowExecutionError(
            f"{error}; the workflow cannot be replayed, so it fails", workflow_id
        )
        logger.error("workflow %s: %s", workflow_id, failure)
        command = Command(EventType.WORKFLOW_FAILED, last_seq + 1, failure_record(failure, None))
        return await self._write_failure(task, queue, length, command)

    async def _fail(self, task: Task, queue: str, history: list[Event], error: Exception) -> str:
        """Fail the workflow with `error`, whatever its code would do (it cannot run)."""
        seq = max((e.seq for e in history if e.type in COMMAND_TYPES), default=0) + 1
        command = Command(EventType.WORKFLOW_FAILED, seq, failure_record(error, None))
        return await self._write_failure(task, queue, len(history), command)

    async def _write_failure(
        self, task: Task, queue: str, expected_length: int, command: Command
    ) -> str:
        result = await self._store.commit_workflow_task(
            task.workflow_id,
            queue=queue,
            task_id=task.id,
            expected_length=expected_length,
            plans=[TaskPlan([command], Status.FAILED)],
        )
        return TaskOutcome.FAILED if result.outcome == Reply.OK else result.outcome


def plan_of(
    activation: Activation,
    time_ms: int,
    completing: Event | None = None,
    data: bytes = b"",
    *,
    timers_delete: Sequence[bytes] = (),
    held_activity: int | None = None,
) -> TaskPlan:
    """What a workflow task whose code ran `activation` at `time_ms` writes."""
    meta_delete: list[str] = []
    if activation.status.is_terminal:
        meta_delete += [f"a:{s}" for s in activation.pending_activities]
        meta_delete += [f"t:{s}" for s in activation.pending_timers]
    return TaskPlan(
        activation.commands,
        activation.status,
        time_ms=time_ms,
        meta_delete=meta_delete,
        consumed_events=activation.ran,
        completing=completing,
        completing_data=data,
        timers_delete=timers_delete,
        held_activity=held_activity,
        waiting_signals=activation.waiting_signals,
    )
