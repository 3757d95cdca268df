"""What an operator (and an autoscaler) watches: the work waiting in a namespace.

Read by workers for their Prometheus gauges, a few times a minute, in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._part import StorePart
from .connection import now_ms
from .keys import WORKER_GROUP
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


class Backlog(StorePart):
    async def backlog(self, queues: Iterable[str]) -> NamespaceBacklog:
        """The backlog of `queues` and the namespace's due timers and dead letters."""
        names = list(dict.fromkeys(queues))
        streams = [
            (queue, stream)
            for queue in names
            for shard in range(self.keys.shards)
            for stream in (self.keys.queue(shard, queue), self.keys.activity_queue(shard, queue))
        ]
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        for _, stream in streams:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
            pipe.xpending(stream, WORKER_GROUP)
        for shard in range(self.keys.shards):
            pipe.zcount(self.keys.timers(shard), "-inf", now)
            pipe.zrange(self.keys.timers(shard), 0, 0, withscores=True)
            pipe.xlen(self.keys.dead(shard))
        # A stream or group not created yet (no worker of the queue ever started) holds
        # nothing: its error stands for zeros.
        replies = iter(await pipe.execute(raise_on_error=False))
        backlog = NamespaceBacklog(now, {queue: QueueBacklog() for queue in names})
        for queue, _ in streams:
            length, groups, pending = next(replies), next(replies), next(replies)
            _add_stream(backlog.queues[queue], length, groups, pending)
        for _ in range(self.keys.shards):
            due, first, dead = next(replies), next(replies), next(replies)
            backlog.timers_due += due if isinstance(due, int) else 0
            backlog.dead_letters += dead if isinstance(dead, int) else 0
            if isinstance(first, list) and first and first[0][1] <= now:
                due_ms = int(first[0][1])
                backlog.oldest_due_ms = min(backlog.oldest_due_ms or due_ms, due_ms)
        return backlog


def _add_stream(queue: QueueBacklog, length: Any, groups: Any, pending: Any) -> None:
    if not isinstance(length, int):
        return
    queue.length += length
    taken = pending.get("pending", 0) if isinstance(pending, dict) else 0
    queue.pending += taken
    group = (
        next(
            (g for g in groups if text(g.get("name")) == WORKER_GROUP),
            None,
        )
        if isinstance(groups, list)
        else None
    )
    lag = group.get("lag") if group is not None else None
    # Redis < 7 has no lag, and 7+ reports none once an entry past the group's
    # last-delivered id was deleted: then what is not taken is the rest of the stream.
    queue.lag += lag if isinstance(lag, int) else max(length - taken, 0)
    if taken:
        queued_ms = int(text(pending["min"]).partition("-")[0])
        queue.oldest_pending_ms = min(queue.oldest_pending_ms or queued_ms, queued_ms)
