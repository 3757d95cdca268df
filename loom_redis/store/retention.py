"""Retention: closed workflows deleted once their retention has passed (counted from the
close), one per script; the namespace's retention in its config; `loom prune`."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from ..errors import ConfigurationError
from ..events import Status
from ._part import StorePart
from .connection import acl_checked, now_ms, redis_errors
from .keys import DEFAULT_RETENTION_MS
from .wire import DeleteWhen, Reply, text

# The namespace config's field that holds its retention (ms).
RETENTION_FIELD = "retention"
# How many ids one read of an index returns (a sweep round reads one page per shard).
PAGE = 100


def checked_retention(value: Any, what: str = "retention") -> int:
    """A retention given as a `datetime.timedelta` or a number of seconds, in ms;
    ConfigurationError names `what` and the value otherwise."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(
            f"{what} must be a datetime.timedelta or a number of seconds, "
            f"got {type(value).__name__} {value!r}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(f"{what} must be 0 seconds or more, got {value!r}")
    return int(seconds * 1000)


def stored_retention(key: str, found: bytes | str | None) -> int:
    """The retention (ms) a namespace's config holds: the default when it holds none,
    refused unless it is a whole number of ms."""
    if found is None:
        return DEFAULT_RETENTION_MS
    retention = text(found)
    if not (retention.isascii() and retention.isdigit()):
        raise ConfigurationError(
            f"field {RETENTION_FIELD!r} of {key} holds {retention!r}, not a retention in "
            "milliseconds; set it again with `loom init --retention`"
        )
    return int(retention)


class Retention(StorePart):
    """The deletion of closed workflows: by the sweep every worker runs, and by prune."""

    async def set_retention(self, retention_ms: int) -> None:
        """Set the namespace's retention: workflows that close from now on (workers read
        it again each sweep round) are deleted this long after their close."""
        if not isinstance(retention_ms, int) or retention_ms < 0:
            raise ConfigurationError(f"retention must be >= 0 ms, got {retention_ms!r}")
        with redis_errors(
            f"set the retention of namespace {self.keys.namespace!r}", self.url, self.keys.namespace
        ):
            await self.redis.hset(self.keys.config(), RETENTION_FIELD, str(retention_ms))
        self.retention_ms = retention_ms

    async def refresh_retention(self) -> None:
        """Read the namespace's retention again (`loom init --retention` may change it)."""
        key = self.keys.config()
        self.retention_ms = stored_retention(key, await self.redis.hget(key, RETENTION_FIELD))

    async def delete_closed(
        self, workflow_id: str, when: DeleteWhen, deadline_ms: int, status: str = ""
    ) -> tuple[str, str]:
        """Delete one closed workflow whose retention ended (`when` EXPIRED), or that
        closed (CLOSED_BEFORE), by `deadline_ms` (and of `status`, if given): its
        history, meta, close notice, request ids and index entries. Returns
        ('deleted'|'open'|'kept'|'missing', status); an open workflow is never deleted."""
        keys = self.keys
        shard = keys.shard_of(workflow_id)
        with acl_checked(f"delete workflow {workflow_id!r}", self.url, self.keys.namespace):
            reply = await self._run(
                "delete_closed",
                [
                    keys.meta(workflow_id),
                    keys.history(workflow_id),
                    keys.close_notice(workflow_id),
                    keys.once_requests(workflow_id),
                    keys.started_index(shard),
                    keys.expiry_index(shard),
                ],
                [
                    workflow_id,
                    keys.status_index_prefix(shard),
                    keys.owner_index_prefix(shard),
                    str(when),
                    str(deadline_ms),
                    status,
                ],
            )
        return text(reply[0]), text(reply[1])

    async def sweep_expired(self, shard: int, limit: int = PAGE) -> int:
        """Delete up to `limit` workflows of `shard` whose retention has ended; how many
        were deleted."""
        now = now_ms()
        due: Any = await self.redis.zrange(
            self.keys.expiry_index(shard), "-inf", now, byscore=True, offset=0, num=limit
        )
        deleted = 0
        for workflow_id in due:
            outcome, _ = await self.delete_closed(text(workflow_id), DeleteWhen.EXPIRED, now)
            deleted += outcome == Reply.DELETED
        return deleted

    async def prune(
        self, closed_before_ms: int, status: str | None = None, *, dry_run: bool = False
    ) -> list[tuple[str, str]]:
        """Delete the workflows (of `status`, if given; it must be a closed one) that
        closed before `closed_before_ms`, one script each; with `dry_run`, only list
        them. Returns the (workflow id, status) of each deleted (or listed)."""
        statuses = [s for s in Status if s.is_terminal]
        if status is not None:
            if status not in statuses:
                raise ConfigurationError(
                    f"prune deletes closed workflows only: status must be one of "
                    f"{', '.join(statuses)}, got {status!r}"
                )
            statuses = [Status(status)]
        found: list[tuple[str, str]] = []
        for shard in range(self.keys.shards):
            for closed in statuses:
                found += await self._prune_index(shard, closed, closed_before_ms, dry_run)
        return found

    async def _prune_index(
        self, shard: int, status: Status, closed_before_ms: int, dry_run: bool
    ) -> list[tuple[str, str]]:
        index = self.keys.status_index(shard, status)
        found: list[tuple[str, str]] = []
        # Deleted ids leave the index; those kept stay before `offset`.
        offset = 0
        while True:
            # ZRANGE BYSCORE, not ZRANGEBYSCORE: the dashboard's ACL user may list them.
            page: Any = await self.redis.zrange(
                index, "-inf", f"({closed_before_ms}", byscore=True, offset=offset, num=PAGE
            )
            for raw in page:
                workflow_id = text(raw)
                if dry_run:
                    found.append((workflow_id, status))
                    continue
                outcome, _ = await self.delete_closed(
                    workflow_id, DeleteWhen.CLOSED_BEFORE, closed_before_ms - 1, status
                )
                if outcome == Reply.DELETED:
                    found.append((workflow_id, status))
                else:
                    offset += 1
            if dry_run:
                offset += len(page)
            if len(page) < PAGE:
                return found
