"""The task streams: reading, claiming, leases, handing tasks back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from redis.exceptions import ResponseError

from ..errors import ConfigurationError
from ..events import Event
from .connection import (
    RedisClient,
    RedisPipeline,
    answered,
    now_ms,
    permission_error,
    read_cut_short,
)
from .keys import MAX_SHARDS, WORKER_GROUP
from .replication import NotReplicatedError
from .timers import Timers
from .wire import (
    TaskField,
    TaskKind,
    TimerKind,
    activity_task_fields,
    field_map,
    text,
)


@dataclass(frozen=True)
class Task:
    """One entry of a task stream, as a worker received it."""

    queue_key: str
    shard: int
    id: str
    fields: dict[str, bytes]
    # For a workflow task delivered with an activity's result: (entry id, the workflow's
    # history entries after it), read in that same round trip.
    preloaded: tuple[str, list[Event]] | None = field(default=None, compare=False)

    # Decoded once: every step of a task's run asks.
    @cached_property
    def kind(self) -> str:
        return text(self.fields.get(TaskField.KIND))

    @cached_property
    def workflow_id(self) -> str:
        return text(self.fields.get(TaskField.WORKFLOW_ID))

    @property
    def queued_ms(self) -> int:
        """When the task was queued: the time part of its stream entry id."""
        return int(self.id.partition("-")[0])

    @property
    def unregistered_since(self) -> int:
        """Since when (ms) no live worker of its queue has registered the task's workflow
        or activity, as the workers that handed it back saw it; 0 if one had."""
        return int(self.fields.get(TaskField.UNREGISTERED_SINCE, b"0"))

    @property
    def handbacks(self) -> int:
        """How many times workers that do not register its name handed it back."""
        return int(self.fields.get(TaskField.HANDBACKS, b"0"))

    @property
    def lease(self) -> bytes:
        """The timer member standing in for an activity task that was never queued (its
        worker runs it at once: see Store.held_activity_task), b"" for a queued task."""
        return self.fields.get(TaskField.LEASE, b"")


def _task(stream: bytes | str, shard: int, entry_id: bytes, fields: dict[bytes, bytes]) -> Task:
    """A task stream entry as a read, a claim or a script returned it."""
    return Task(text(stream), shard, text(entry_id), {text(k): v for k, v in fields.items()})


def taken_task(shard: int, taken: Any) -> Task | None:
    """The task a script delivered with `take_next` ({stream, {id, fields}} or nil)."""
    if not taken:
        return None
    stream, (entry_id, flat) = taken
    return _task(stream, shard, entry_id, field_map(flat))


async def create_config(redis: RedisClient, key: str, shards: int) -> bytes | str | None:
    """Write a namespace's shard count unless it has one; the count it has now."""
    await redis.hsetnx(key, "shards", shards)
    return await redis.hget(key, "shards")


def stored_shards(key: str, found: bytes | str | None) -> int:
    """The shard count a namespace's config holds, refused unless it is 1..MAX_SHARDS (a
    hand-edited count would put every workflow on another shard)."""
    shards = text(found)
    if not (shards.isascii() and shards.isdigit() and 1 <= int(shards) <= MAX_SHARDS):
        raise ConfigurationError(
            f"field 'shards' of {key} holds {shards!r}, not a shard count 1..{MAX_SHARDS}; "
            "set it back to the count the namespace was created with (16 unless "
            "`loom init --shards` chose another)"
        )
    return int(shards)


class ConsumerGroupMissing(ResponseError):
    """A task stream has no consumer group (NOGROUP): the server lost the namespace's
    data, or its keys were deleted. Workers recreate them (`Store.restore_namespace`)."""


@contextlib.contextmanager
def groups_checked() -> Iterator[None]:
    try:
        yield
    except ResponseError as exc:
        if str(exc).startswith("NOGROUP"):
            raise ConsumerGroupMissing(str(exc)) from None
        raise


