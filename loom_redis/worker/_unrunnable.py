"""Tasks a worker cannot run: entries loom-redis did not write and poison go to the
dead-letter stream; those of a workflow or activity it does not register go back to
the queue for a worker that does."""

from __future__ import annotations

import logging
from typing import Any

import anyio

from ..definitions import registered_activities, registered_workflows
from ..metrics import DEAD_LETTERS, UNREGISTERED_TASKS, labelled
from ..store import Store, Task, registering
from ..store.connection import now_ms
from ..store.wire import TaskField, TaskKind
from ._outcomes import TaskOutcome
from ._timers import TimerSweep

logger = logging.getLogger("loom_redis.worker")

# A task this worker does not register waits this long, doubling up to the cap, each
# time it is handed back for another worker.
UNREGISTERED_DELAY_SECONDS = 0.25
MAX_UNREGISTERED_DELAY_SECONDS = 10.0

_KIND_LABELS: dict[str, str] = {TaskKind.WORKFLOW: "workflow", TaskKind.ACTIVITY: "activity"}


class Unrunnable:
    """Sends away the tasks that cannot run here."""

    def __init__(self, store: Store, timers: TimerSweep, grace_ms: int) -> None:
        self._store = store
        self._timers = timers
        # How long a task whose name no live worker of its queue registers is handed back
        # before it goes to the dead-letter stream.
        self._grace_ms = grace_ms
        # The workers' heartbeats as last read (when, what), for tasks this worker does
        # not register.
        self._heartbeats: tuple[float, list[dict[str, Any]]] | None = None

    async def dead_letter(self, task: Task, reason: str) -> None:
        logger.error(
            "task %s of workflow %r goes to the dead-letter stream: %s",
            task.id,
            task.workflow_id,
            reason,
        )
        labelled(DEAD_LETTERS, kind_label(task)).inc()
        await self._store.dead_letter(task, reason)

    async def unregistered(self, task: Task, queue: str, kind: str, name: str) -> str:
        """A task whose workflow or activity (`kind`) this worker does not register (a
        rolling deploy, workers split by team): handed back to the queue for another
        worker (in 0.25 s while a live worker of the queue registers the name, else
        waiting longer each time) until none has for `unregistered_grace_seconds`; then
        dead-lettered."""
        what = f"{kind} {name!r}"
        mine = sorted(registered_workflows() if kind == "workflow" else registered_activities())
        others = await self._workers_registering(queue, kind, name)
        now = now_ms()
        since = 0 if others else task.unregistered_since or now
        if since and now - since >= self._grace_ms:
            labelled(UNREGISTERED_TASKS, kind, name, TaskOutcome.DEAD).inc()
            await self.dead_letter(
                task,
                f"no live worker of queue {queue!r} has registered {what} (workflow "
                f"{task.workflow_id!r}) for {(now - since) / 1000:.0f}s: start a worker with "
                f"the module that defines it, then `loom dead retry`; this worker registers "
                f"{', '.join(mine) or 'no ' + kind}",
            )
            return TaskOutcome.DEAD
        # The back-off spares Redis while no worker can run the task. While one can, it
        # would only delay the task: each hand-back may come back to this worker (a
        # blocked read is served in the order the readers blocked), so it stays short.
        delay = min(
            UNREGISTERED_DELAY_SECONDS * 2 ** min(0 if others else task.handbacks, 16),
            MAX_UNREGISTERED_DELAY_SECONDS,
        )
        labelled(UNREGISTERED_TASKS, kind, name, "handed_back").inc()
        if others:
            who = f"worker(s) {', '.join(others)} register it"
        else:
            left = (self._grace_ms - (now - since)) / 1000
            who = f"no live worker of the queue registers it: dead-lettered in {left:.0f}s"
        logger.warning(
            "task %s of workflow %s: this worker does not register %s (it registers %s); "
            "handed back to queue %r for another worker in %.2gs (%s)",
            task.id,
            task.workflow_id,
            what,
            ", ".join(mine) or f"no {kind}",
            queue,
            delay,
            who,
        )
        await self._store.defer_task(task, queue, now + int(delay * 1000), unregistered_since=since)
        self._timers.wake()
        return "handed_back"

    async def _workers_registering(self, queue: str, kind: str, name: str) -> list[str]:
        """The live workers of `queue` whose heartbeat says they register `name` (a
        workflow or activity, by `kind`); heartbeats are read at most once a second."""
        now = anyio.current_time()
        if self._heartbeats is None or now - self._heartbeats[0] > 1.0:
            self._heartbeats = (now, await self._store.live_workers())
        return registering(self._heartbeats[1], queue, kind, name)


def kind_label(task: Task) -> str:
    """The task's kind as a metrics label: never a garbage value from a hand-written entry."""
    return _KIND_LABELS.get(task.kind, "unknown")


def malformed(task: Task) -> str | None:
    """Why a task entry cannot be run (an unknown kind, a field missing or not a number),
    or None. Such an entry was not written by loom-redis: it goes to the dead-letter stream."""

    def fields() -> str:  # made only for a reason: most tasks are sound
        return ", ".join(sorted(repr(name) for name in task.fields)) or "none"

    kind, workflow_id = TaskField.KIND, TaskField.WORKFLOW_ID
    if task.kind not in set(TaskKind):
        return (
            f"task {task.id} has unknown kind {task.kind!r} (field {kind!r}): expected "
            f"{kind}={TaskKind.WORKFLOW} (a workflow task) or {kind}={TaskKind.ACTIVITY} (an "
            f"activity task); its fields: {fields()}"
        )
    what = f"{_KIND_LABELS[task.kind]} task {task.id}"
    if not task.workflow_id:
        return (
            f"{what} has no {workflow_id!r} field (the id of its workflow); its fields: {fields()}"
        )
    if task.kind == TaskKind.ACTIVITY:
        what = f"{what} of workflow {task.workflow_id!r}"
        for name, required in (
            (TaskField.SEQ, True),
            (TaskField.ATTEMPT, False),
            (TaskField.PAYLOAD, True),
        ):
            value = task.fields.get(name)
            if value is None:
                if required:
                    return f"{what}: field {name!r} is missing; its fields: {fields()}"
            elif name != TaskField.PAYLOAD and not (value.isdigit() and int(value) >= 1):
                return f"{what}: field {name!r} must be a whole number >= 1, got {value!r}"
    return None
