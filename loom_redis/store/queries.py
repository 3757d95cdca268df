"""What the client, the CLI and dashboards read: workflows described, listed, counted,
followed; their progress.

These are reads only (any number of readers, a read-only ACL user, a replica): the
transitions are `workflows.py`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import anyio
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from ..codec import decode
from ..events import Status
from .connection import RedisPipeline, read_cut_short
from .history import History
from .unreadable import warn_unreadable
from .wire import ACTIVITY_PREFIX, TIMER_PREFIX, HistoryField, MetaField, text

T = TypeVar("T")

# What progress reports read of each workflow's meta (not its input or result).
PROGRESS_FIELDS = (
    MetaField.NAME,
    MetaField.STATUS,
    MetaField.AGENT,
    MetaField.STEP,
    MetaField.TOTAL_STEPS,
    MetaField.STEP_NAME,
    MetaField.STEP_DESCRIPTION,
    MetaField.CREATED,
)
_TYPE = HistoryField.TYPE.encode()


class HistoryEntry(NamedTuple):
    """A history entry as read, not decoded: its workflow, id and fields."""

    workflow_id: str
    id: str
    fields: dict[bytes, bytes]

    @property
    def type(self) -> str:
        return text(self.fields.get(_TYPE))


class Queries(History):
    """Reads of many workflows at once, in one round trip each where Redis allows."""

    async def describe(self, workflow_id: str) -> dict[str, Any] | None:
        """The workflow as `Client.describe` gives it, None if there is no such workflow."""
        meta = await self.read_meta(workflow_id)
        return describe_meta(workflow_id, meta, self.keys.meta(workflow_id)) if meta else None

    async def describe_many(
        self, workflow_ids: list[str], fields: tuple[str, ...] | None = None
    ) -> list[dict[str, Any]]:
        """describe() of several workflows in one round trip (those that exist); with
        `fields`, only those meta fields are read (the others describe as empty)."""
        pipe: RedisPipeline = self.redis.pipeline(transaction=False)
        for workflow_id in workflow_ids:
            if fields:
                pipe.hmget(self.keys.meta(workflow_id), list(fields))
            else:
                pipe.hgetall(self.keys.meta(workflow_id))
        found = []
        for workflow_id, raw in zip(workflow_ids, await pipe.execute(), strict=True):
            meta = (
                {f: v for f, v in zip(fields, raw, strict=True) if v is not None}
                if fields
                else {k.decode(): v for k, v in raw.items()}
            )
            if meta:
                found.append(describe_meta(workflow_id, meta, self.keys.meta(workflow_id)))
        return found

    async def list_workflows(self, status: Status | None, limit: int) -> list[dict[str, Any]]:
        """The `limit` most recently started workflows (of `status`, if given), newest
        first, described."""
        keys = self.keys
        pipe: RedisPipeline = self.redis.pipeline(transaction=False)
        for shard in range(keys.shards):
            index = keys.status_index(shard, status) if status else keys.started_index(shard)
            pipe.zrevrange(index, 0, limit - 1, withscores=True)
        ranked: list[tuple[float, str]] = []
        for entries in await pipe.execute():
            ranked.extend((score, member.decode()) for member, score in entries)
        ranked.sort(reverse=True)
        return await self.describe_many([workflow_id for _, workflow_id in ranked[:limit]])

    async def count_by_status(self) -> dict[str, int]:
        """How many workflows of each status the namespace holds."""
        shards = self.keys.shards
        pipe: RedisPipeline = self.redis.pipeline(transaction=False)
        for status in Status:
            for shard in range(shards):
                pipe.zcard(self.keys.status_index(shard, status))
        counts = await pipe.execute()
        return {
            str(status): sum(counts[i * shards : (i + 1) * shards])
            for i, status in enumerate(Status)
        }

    async def owner_workflows(self, owner: str) -> list[dict[str, Any]]:
        """The workflows started for `owner` that are still open, described by the meta
        fields progress reports read (PROGRESS_FIELDS)."""
        pipe: RedisPipeline = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.zrange(self.keys.owner_index(shard, owner), 0, -1)
        ids = [m.decode() for members in await pipe.execute() for m in members]
        return await self.describe_many(ids, PROGRESS_FIELDS)

    async def history_tail(self, workflow_id: str, count: int) -> list[HistoryEntry]:
        """The last `count` entries of a history, oldest first ([] if there is none)."""
        key = self.keys.history(workflow_id)
        newest: Any = await self.redis.xrevrange(key, count=count)
        return [HistoryEntry(workflow_id, text(i), f) for i, f in reversed(newest)]

    async def wait_for_history(
        self, after: dict[str, str], block_ms: int, count: int
    ) -> list[HistoryEntry]:
        """Entries appended to the histories of `after` (workflow id -> the entry id to
        read after, "$" for only what comes next), up to `count` of each, blocking up to
        `block_ms` for the first ([] if none came)."""
        streams = {self.keys.history(w): entry_id for w, entry_id in after.items()}
        workflow_of = {self.keys.history(w): w for w in after}
        reply = await self._read_streams(streams, block_ms, count)
        return [
            HistoryEntry(workflow_of[text(stream)], text(entry_id), fields)
            for stream, entries in reply
            for entry_id, fields in entries
        ]

    async def _read_streams(
        self, streams: dict[str, str], block_ms: int, count: int
    ) -> list[tuple[Any, Any]]:
        """XREAD BLOCK of `streams`. On a cluster, one read per hash slot, at once (a
        command's keys must share a slot): the first that brings entries ends the
        others, whose entries the caller's next read finds."""
        by_slot: dict[int, dict[str, str]] = {}
        if isinstance(self.redis, RedisCluster):
            for stream, entry_id in streams.items():
                by_slot.setdefault(key_slot(stream.encode()), {})[stream] = entry_id
        if len(by_slot) <= 1:
            return await self._read_slot(streams, block_ms, count)
        found: list[tuple[Any, Any]] = []
        async with anyio.create_task_group() as reads:

            async def read(group: dict[str, str]) -> None:
                reply = await self._read_slot(group, block_ms, count)
                if reply:
                    found.extend(reply)
                    reads.cancel_scope.cancel()

            for group in by_slot.values():
                reads.start_soon(read, group)
        return found

    async def _read_slot(
        self, streams: dict[str, str], block_ms: int, count: int
    ) -> list[tuple[Any, Any]]:
        """XREAD BLOCK of streams of one slot; nothing if a stream went away while the
        read waited (moved to another master: the caller's next read follows it)."""
        try:
            reply: Any = await self.redis.xread(streams, block=block_ms, count=count)  # type: ignore[arg-type]
        except ResponseError as exc:
            if not read_cut_short(exc):
                raise
            return []
        return list(reply or [])


def describe_meta(workflow_id: str, meta: dict[str, bytes], key: str) -> dict[str, Any]:
    """A workflow's meta (the hash `key`) as `describe()` gives it. A field that cannot be
    read (written by hand, or over this reader's payload limit) is None, and
    `unreadable` says why, by field, naming the key; the others are read as usual."""
    reader = _MetaReader(meta, key)
    text, number, payload = reader.text, reader.number, reader.payload
    info = {
        "workflow_id": workflow_id,
        "workflow_name": text(MetaField.NAME),
        "version": text(MetaField.VERSION),
        "status": reader.read(MetaField.STATUS, lambda raw: Status(raw.decode()), None),
        "queue": text(MetaField.QUEUE),
        "owner": text(MetaField.OWNER) or None,
        "agent": text(MetaField.AGENT) or None,
        "current_step": number(MetaField.STEP),
        "total_steps": number(MetaField.TOTAL_STEPS),
        "step_name": text(MetaField.STEP_NAME) or None,
        "step_description": text(MetaField.STEP_DESCRIPTION) or None,
        "started_ms": number(MetaField.CREATED),
        "updated_ms": number(MetaField.UPDATED),
        "closed_ms": number(MetaField.CLOSED) or None,
        "history_length": number(MetaField.HISTORY_LENGTH),
        "cancel_requested": MetaField.CANCEL_REQUESTED in meta,
        # What the open workflow waits for: activities and timers by seq, signals by name.
        "waiting_for": {
            "activities": reader.seqs(ACTIVITY_PREFIX),
            "timers": reader.seqs(TIMER_PREFIX),
            "signals": payload(MetaField.SIGNALS, list) or [],
        },
        # A workflow task of it is queued or running.
        "task_queued": meta.get(MetaField.WORKFLOW_TASK) == b"1",
        # The dead-letter entry of its task, while one keeps it from moving.
        "dead_letter": text(MetaField.DEAD) or None,
        "input": payload(MetaField.INPUT),
        "result": payload(MetaField.RESULT),
        "error": payload(MetaField.ERROR, dict) or payload(MetaField.SUSPENDED, dict),
        "unreadable": reader.unreadable,
    }
    for problem in reader.unreadable.values():
        warn_unreadable(problem, "shown as unreadable")
    return info


class _MetaReader:
    """Reads a workflow's meta field by field; a field that cannot be read is noted in
    `unreadable` (field -> why, naming the key) and read as None."""

    def __init__(self, meta: dict[str, bytes], key: str) -> None:
        self.meta = meta
        self.key = key
        self.unreadable: dict[str, str] = {}

    def read(self, field: str, parse: Callable[[bytes], T], default: T) -> T | None:
        raw = self.meta.get(field)
        if raw is None:
            return default
        try:
            return parse(raw)
        except (ValueError, TypeError) as exc:  # a PayloadError is a TypeError
            self.unreadable[field] = f"field {field!r} of {self.key} is unreadable: {exc}"
            return None

    def text(self, field: str) -> str | None:
        return self.read(field, bytes.decode, "")

    def number(self, field: str) -> int | None:
        return self.read(field, lambda raw: int(raw) if raw else 0, 0)

    def payload(self, field: str, kind: type | None = None) -> Any:
        def parse(raw: bytes) -> Any:
            value = decode(raw, what="its msgpack")
            if kind is not None and value is not None and not isinstance(value, kind):
                raise TypeError(f"a {type(value).__name__}, not a {kind.__name__}")
            return value

        return self.read(field, parse, None)

    def seqs(self, prefix: str) -> list[int]:
        """The seqs of the fields named `prefix` + seq (pending activities, timers)."""
        found = []
        for field in self.meta:
            if field.startswith(prefix):
                seq = field[len(prefix) :]
                if seq.isascii() and seq.isdigit():
                    found.append(int(seq))
                else:
                    self.unreadable[field] = f"field {field!r} of {self.key} is not {prefix}<seq>"
        return sorted(found)
