"""The worker: reads tasks from Redis Streams, runs workflow tasks and activities.

Everything it runs is a child of one task group: the task readers, the reclaimer of
tasks whose worker died, the executors, the timer sweeper, lease renewal of running
tasks, the heartbeat and the metrics endpoint. `stop()` (SIGTERM) drains: reading
stops, in-flight tasks finish within `drain_seconds`, the rest are handed back;
`abort()` (a second SIGTERM) hands them back at once.

`Worker` (in `_worker`) composes collaborators, each in its own private module, which
share state only through the objects they are handed:

- `_options`: the settings, checked.
- `_in_flight`: the tasks taken and not finished (running, waiting for an executor,
  follow-ups, held activities), capacity, and what a stop hands back.
- `_instances`: the workflow instances kept between their tasks.
- `_intake`: reading each shard, claiming stale tasks, as far as capacity goes.
- `_executors`: the loops that run each accepted task by its kind.
- `_workflow_tasks`: a workflow task: load, replay, commit, retry on conflict.
- `_workflow_commits`: replay an instance and commit what its code did; fail a
  workflow that cannot replay.
- `_eager`: the first activity a workflow task schedules, run at once.
- `_attempts`: one attempt of an activity and what is to be written of it.
- `_activity_tasks`: queued activity tasks, and recording attempts.
- `_unrunnable`: dead letters, and tasks this worker does not register.
- `_timers`: the timer sweep.
- `_housekeeping`: lease renewal, heartbeats, pruning departed workers, definitions.
- `_trouble`: Redis unreachable, out of memory, or its namespace lost.
"""

from ._worker import Worker

__all__ = ["Worker"]
