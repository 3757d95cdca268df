"""The timer zsets: durable timers, activity retries and leases, tasks handed back."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import ConfigurationError
from ._part import StorePart
from .connection import (
    now_ms,
)
from .keys import validate_queue
from .wire import (
    MAX_TASK_FIELDS,
    TaskField,
    TimerKind,
    retry_member,
    text,
    timer_member,
)

logger = logging.getLogger("loom_redis.store")


@dataclass(frozen=True)
class TimerMember:
    """A decoded member of a timer zset."""

    raw: bytes
    shard: int
    due_ms: int
    kind: str
    workflow_id: str
    queue: str
    # A retry of attempt 1: the lease of an activity its worker ran at once (see
    # held_activity_task), due because that worker stopped renewing it.
    lease: bool = False


class Timers(StorePart):
    """Timer members: written, found due, fired."""

    timer_member = staticmethod(timer_member)
    retry_member = staticmethod(retry_member)

    async def due_timers(self, limit: int = 100) -> tuple[list[TimerMember], int | None]:
        """Due timer members of every shard, and the earliest due time still ahead."""
        now = now_ms()
        # Over the direct lane (one write per slot on a cluster), which follows a slot
        # being moved to another master (ASK) where redis-py's cluster client may not.
        commands = [
            command
            for shard in range(self.keys.shards)
            for command in (
                ("ZRANGEBYSCORE", self.keys.timers(shard), "-inf", now,
                 "LIMIT", 0, limit, "WITHSCORES"),
                ("ZRANGEBYSCORE", self.keys.timers(shard), f"({now}", "+inf",
                 "LIMIT", 0, 1, "WITHSCORES"),
            )
        ]  # fmt: skip
        replies = await self._lane.execute_chain(*commands)
        due: list[TimerMember] = []
        ahead = [int(float(entries[1])) for entries in replies[1::2] if entries]
        for shard, entries in enumerate(replies[0::2]):
            for raw, score in zip(entries[0::2], entries[1::2], strict=True):
                member = self._timer_member(raw, shard, int(float(score)))
                if isinstance(member, str):
                    reason = f"corrupt member of timers of shard {shard}: {member}"
                    # Not the member itself: a retry's member carries an activity's arguments.
                    logger.error("a timer member goes to the dead-letter stream: %s", reason)
                    await self._run(
                        "dead_timer",
                        [self.keys.timers(shard), self.keys.dead(shard)],
                        [raw, reason],
                    )
                    continue
                due.append(member)
        return due, min(ahead, default=None)

    def _timer_member(self, raw: bytes, shard: int, score: int) -> TimerMember | str:
        """The decoded member, or why it is corrupt (it was not written by `timer_member`)."""
        try:
            value = msgpack.unpackb(raw, raw=True)
        except Exception as exc:  # msgpack raises several unrelated types for bad bytes
            return f"not msgpack ({type(exc).__name__}: {str(exc) or 'malformed data'})"
        expected = "expected [kind, workflow id, queue, seq, task fields]"
        if not (
            isinstance(value, list)
            and len(value) == 5
            and all(isinstance(part, bytes) for part in value[:4])
            and isinstance(value[4], list)
        ):
            return f"{_readable(value)!r:.200} is not the {expected}"
        kind, workflow_id, queue, seq = (text(part) for part in value[:4])
        if kind not in set(TimerKind):
            return f"unknown kind {kind!r} ({expected}, kind timer, retry, resume or requeue)"
        if not workflow_id or self.keys.shard_of(workflow_id) != shard:
            return f"workflow id {workflow_id!r} does not belong to shard {shard}"
        try:
            validate_queue(queue)
        except ConfigurationError as exc:
            return str(exc)
        if not seq.isdigit() or (kind in (TimerKind.RETRY, TimerKind.REQUEUE) and not value[4]):
            return f"{_readable(value)!r:.200} has a bad seq or task ({expected})"
        task_fields = value[4]
        if (
            len(task_fields) % 2
            or len(task_fields) > 2 * MAX_TASK_FIELDS
            or not all(isinstance(part, bytes) for part in task_fields)
        ):
            return (
                f"its task {_readable(task_fields)!r:.200} is not a list of at most "
                f"{MAX_TASK_FIELDS} fields and values"
            )
        task = dict(zip(value[4][::2], value[4][1::2], strict=False))
        # An activity task handed back (defer_task) is no lease, whatever its attempt.
        lease = (
            kind == TimerKind.RETRY
            and task.get(TaskField.ATTEMPT.encode()) == b"1"
            and TaskField.HANDBACKS.encode() not in task
        )
        return TimerMember(raw, shard, score, kind, workflow_id, queue, lease)

    async def make_leases_due(self, references: list[str], renewed_before_ms: int) -> int:
        """Make due now the leases of activities run at once that a dead worker held, by
        their references (`lease_reference`), for any worker's timer sweep to queue them
        again; how many were found. A lease is renewed to at most a lease from its
        holder's now: `renewed_before_ms` bounds where to look."""
        wanted: dict[int, set[str]] = {}
        for reference in references:
            number, _, digest = reference.partition(":")
            if number.isdigit() and int(number) < self.keys.shards:
                wanted.setdefault(int(number), set()).add(digest)
        made = 0
        now = now_ms()
        for shard, digests in wanted.items():
            timers = self.keys.timers(shard)
            members: Any = await self.redis.zrangebyscore(timers, "-inf", renewed_before_ms)
            found: dict[Any, int] = {m: now for m in members if _digest(m) in digests}
            if found:
                changed: Any = await self.redis.zadd(timers, found, xx=True, ch=True)
                made += int(changed)
        return made

    async def fire_timer(self, member: TimerMember) -> str:
        keys = self.keys
        return text(
            await self._run(
                "fire_timer",
                [
                    keys.timers(member.shard),
                    keys.meta(member.workflow_id),
                    keys.history(member.workflow_id),
                    # A retry puts an activity task back; the others wake the workflow.
                    (keys.activity_queue if member.kind == TimerKind.RETRY else keys.queue)(
                        member.shard, member.queue
                    ),
                ],
                [member.raw, now_ms()],
            )
        )

    async def timer_due(self, workflow_id: str, queue: str, seq: int) -> int | None:
        """When (ms) the workflow's durable timer `seq` is due, None if it is not set."""
        member = self.timer_member(TimerKind.TIMER, workflow_id, queue, seq)
        due = await self.redis.zscore(self.keys.timers(self.keys.shard_of(workflow_id)), member)
        return None if due is None else int(due)


def lease_reference(shard: int, member: bytes) -> str:
    """How a worker's heartbeat names the lease of an activity it runs at once (a timer
    member, see Store.held_activity_task): short, whatever the activity's arguments."""
    return f"{shard}:{_digest(member)}"


def _digest(member: bytes) -> str:
    return hashlib.sha1(member, usedforsecurity=False).hexdigest()[:20]


def _readable(value: Any) -> Any:
    """A decoded msgpack value with its byte strings shown as text, for messages."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list | tuple):
        return [_readable(part) for part in value]
    return value
