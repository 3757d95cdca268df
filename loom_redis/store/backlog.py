"""What an operator (and an autoscaler) watches: the work waiting in a namespace.

Read by workers for their Prometheus gauges, a few times a minute, in one round trip;
and, in detail (each stream of each shard, its consumers), by a dashboard's queues page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .connection import RedisPipeline, answered, now_ms
from .keys import WORKER_GROUP
from .registry import Registry
from .wire import text


@dataclass
class QueueBacklog:
    """The tasks of one queue, summed over its shards and both kinds of stream.

    Workers delete the tasks they acknowledge (XACK + XDEL), so a stream holds exactly
    the tasks not finished: `length` = `lag` + `pending`.
    """

    # Entries in the streams: tasks not yet finished.
    length: int = 0
    # Entries no worker has taken yet (the consumer groups' lag).
    lag: int = 0
    # Entries taken by a worker and not yet finished (the groups' pending entries lists).
    pending: int = 0
    # When the oldest pending entry was queued (ms), None if nothing is pending.
    oldest_pending_ms: int | None = None


@dataclass
class NamespaceBacklog:
    """The work waiting in a namespace, as of `at_ms`."""

    at_ms: int
    queues: dict[str, QueueBacklog] = field(default_factory=dict)
    # Timer members (timers, retry back-offs, leases) due and not yet fired.
    timers_due: int = 0
    # The due time (ms) of the most overdue of them, None if none is due.
    oldest_due_ms: int | None = None
    dead_letters: int = 0


@dataclass(frozen=True)
class ConsumerDetail:
    """A consumer (a worker) of a task stream's group, as XINFO CONSUMERS shows it."""

    name: str
    # Tasks it took and has not finished.
    pending: int
    # How long since Redis saw it read or claim (ms).
    idle_ms: int


@dataclass(frozen=True)
class StreamDetail:
    """One task stream of a queue: one shard's workflow tasks (`q`) or activity tasks
    (`qa`)."""

    shard: int
    kind: Literal["workflow", "activity"]
    key: str
    # Tasks not finished (workers delete what they acknowledge).
    length: int
    # Tasks no worker has taken; None when Redis does not know it (Redis < 7, or an
    # entry past the group's last-delivered id was deleted) or there is no group yet.
    lag: int | None
    # Tasks taken and not finished.
    pending: int
    # How long ago the oldest of those was queued (ms), None if nothing is pending.
    oldest_pending_age_ms: int | None
    consumers: list[ConsumerDetail] = field(default_factory=list)


@dataclass(frozen=True)
class QueueDetail:
    """A task queue's streams, shard by shard, as of `at_ms`, with their sums."""

    queue: str
    at_ms: int
    streams: list[StreamDetail]
    # Summed over the streams, as `Store.backlog` reports it.
    backlog: QueueBacklog

    def consumers(self) -> list[ConsumerDetail]:
        """Each consumer over all the queue's streams (a worker reads them all): its
        pending tasks summed, its least idle time; by name."""
        by_name: dict[str, ConsumerDetail] = {}
        for stream in self.streams:
            for c in stream.consumers:
                seen = by_name.get(c.name)
                by_name[c.name] = (
                    ConsumerDetail(c.name, seen.pending + c.pending, min(seen.idle_ms, c.idle_ms))
                    if seen
                    else c
                )
        return [by_name[name] for name in sorted(by_name)]


@dataclass(frozen=True)
class _StreamFigures:
    """What one stream holds (see StreamDetail); all zeros for one not created yet."""

    length: int = 0
    lag: int | None = None
    pending: int = 0
    # When the oldest pending entry was queued (ms).
    oldest_pending_ms: int | None = None


