"""The executors: `concurrency` loops that run the accepted tasks one at a time, each
by its kind, and count how each ended."""

from __future__ import annotations

import logging

from ..errors import PayloadError
from ..logs import about_task
from ..metrics import SCHEDULE_TO_START, TASKS, labelled
from ..store import Task
from ..store.connection import RedisError, now_ms
from ..store.wire import TaskKind
from ._activity_tasks import ActivityTasks
from ._in_flight import InFlight
from ._outcomes import TaskOutcome
from ._trouble import RedisTrouble
from ._unrunnable import Unrunnable, kind_label, malformed
from ._workflow_tasks import WorkflowTasks

logger = logging.getLogger("loom_redis.worker")


class Executors:
    """Runs the tasks of the in-flight registry: a task whose transition delivered the
    next one is followed by it on the same executor."""

    def __init__(
        self,
        max_deliveries: int,
        streams: dict[str, tuple[int, str]],
        in_flight: InFlight,
        trouble: RedisTrouble,
        workflow_tasks: WorkflowTasks,
        activity_tasks: ActivityTasks,
        unrunnable: Unrunnable,
    ) -> None:
        self._max_deliveries = max_deliveries
        self._streams = streams
        self._in_flight = in_flight
        self._trouble = trouble
        self._workflow_tasks = workflow_tasks
        self._activity_tasks = activity_tasks
        self._unrunnable = unrunnable

    async def run(self) -> None:
        """Run accepted tasks one at a time; `concurrency` of these run."""
        in_flight = self._in_flight
        while True:
            task, deliveries = await in_flight.next_queued()
            follow_up = await self._execute(task, deliveries)
            # A follow-up runs here at once, unless accepted tasks wait for an executor:
            # then it waits behind them (it is already counted in flight).
            while follow_up is not None and not in_flight.has_queued():
                follow_up = await self._execute(follow_up, 1)
            if follow_up is not None:
                in_flight.queue(follow_up, 1)

    async def _execute(self, task: Task, deliveries: int) -> Task | None:
        """Run one task; returns the task its transition delivered to run next, if any."""
        queue = self._streams[task.queue_key][1]
        outcome: str = TaskOutcome.ERROR
        kind = kind_label(task)
        # (An activity run at once by its workflow task's worker was never queued: no id.)
        if deliveries == 1 and task.id:
            waited = max(now_ms() - task.queued_ms, 0) / 1000
            labelled(SCHEDULE_TO_START, queue, kind).observe(waited)
        with about_task(workflow_id=task.workflow_id, queue=queue, task=task.id):
            try:
                if deliveries > self._max_deliveries:
                    outcome = TaskOutcome.DEAD
                    await self._unrunnable.dead_letter(
                        task,
                        f"delivered {deliveries} times, over the limit of {self._max_deliveries} "
                        "(each worker that took it died or lost its lease)",
                    )
                elif (problem := malformed(task)) is not None:
                    outcome = TaskOutcome.DEAD
                    await self._unrunnable.dead_letter(task, problem)
                elif task.kind == TaskKind.WORKFLOW:
                    # Its first delivery may run an activity at once; a task taken over
                    # from a worker that died leaves its activities queued, so that one
                    # that kills workers ends in the dead-letter stream as itself.
                    eager = deliveries == 1
                    outcome = await self._trouble.while_unreachable(
                        task, lambda: self._workflow_tasks.run(task, queue, eager=eager)
                    )
                elif task.kind == TaskKind.ACTIVITY:
                    outcome = await self._activity_tasks.run(task, queue)
                else:
                    outcome = TaskOutcome.DEAD
                    await self._unrunnable.dead_letter(task, f"unknown task kind {task.kind!r}")
            except PayloadError as exc:
                outcome = TaskOutcome.DEAD
                await self._unrunnable.dead_letter(task, f"bad payload: {exc}")
            except RedisError as exc:
                # Left pending: the reclaimer (here or elsewhere) retries it after the lease.
                logger.warning(
                    "Redis error on task %s of workflow %s: %s", task.id, task.workflow_id, exc
                )
            except Exception:
                logger.exception(
                    "task %s of workflow %s failed unexpectedly; it stays pending "
                    "and is retried after the lease",
                    task.id,
                    task.workflow_id,
                )
            finally:
                self._in_flight.finish(task)
                labelled(TASKS, queue, kind, outcome).inc()
        return self._in_flight.follow_up_of(task)
