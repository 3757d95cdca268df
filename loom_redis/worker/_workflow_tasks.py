"""Workflow tasks: the workflow's instance loaded (from the cache, or replayed from its
history), its code run, and the commit retried while other writers win."""

from __future__ import annotations

import logging

from ..definitions import registered_workflow
from ..engine import WorkflowInstance
from ..errors import PayloadError
from ..events import EventType
from ..metrics import COMMIT_CONFLICTS
from ..store import Store, Task
from ..store.wire import Reply
from ._eager import EagerActivities
from ._instances import InstanceCache
from ._outcomes import TaskOutcome
from ._unrunnable import Unrunnable
from ._workflow_commits import Loaded, WorkflowCommits

logger = logging.getLogger("loom_redis.worker")

# A workflow task whose commit keeps losing to other writers gives up after this many
# tries and stays pending, to be retried by the reclaimer.
MAX_COMMIT_TRIES = 20


class WorkflowTasks:
    """Runs workflow tasks."""

    def __init__(
        self,
        store: Store,
        instances: InstanceCache,
        commits: WorkflowCommits,
        eager: EagerActivities,
        unrunnable: Unrunnable,
    ) -> None:
        self._store = store
        self._instances = instances
        self._commits = commits
        self._eager = eager
        self._unrunnable = unrunnable

    async def run(self, task: Task, queue: str, *, eager: bool) -> str:
        """Run the task; with `eager`, the first activity its code schedules may run at
        once (see EagerActivities)."""
        at_once = self._eager if eager else None
        for attempt in range(MAX_COMMIT_TRIES):
            try:
                # What the task carries was the history when it was queued: good for a
                # first try only, as a conflict means the history has moved since.
                loaded = await self._load(task, queue, use_carried=attempt == 0)
            except PayloadError as exc:  # a history entry that does not decode
                outcome = await self._commits.fail_unreadable(task, queue, exc)
                if outcome != Reply.CONFLICT:
                    return outcome
                COMMIT_CONFLICTS.inc()
                continue
            if isinstance(loaded, str):
                return loaded
            outcome = await self._commits.replay_and_commit(task, queue, loaded, at_once=at_once)
            if outcome == Reply.CONFLICT:
                COMMIT_CONFLICTS.inc()
            elif outcome != TaskOutcome.RELOAD:
                return outcome
        logger.warning(
            "workflow task %s of %s lost %d commits in a row; retrying later",
            task.id,
            task.workflow_id,
            MAX_COMMIT_TRIES,
        )
        return Reply.CONFLICT

    async def _load(self, task: Task, queue: str, *, use_carried: bool) -> Loaded | str:
        """The workflow's instance and the history events it has not applied yet.

        A cached instance (still running this worker's code) needs only the events
        after the last one it applied; otherwise the whole history is replayed. Events
        the task brings along (`use_carried`) save reading them; the commit's fence
        catches any that came after.
        Returns the task's outcome instead when it cannot run here (it went to the
        dead-letter stream, or back to the queue for a worker that registers its workflow).
        """
        workflow_id = task.workflow_id
        cached = self._instances.take(workflow_id)
        if cached is not None:
            preloaded = task.preloaded if use_carried else None
            if preloaded is not None and preloaded[0] == cached.last_id:
                events = preloaded[1]
            else:
                events = await self._store.read_history(workflow_id, after=cached.last_id)
            return Loaded(
                cached.instance,
                cached.carried + events,
                cached.length,
                cached.last_id,
                carried=len(cached.carried),
            )
        queued_copy = self._store.carried_history(task) if use_carried else None
        history = queued_copy or await self._store.read_history(workflow_id)
        if not history or history[0].type != EventType.WORKFLOW_STARTED:
            await self._unrunnable.dead_letter(task, f"workflow {workflow_id!r} has no history")
            return TaskOutcome.DEAD
        name = str((history[0].data or {}).get("name", ""))
        found = registered_workflow(name)
        if found is None:
            return await self._unrunnable.unregistered(task, queue, "workflow", name)
        instance = WorkflowInstance(found, workflow_id)  # type: ignore[abstract]
        return Loaded(instance, history, 0, "", queued_copy=bool(queued_copy))