class Tasks(Timers):
    """Task streams of the namespace's queues, read and acknowledged by workers."""

    activity_task_fields = staticmethod(activity_task_fields)

    async def ensure_groups(self, queues: Iterable[str]) -> None:
        """Create the consumer group of every task stream that lacks one. A new group
        reads from the stream's start ("0"), so that tasks queued before it are run."""
        pipe: RedisPipeline = self.redis.pipeline(transaction=False)
        for stream in self.queue_keys(queues):
            pipe.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
        for reply in answered(await pipe.execute(raise_on_error=False)):
            if isinstance(reply, ResponseError) and "BUSYGROUP" not in str(reply):
                doing = "create the consumer groups of the task queues (XGROUP CREATE)"
                raise permission_error(reply, doing, self.url, self.keys.namespace) or reply

    async def restore_namespace(self, queues: Iterable[str]) -> bool:
        """Recreate what a server that lost the namespace's data no longer has: its config
        (with this store's shard count) and the consumer groups of the queues. Whether
        the config was missing.

        Raises ConfigurationError when the config now holds another shard count (a
        client that connected first created the namespace anew, with its count)."""
        key = self.keys.config()
        found = await self.redis.hget(key, "shards")
        missing = found is None
        if missing:
            found = await create_config(self.redis, key, self.keys.shards)
        stored = stored_shards(key, found)
        if stored != self.keys.shards:
            raise ConfigurationError(
                f"the Redis server lost the data of namespace {self.keys.namespace!r}, and "
                f"its config was created again with {stored} shards (by a client or worker "
                f"that connected first); this worker has {self.keys.shards}, so it cannot "
                f"serve the namespace: restart it (it then uses {stored} shards), or to "
                f"keep {self.keys.shards}, stop every client and worker, delete {key} and "
                f"run `loom init --shards {self.keys.shards}` before starting them again"
            )
        await self.ensure_groups(queues)
        return missing

    def queue_keys(self, queues: Iterable[str]) -> dict[str, tuple[int, str]]:
        """Task stream key -> (shard, queue name) for every shard of the queues, both
        kinds of stream."""
        return {
            stream(shard, queue): (shard, queue)
            for queue in queues
            for stream in (self.keys.queue, self.keys.activity_queue)
            for shard in range(self.keys.shards)
        }

    async def read_tasks(
        self,
        streams: dict[str, tuple[int, str]],
        consumer: str,
        count: int,
        block_ms: int,
    ) -> list[Task]:
        """New tasks of `streams` (one shard's), delivered to `consumer`, blocking up to
        `block_ms` for them."""
        # Over the direct lane: this read is sent again each time tasks arrive, while
        # they start, and redis-py would spend longer building it than Redis reading it.
        try:
            with groups_checked():
                reply: Any = await self._lane.execute(
                    "XREADGROUP", "GROUP", WORKER_GROUP, consumer, "COUNT", count,
                    "BLOCK", block_ms, "STREAMS", *streams, *[">"] * len(streams),
                )  # fmt: skip
        except ResponseError as exc:
            if not read_cut_short(exc):
                raise
            return []  # its streams moved to another master: the next read follows them
        tasks = [
            _task(text(stream), streams[text(stream)][0], entry_id, field_map(flat))
            for stream, entries in reply or []
            for entry_id, flat in entries
        ]
        if tasks:
            await self._confirm_delivery(tasks[0].queue_key)
        return tasks

    async def pending_tasks(
        self, streams: dict[str, tuple[int, str]], consumer: str, count: int
    ) -> list[Task]:
        """The tasks of `streams` (one shard's) delivered to `consumer` and not
        acknowledged, up to `count` per stream, read without touching them: a read of the
        consumer's history (XREADGROUP from 0) would count a delivery of each and reset
        its idle time, the running ones' and those just handed back included."""
        keys = list(streams)
        with groups_checked():
            listed: list[Any] = await self._lane.execute_chain(
                *[("XPENDING", key, WORKER_GROUP, "-", "+", count, consumer) for key in keys]
            )
        held = [
            (key, entry[0]) for key, entries in zip(keys, listed, strict=True) for entry in entries
        ]
        if not held:
            return []
        found = await self._lane.execute_chain(
            *[("XRANGE", key, entry_id, entry_id) for key, entry_id in held]
        )
        tasks = [
            _task(key, streams[key][0], entry_id, field_map(entries[0][1]))
            for (key, entry_id), entries in zip(held, found, strict=True)
            if entries  # deleted while pending: nothing to run
        ]
        if tasks:
            await self._confirm_delivery(tasks[0].queue_key)
        return tasks

    async def _confirm_delivery(self, key: str) -> None:
        """Under durability "replicated", return once a replica holds the delivery of
        tasks of `key`'s shard to this worker (its pending entries): a failover would
        otherwise forget it, and deliver the tasks again to another worker while this
        one runs them (an activity twice). NotReplicatedError if none confirms it."""
        try:
            await self._lane.confirm(key)
        except NotReplicatedError:
            self._deliveries_unconfirmed += 1
            raise

    async def claim_stale_tasks(
        self, streams: dict[str, tuple[int, str]], consumer: str, lease_ms: int, count: int
    ) -> list[tuple[Task, int]]:
        """Take over tasks idle longer than the lease (their worker died), with how many
        times each has now been delivered."""
        claimed: list[tuple[Task, int]] = []
        for key, (shard, _queue) in streams.items():
            if len(claimed) >= count:
                break
            # Over the direct lane, which counts the connections that broke with a reply
            # due (see deliveries_in_doubt): a claim's reply lost would leave its tasks
            # pending on this worker, unseen.
            with groups_checked():
                reply: Any = await self._lane.execute(
                    "XAUTOCLAIM", key, WORKER_GROUP, consumer, lease_ms, "0-0",
                    "COUNT", count - len(claimed),
                )  # fmt: skip
            deleted = list(reply[2]) if len(reply) > 2 else []
            live = []
            for entry in reply[1]:
                # Redis 6.2 answers nil for an entry deleted while pending (7.0 lists
                # their ids third, and drops them from the pending list).
                if entry is not None:
                    live.append(_task(key, shard, entry[0], field_map(entry[1])))
            if deleted:
                await self.redis.xack(key, WORKER_GROUP, *deleted)
            if not live:
                continue
            await self._confirm_delivery(key)
            pending: Any = await self.redis.xpending_range(
                key,
                WORKER_GROUP,
                min=live[0].id,
                max=live[-1].id,
                count=len(live) * 4,
                consumername=consumer,
            )
            deliveries = {text(p["message_id"]): int(p["times_delivered"]) for p in pending}
            claimed.extend((task, deliveries.get(task.id, 1)) for task in live)
        return claimed

    async def take_over(
        self, key: str, shard: int, dead: str, consumer: str, count: int
    ) -> list[tuple[Task, int]]:
        """Move up to `count` tasks pending on consumer `dead` of stream `key` (a worker
        whose heartbeat stopped) to `consumer`, with how many times each has now been
        delivered; `dead` is deleted once nothing is pending on it. Tasks another
        consumer holds are never taken (see take_over.lua)."""
        with groups_checked():
            reply = await self._run("take_over", [key], [WORKER_GROUP, dead, consumer, count])
        return [
            (_task(key, shard, entry_id, field_map(flat)), int(deliveries))
            for entry_id, flat, deliveries in reply
        ]

    async def renew_leases(self, tasks: Sequence[Task], consumer: str) -> list[Task]:
        """Reset the idle time of tasks still running here, those still pending on
        `consumer` (no delivery counted); return those pending on another consumer:
        another worker took them over while this one was cut off or stalled, and keeps
        them. Those pending on no one are acknowledged (see renew_leases.lua)."""
        by_stream: dict[str, dict[str, Task]] = {}
        for task in tasks:
            by_stream.setdefault(task.queue_key, {})[task.id] = task
        replies = await self._run_each(
            "renew_leases",
            [([key], [WORKER_GROUP, consumer, *held]) for key, held in by_stream.items()],
        )
        return [
            held[text(entry_id)]
            for held, lost in zip(by_stream.values(), replies, strict=True)
            for entry_id in lost
        ]

    async def hand_back(self, tasks: Sequence[Task], consumer: str, lease_ms: int) -> None:
        """Make unfinished tasks claimable by another worker now (on drain); the lease of
        a held activity (`Task.lease`) falls due now, for any worker's timer sweep."""
        pipe: RedisPipeline = self.redis.pipeline(transaction=False)
        for task in tasks:
            if task.lease:
                pipe.zadd(self.keys.timers(task.shard), {task.lease: now_ms()}, xx=True)
                continue
            ids: list[Any] = [task.id]
            pipe.xclaim(
                task.queue_key, WORKER_GROUP, consumer, 0, ids, idle=lease_ms + 1, justid=True
            )
        await pipe.execute()

    async def defer_task(
        self, task: Task, queue: str, due_ms: int, *, unregistered_since: int
    ) -> str:
        """Hand a task back to its queue at `due_ms`, through the timer zset, for another
        worker (this one does not register its workflow or activity): 'ok', or 'gone'
        when it is no longer pending here. Its delivery count starts again."""
        fields = {
            **task.fields,
            TaskField.UNREGISTERED_SINCE: str(unregistered_since).encode(),
            TaskField.HANDBACKS: str(task.handbacks + 1).encode(),
        }
        flat = [part for field in fields.items() for part in field]
        if task.kind == TaskKind.ACTIVITY:
            seq = int(task.fields[TaskField.SEQ])
            member = self.timer_member(TimerKind.RETRY, task.workflow_id, queue, seq, flat)
        else:
            member = self.timer_member(TimerKind.REQUEUE, task.workflow_id, queue, 0, flat)
        return text(
            await self._run(
                "defer_task",
                [task.queue_key, self.keys.timers(task.shard)],
                [task.id, WORKER_GROUP, due_ms, member],
            )
        )

    async def renew_activity_lease(self, task: Task, due_ms: int) -> bool:
        """Move a held activity's lease member to `due_ms`; False if it is gone (it fired:
        the activity is queued for another attempt 1, or its outcome is recorded)."""
        changed = await self.redis.zadd(
            self.keys.timers(task.shard), {task.lease: due_ms}, xx=True, ch=True
        )
        return bool(changed)
