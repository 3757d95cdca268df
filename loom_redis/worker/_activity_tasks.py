"""Activity tasks: an attempt run from the queue, and what it came to written (its
outcome, or the retry of its next attempt)."""

from __future__ import annotations

from ..definitions import registered_activity
from ..logs import learned
from ..store import Store, Task
from ..store.wire import Reply, TaskField
from ._attempts import Attempt, attempt_number, run_attempt, scheduled_activity
from ._in_flight import InFlight
from ._instances import InstanceCache
from ._intake import Intake
from ._outcomes import TaskOutcome
from ._timers import TimerSweep
from ._trouble import RedisTrouble
from ._unrunnable import Unrunnable
from ._workflow_commits import Loaded, WorkflowCommits


class ActivityTasks:
    """Runs queued activity tasks and records their attempts, with the workflow task
    they wake when this worker holds the workflow's instance."""

    def __init__(
        self,
        store: Store,
        in_flight: InFlight,
        instances: InstanceCache,
        intake: Intake,
        timers: TimerSweep,
        trouble: RedisTrouble,
        commits: WorkflowCommits,
        unrunnable: Unrunnable,
    ) -> None:
        self._store = store
        self._in_flight = in_flight
        self._instances = instances
        self._intake = intake
        self._timers = timers
        self._trouble = trouble
        self._commits = commits
        self._unrunnable = unrunnable

    async def run(self, task: Task, queue: str) -> str:
        scheduled = scheduled_activity(task)
        # For what is logged outside the attempt (its outcome written, or its retry).
        learned(activity=str(scheduled["name"]), attempt=attempt_number(task))
        definition = registered_activity(str(scheduled["name"]))
        if definition is None:
            return await self._unrunnable.unregistered(
                task, queue, "activity", str(scheduled["name"])
            )
        attempt = await run_attempt(task, scheduled, definition.fn)
        return await self.settle(task, queue, attempt)

    async def settle(self, task: Task, queue: str, attempt: Attempt) -> str:
        """Write what an attempt came to: its outcome, or its next attempt's retry."""
        if attempt.retry_due_ms is None:
            return await self._record(task, queue, attempt)
        due_ms = attempt.retry_due_ms
        outcome = await self._trouble.while_unreachable(
            task,
            lambda: self._store.schedule_activity_retry(
                task, queue=queue, attempt=attempt.number + 1, due_ms=due_ms
            ),
        )
        self._timers.wake()
        return TaskOutcome.RETRY if outcome == Reply.OK else outcome

    async def _record(self, task: Task, queue: str, attempt: Attempt) -> str:
        """Record the activity's outcome, once whatever the retries (a repeat finds it
        recorded: "duplicate").

        When this worker holds the workflow's instance, the outcome and the workflow
        task it wakes are one commit. Otherwise (or if that commit finds the history
        moved), the outcome alone is recorded and the queue's next task taken: with no
        backlog, the workflow task it requested, with the history this worker's
        instance lacks.
        """
        outcome = await self._trouble.while_unreachable(
            task, lambda: self._complete_in_place(task, queue, attempt)
        )
        if outcome is not None:
            return outcome
        cached = self._instances.peek(task.workflow_id)

        async def record() -> str:
            recorded = await self._store.record_activity_result(
                task,
                failed=attempt.failed,
                record=attempt.encoded,
                take_next_for=self._intake.take_next_for(),
                history_after=cached.last_id if cached is not None else "",
            )
            self._in_flight.adopt(task, recorded.next_task)
            return recorded.outcome

        return await self._trouble.while_unreachable(task, record)

    async def _complete_in_place(self, task: Task, queue: str, attempt: Attempt) -> str | None:
        """Feed the activity's outcome to the cached instance of its workflow and commit
        both in one transition; None when there is no such instance or the commit could
        not be made (the history moved, a workflow task is queued, replay disagreed)."""
        workflow_id = task.workflow_id
        cached = self._instances.peek(workflow_id)
        # With carried events, a workflow task is queued: the outcome waits for it.
        if cached is None or cached.carried:
            return None
        cached = self._instances.take(workflow_id)
        if cached is None:
            return None
        event = attempt.outcome_event(int(task.fields[TaskField.SEQ]))
        loaded = Loaded(
            cached.instance, [event], cached.length, cached.last_id, event, attempt.encoded
        )
        outcome = await self._commits.replay_and_commit(task, queue, loaded)
        if outcome in (Reply.CONFLICT, TaskOutcome.RELOAD):
            return None
        # The commit acknowledged the activity task: "closed" dropped its outcome.
        return Reply.DROPPED if outcome == Reply.CLOSED else outcome
