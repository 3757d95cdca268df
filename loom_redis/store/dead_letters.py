"""The dead-letter streams: tasks that cannot run, with why, until put back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import PayloadError
from ._part import StorePart
from .connection import (
    RedisPipeline,
    acl_checked,
    answered,
)
from .keys import WORKER_GROUP
from .tasks import Task
from .wire import (
    MAX_TASK_FIELDS,
    DeadLetterField,
    TaskField,
    TaskKind,
    text,
)


@dataclass(frozen=True)
class DeadLetter:
    """A task in a dead-letter stream: its original fields plus why and where from."""

    # Fields the dead-letter script adds to the task's own.
    ANNOTATIONS = (DeadLetterField.REASON, DeadLetterField.QUEUE, DeadLetterField.TASK_ID)

    shard: int
    id: str
    fields: dict[str, bytes]

    @property
    def reason(self) -> str:
        return text(self.fields.get(DeadLetterField.REASON))

    @property
    def workflow_id(self) -> str:
        return text(self.fields.get(TaskField.WORKFLOW_ID))

    @property
    def kind(self) -> str:
        if DeadLetterField.TIMER in self.fields:  # a corrupt timer member, not a task
            return "timer"
        kinds: dict[str, str] = {TaskKind.WORKFLOW: "workflow", TaskKind.ACTIVITY: "activity"}
        return kinds.get(text(self.fields.get(TaskField.KIND)), "unknown")


def _stream_id_order(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


class DeadLetters(StorePart):
    """Dead-lettering a task, listing and re-driving dead letters."""

    async def dead_letter(self, task: Task, reason: str) -> None:
        workflow_id = task.workflow_id
        keys = self.keys
        dead = keys.dead(task.shard)
        same_shard = bool(workflow_id) and keys.shard_of(workflow_id) == task.shard
        meta = keys.meta(workflow_id) if same_shard else dead
        fields: list[Any] = []
        for name, value in list(task.fields.items())[:MAX_TASK_FIELDS]:
            fields += [name, value]
        if len(task.fields) > MAX_TASK_FIELDS:
            reason += (
                f" (the task has {len(task.fields)} fields; the first {MAX_TASK_FIELDS} are kept)"
            )
        await self._run(
            "dead_letter",
            [task.queue_key, dead, meta],
            [
                task.id,
                WORKER_GROUP,
                reason,
                task.kind if same_shard else "",
                text(task.fields.get(TaskField.SEQ)),
                *fields,
            ],
        )

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """The newest dead-lettered tasks of every shard, newest first."""
        pipe: RedisPipeline = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.xrevrange(self.keys.dead(shard), count=limit)
        found: list[DeadLetter] = []
        for shard, entries in enumerate(await pipe.execute()):
            for entry_id, raw in entries:
                fields = {text(k): v for k, v in raw.items()}
                found.append(DeadLetter(shard, text(entry_id), fields))
        found.sort(key=lambda d: _stream_id_order(d.id), reverse=True)
        return found[:limit]

    async def find_dead_letter(self, entry_id: str) -> DeadLetter | None:
        pipe: RedisPipeline = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.xrange(self.keys.dead(shard), min=entry_id, max=entry_id)
        for shard, entries in enumerate(answered(await pipe.execute(raise_on_error=False))):
            if isinstance(entries, list) and entries:
                fields = {text(k): v for k, v in entries[0][1].items()}
                return DeadLetter(shard, entry_id, fields)
        return None

    async def redrive(self, dead: DeadLetter) -> str:
        """Put a dead-lettered task back on its queue: 'ok', 'missing' or 'already-queued'.

        Raises PayloadError for an entry that is not a task of this namespace's queues
        (a corrupt timer member, an entry written by hand)."""
        queue_key = text(dead.fields.get(DeadLetterField.QUEUE))
        prefixes = (self.keys.queue(dead.shard, ""), self.keys.activity_queue(dead.shard, ""))
        problem = ""
        if DeadLetterField.TIMER in dead.fields:
            problem = "it is a corrupt timer member, not a task"
        elif not queue_key.startswith(prefixes):
            problem = f"its 'queue' field {queue_key!r} is not a task queue of shard {dead.shard}"
        elif text(dead.fields.get(TaskField.KIND)) not in set(TaskKind):
            problem = "its 'k' field is not w (workflow task) or a (activity task)"
        elif len(dead.fields) > MAX_TASK_FIELDS + len(DeadLetter.ANNOTATIONS):
            problem = f"it has {len(dead.fields)} fields, more than a task has ({MAX_TASK_FIELDS})"
        if problem:
            raise PayloadError(f"dead-lettered entry {dead.id} cannot be put back: {problem}")
        task_fields = {k: v for k, v in dead.fields.items() if k not in DeadLetter.ANNOTATIONS}
        workflow_id = text(task_fields.get(TaskField.WORKFLOW_ID))
        same_shard = bool(workflow_id) and self.keys.shard_of(workflow_id) == dead.shard
        dead_key = self.keys.dead(dead.shard)
        kind = text(task_fields.get(TaskField.KIND)) if same_shard else ""
        flat: list[Any] = []
        for name, value in task_fields.items():
            flat += [name, value]
        with acl_checked(f"re-drive dead-lettered task {dead.id}", self.url, self.keys.namespace):
            return text(
                await self._run(
                    "redrive",
                    [
                        dead_key,
                        queue_key,
                        self.keys.meta(workflow_id) if same_shard else dead_key,
                    ],
                    [dead.id, kind, *flat],
                )
            )