class Backlog(Registry):
    async def backlog(self, queues: Iterable[str]) -> NamespaceBacklog:
        """The backlog of `queues` and the namespace's due timers and dead letters."""
        names = list(dict.fromkeys(queues))
        streams = self._task_streams(names)
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        for stream in streams:
            _read_stream(pipe, stream)
        for shard in range(self.keys.shards):
            pipe.zcount(self.keys.timers(shard), "-inf", now)
            pipe.zrange(self.keys.timers(shard), 0, 0, withscores=True)
            pipe.xlen(self.keys.dead(shard))
        replies = iter(answered(await pipe.execute(raise_on_error=False)))
        backlog = NamespaceBacklog(now, {queue: QueueBacklog() for queue in names})
        for _, queue in streams.values():
            _add_stream(backlog.queues[queue], _stream_figures(replies))
        for _ in range(self.keys.shards):
            due, first, dead = next(replies), next(replies), next(replies)
            backlog.timers_due += due if isinstance(due, int) else 0
            backlog.dead_letters += dead if isinstance(dead, int) else 0
            if isinstance(first, list) and first and first[0][1] <= now:
                due_ms = int(first[0][1])
                backlog.oldest_due_ms = min(backlog.oldest_due_ms or due_ms, due_ms)
        return backlog

    async def queue_details(self, queues: Iterable[str] = ()) -> list[QueueDetail]:
        """The task streams of `queues` and of every queue a worker's heartbeat lists,
        shard by shard (length, lag, pending, the oldest pending task's age) with their
        consumers, by queue name."""
        heartbeats = await self.worker_heartbeats()
        listed = {q for beat in heartbeats for q in beat["queues"]}
        names = sorted(listed | set(queues))
        streams = self._task_streams(names)
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        for stream in streams:
            _read_stream(pipe, stream)
        replies = iter(answered(await pipe.execute(raise_on_error=False)))
        figures = {stream: _stream_figures(replies) for stream in streams}
        consumers: dict[str, list[ConsumerDetail]] = {stream: [] for stream in streams}
        for stream, name, pending, idle in await self.task_consumers(streams):
            consumers[stream].append(ConsumerDetail(name, pending, idle))
        details = {q: QueueDetail(q, now, [], QueueBacklog()) for q in names}
        for stream, (shard, queue) in streams.items():
            found = figures[stream]
            _add_stream(details[queue].backlog, found)
            oldest = found.oldest_pending_ms
            details[queue].streams.append(
                StreamDetail(
                    shard,
                    "activity" if stream == self.keys.activity_queue(shard, queue) else "workflow",
                    stream,
                    found.length,
                    found.lag,
                    found.pending,
                    None if oldest is None else max(now - oldest, 0),
                    sorted(consumers[stream], key=lambda c: c.name),
                )
            )
        return list(details.values())

    def _task_streams(self, queues: list[str]) -> dict[str, tuple[int, str]]:
        """The task streams of `queues` (workflow tasks, then activity tasks, shard by
        shard): key -> (shard, queue)."""
        return {
            stream: (shard, queue)
            for queue in queues
            for shard in range(self.keys.shards)
            for stream in (self.keys.queue(shard, queue), self.keys.activity_queue(shard, queue))
        }


def _read_stream(pipe: RedisPipeline, stream: str) -> None:
    """Queue the reads _stream_figures takes the replies of."""
    pipe.xlen(stream)
    pipe.xinfo_groups(stream)
    pipe.xpending(stream, WORKER_GROUP)


def _stream_figures(replies: Any) -> _StreamFigures:
    """A stream's figures from the next replies of _read_stream's reads. A stream or
    group not created yet (no worker of the queue ever started) holds nothing: its error
    stands for zeros."""
    length, groups, pending = next(replies), next(replies), next(replies)
    if not isinstance(length, int):
        return _StreamFigures()
    taken = pending.get("pending", 0) if isinstance(pending, dict) else 0
    group = (
        next((g for g in groups if text(g.get("name")) == WORKER_GROUP), None)
        if isinstance(groups, list)
        else None
    )
    lag = group.get("lag") if group is not None else None
    oldest = int(text(pending["min"]).partition("-")[0]) if taken else None
    return _StreamFigures(length, lag if isinstance(lag, int) else None, taken, oldest)


def _add_stream(queue: QueueBacklog, stream: _StreamFigures) -> None:
    queue.length += stream.length
    queue.pending += stream.pending
    # Redis < 7 has no lag, and 7+ reports none once an entry past the group's
    # last-delivered id was deleted: then what is not taken is the rest of the stream.
    lag = stream.lag
    queue.lag += lag if lag is not None else max(stream.length - stream.pending, 0)
    if stream.oldest_pending_ms is not None:
        oldest = stream.oldest_pending_ms
        queue.oldest_pending_ms = min(queue.oldest_pending_ms or oldest, oldest)
