"""A dashboard's reads of many workflows: filtered listings a page at a time, counts,
the ids a bulk action would touch, and how many closed each minute.

A listing reads one index per shard (and per status): by start time (`idx:started`), by
the time a workflow entered its status (`idx:status:<STATUS>`), or an owner's open
workflows by start time (`idx:owner:<owner>`). The shards' indexes are merged by
(score, id), newest first, with a ZRANGE BYSCORE REV LIMIT per index in one pipeline a
round: single-key commands only, so that it works shard by shard on Redis Cluster too.
What the index cannot tell (a name, what the code waits for, ...) is checked on each
candidate's meta, read in batches, up to a bound of candidates a call examines.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import itertools
import json
import math
import zlib
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from ..codec import decode
from ..errors import PayloadError
from ..events import Status
from ._part import StorePart
from .connection import DirectLane
from .connection import now_ms as clock_ms
from .queries import PROGRESS_FIELDS, describe_meta
from .wire import ACTIVITY_PREFIX, TIMER_PREFIX, MetaField

WaitingOn = Literal["activity", "timer", "signal"]
OPEN_STATUSES = frozenset(s for s in Status if not s.is_terminal)
CLOSED_STATUSES = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
MINUTE_MS = 60_000
# closed_per_minute reads minutes x 3 statuses x shards ZCOUNTs: a day at most.
MAX_MINUTES = 24 * 60

# What a row of a listing reads of each workflow's meta (not its input, result or error),
# besides the names of its fields (the activities and timers its code waits for).
ROW_FIELDS = (
    *PROGRESS_FIELDS,
    MetaField.VERSION,
    MetaField.QUEUE,
    MetaField.OWNER,
    MetaField.UPDATED,
    MetaField.CLOSED,
    MetaField.HISTORY_LENGTH,
    MetaField.SIGNALS,
    MetaField.WORKFLOW_TASK,
    MetaField.DEAD,
    MetaField.CANCEL_REQUESTED,
)
# What a filter is checked against, when the index does not answer it.
_FILTER_FIELDS = (
    MetaField.STATUS,
    MetaField.NAME,
    MetaField.OWNER,
    MetaField.CREATED,
    MetaField.SIGNALS,
)
# The payloads describe_meta gives that a row does not read.
_PAYLOADS = ("input", "result", "error")
# Candidates whose meta a filtered scan reads in one round trip.
_META_BATCH = 500


@dataclass(frozen=True)
class WorkflowFilter:
    """Which workflows a listing shows; every field given must match (None or () : any).

    `statuses` are any of; `name` is the exact workflow name; `waiting_on` is what an
    open workflow's code waits for (an activity, a timer or a signal, as `describe`'s
    `waiting_for` shows); a workflow started at `started_ms` matches the time range
    when `started_after_ms <= started_ms < started_before_ms`. `workflow_id` is a search
    by id: that workflow alone, if it matches the rest.
    """

    statuses: tuple[Status, ...] = ()
    name: str | None = None
    owner: str | None = None
    waiting_on: WaitingOn | None = None
    started_after_ms: int | None = None
    started_before_ms: int | None = None
    workflow_id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.statuses, str) or not isinstance(self.statuses, tuple | list):
            raise ValueError(f"statuses must be a tuple of statuses, got {self.statuses!r}")
        # Strings are taken too (a query string's); each status once, in the order given.
        statuses = tuple(dict.fromkeys(_status(s) for s in self.statuses))
        object.__setattr__(self, "statuses", statuses)
        if self.waiting_on is not None and self.waiting_on not in get_args(WaitingOn):
            raise ValueError(
                f"waiting_on must be one of {', '.join(get_args(WaitingOn))}, "
                f"got {self.waiting_on!r}"
            )
        for name in ("started_after_ms", "started_before_ms"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be a time in ms (an int), got {value!r}")
        for name in ("name", "owner", "workflow_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {value!r}")


@dataclass(frozen=True)
class WorkflowPage:
    """A page of a listing, newest first.

    `next_cursor` continues it (None: the end was reached). `scanned` is how many
    candidates were examined; `complete` is False when the scan limit stopped the page
    short of its limit before the end (continue from `next_cursor` to look further).
    `ordered_by` is what the rows are ordered by: "started" (start time) or "status"
    (the time each entered its status: a status filter reads the status indexes).
    """

    workflows: list[dict[str, Any]]
    next_cursor: str | None
    scanned: int
    complete: bool
    ordered_by: Literal["started", "status"] = "started"


# A candidate: (score in its index, workflow id), ordered as the listing is (descending).
_Candidate = tuple[int, str]


@dataclass(frozen=True)
class _Plan:
    """Where a filter's candidates come from, and what is left to check on meta."""

    indexes: list[str]
    # The range of scores read (ZRANGE BYSCORE's min and max).
    low: str
    high: str
    # What the indexes do not answer (an empty filter when they answer it all).
    residual: WorkflowFilter
    ordered_by: Literal["started", "status"]


class Listing(StorePart):
    """Filtered listings, counts and the ids of a bulk action, over the shards' indexes."""

    async def list_page(
        self,
        filter: WorkflowFilter,
        *,
        cursor: str | None = None,
        limit: int = 50,
        scan_limit: int = 5000,
    ) -> WorkflowPage:
        """Up to `limit` workflows matching `filter`, newest first, after `cursor` (a
        page's `next_cursor`), examining at most `scan_limit` candidates; raises
        ValueError for a cursor that is not one of this filter's."""
        _check_count("limit", limit)
        _check_count("scan_limit", scan_limit)
        fingerprint = _fingerprint(filter)
        after = None if cursor is None else _decode_cursor(cursor, fingerprint)
        if filter.workflow_id is not None:
            # A search by id: its one row was the first page.
            rows = [] if after else await self._rows([filter.workflow_id], filter)
            return WorkflowPage(rows, None, 1, True)
        plan = self._plan(filter)
        scan = await self._scan(plan, after, want=limit, scan_limit=scan_limit)
        rows = await self._rows([workflow_id for _, workflow_id in scan.matched], filter)
        next_cursor = None if scan.exhausted else _encode_cursor(scan.last, fingerprint)
        complete = scan.exhausted or len(scan.matched) == limit
        return WorkflowPage(rows, next_cursor, scan.scanned, complete, plan.ordered_by)

    async def count_matching(
        self, filter: WorkflowFilter, *, scan_limit: int = 100_000
    ) -> tuple[int, bool]:
        """How many workflows match `filter`, and whether that is exact: the sum of the
        indexes' sizes when they answer the filter alone, else counted over at most
        `scan_limit` candidates (not exact if that stopped it)."""
        _check_count("scan_limit", scan_limit)
        if filter.workflow_id is not None:
            return len(await self._matching_one(filter)), True
        plan = self._plan(filter)
        if plan.residual == WorkflowFilter():
            counts = await self._lane.execute_chain(
                *[("ZCOUNT", index, plan.low, plan.high) for index in plan.indexes]
            )
            return sum(counts), True
        scan = await self._scan(plan, None, want=None, scan_limit=scan_limit)
        return len(scan.matched), scan.exhausted

    async def matching_ids(self, filter: WorkflowFilter, *, limit: int) -> list[str]:
        """The ids of up to `limit` workflows matching `filter` (those a bulk action
        would touch), newest first, examining as many workflows as that takes."""
        _check_count("limit", limit)
        if filter.workflow_id is not None:
            return await self._matching_one(filter)
        scan = await self._scan(self._plan(filter), None, want=limit, scan_limit=None)
        return [workflow_id for _, workflow_id in scan.matched]

    async def closed_per_minute(
        self, minutes: int = 60, *, now_ms: int | None = None
    ) -> list[dict[str, int]]:
        """How many workflows completed, failed and were cancelled in each of the last
        `minutes` minutes, oldest first: `{"minute_ms", "completed", "failed",
        "cancelled"}`, each minute from its start (ms); the last is the minute in
        progress (up to `now_ms`, default now). Counts the closed workflows still kept
        (retention deletes the others), by the time each closed."""
        _check_count("minutes", minutes)
        if minutes > MAX_MINUTES:
            raise ValueError(f"minutes must be at most {MAX_MINUTES} (a day), got {minutes}")
        now = clock_ms() if now_ms is None else now_ms
        current = now - now % MINUTE_MS
        starts = [current - MINUTE_MS * back for back in range(minutes - 1, -1, -1)]
        shards = range(self.keys.shards)
        counts = iter(
            await self._lane.execute_chain(
                *[
                    (
                        "ZCOUNT",
                        self.keys.status_index(shard, status),
                        start,
                        f"({start + MINUTE_MS}",
                    )
                    for start in starts
                    for status in CLOSED_STATUSES
                    for shard in shards
                ]
            )
        )
        return [
            {"minute_ms": start}
            | {
                status.lower(): sum(itertools.islice(counts, len(shards)))
                for status in CLOSED_STATUSES
            }
            for start in starts
        ]

    # -- the parts -----------------------------------------------------------------

    def _plan(self, filter: WorkflowFilter) -> _Plan:
        """The best indexes for `filter`: an owner's open workflows when it asks for open
        ones of an owner, the status indexes when it asks for statuses, else the start
        times'. Indexes scored by start time apply the time range in their reads."""
        keys, shards = self.keys, range(self.keys.shards)
        statuses = set(filter.statuses)
        after, before = filter.started_after_ms, filter.started_before_ms
        low = "-inf" if after is None else str(after)
        high = "+inf" if before is None else f"({before}"
        by_start = replace(filter, started_after_ms=None, started_before_ms=None)
        if filter.owner is not None and statuses and statuses <= OPEN_STATUSES:
            # The owner's index holds its open workflows only, scored by start time.
            residual = replace(
                by_start,
                owner=None,
                statuses=() if statuses == OPEN_STATUSES else filter.statuses,
            )
            indexes = [keys.owner_index(shard, filter.owner) for shard in shards]
            return _Plan(indexes, low, high, residual, "started")
        if statuses:
            indexes = [keys.status_index(shard, s) for shard in shards for s in filter.statuses]
            return _Plan(indexes, "-inf", "+inf", replace(filter, statuses=()), "status")
        indexes = [keys.started_index(shard) for shard in shards]
        return _Plan(indexes, low, high, by_start, "started")

    async def _scan(
        self,
        plan: _Plan,
        after: _Candidate | None,
        *,
        want: int | None,
        scan_limit: int | None,
    ) -> _Scan:
        """Candidates of `plan` after `after`, in order, until `want` match (None: all),
        `scan_limit` were examined (None: no bound) or the indexes end."""
        residual = plan.residual
        checked = residual != WorkflowFilter()
        merge = _Merge(self._lane, plan.indexes, plan.low, plan.high, after)
        scan = _Scan()
        seen: set[str] = set()
        while want is None or len(scan.matched) < want:
            budget = math.inf if scan_limit is None else scan_limit - scan.scanned
            if budget <= 0:
                return scan
            # Unchecked, each candidate is a match: take no more than are wanted.
            wanted = _META_BATCH if checked or want is None else want - len(scan.matched)
            batch = await merge.take(int(min(budget, wanted)))
            metas = await self._filter_metas(batch, residual) if checked else None
            for n, candidate in enumerate(batch):
                scan.scanned += 1
                scan.last = candidate
                workflow_id = candidate[1]
                fresh = workflow_id not in seen  # moved from one status index to another
                seen.add(workflow_id)
                if fresh and (metas is None or _matches(residual, metas[n])):
                    scan.matched.append(candidate)
                    if len(scan.matched) == want:
                        scan.exhausted = merge.done and n == len(batch) - 1
                        return scan
            if merge.done:
                scan.exhausted = True
                return scan
        return scan

    async def _filter_metas(
        self, batch: list[_Candidate], residual: WorkflowFilter
    ) -> list[dict[str, bytes]]:
        """The meta fields `residual` is checked against, of each candidate: only those
        (a scan reads thousands), and the status, which every workflow has."""
        needed = {
            MetaField.STATUS: True,
            MetaField.NAME: residual.name is not None,
            MetaField.OWNER: residual.owner is not None,
            MetaField.CREATED: (residual.started_after_ms, residual.started_before_ms)
            != (None, None),
            MetaField.SIGNALS: residual.waiting_on == "signal",
        }
        fields = tuple(f for f, wanted in needed.items() if wanted)
        names = residual.waiting_on in ("activity", "timer")
        return await self._read_metas([w for _, w in batch], fields, names=names)

    async def _read_metas(
        self, workflow_ids: list[str], fields: tuple[str, ...], *, names: bool
    ) -> list[dict[str, bytes]]:
        """`fields` of each workflow's meta ({} for one that is gone), in one round trip;
        with `names`, also its activity and timer fields (as "1": what its code waits
        for), found by the names of its fields (not its payloads)."""
        if not workflow_ids:
            return []
        commands: list[tuple[str, ...]] = []
        for workflow_id in workflow_ids:
            key = self.keys.meta(workflow_id)
            commands.append(("HMGET", key, *fields))
            if names:
                commands.append(("HKEYS", key))
        # Thousands of commands a scan: the direct lane, without redis-py's layers.
        replies = iter(await self._lane.execute_chain(*commands))
        metas = []
        for values in replies:
            meta = {f: v for f, v in zip(fields, values, strict=True) if v is not None}
            if names:
                meta |= {
                    name: b"1"
                    for raw in next(replies)
                    if (name := raw.decode(errors="replace")).startswith(
                        (ACTIVITY_PREFIX, TIMER_PREFIX)
                    )
                }
            metas.append(meta)
        return metas

    async def _rows(self, workflow_ids: list[str], filter: WorkflowFilter) -> list[dict[str, Any]]:
        """The listing's rows of these workflows, those that still match `filter` (one
        may have moved on, or been deleted, since its index was read)."""
        rows = []
        metas = await self._read_metas(workflow_ids, ROW_FIELDS, names=True)
        for workflow_id, meta in zip(workflow_ids, metas, strict=True):
            if (filter.workflow_id in (None, workflow_id)) and _matches(filter, meta):
                row = describe_meta(workflow_id, meta, self.keys.meta(workflow_id))
                rows.append({k: v for k, v in row.items() if k not in _PAYLOADS})
        return rows

    async def _matching_one(self, filter: WorkflowFilter) -> list[str]:
        """[filter.workflow_id] if that workflow matches the rest of `filter`, else []."""
        workflow_id = str(filter.workflow_id)
        (meta,) = await self._read_metas([workflow_id], _FILTER_FIELDS, names=True)
        return [workflow_id] if _matches(filter, meta) else []


@dataclass
class _Scan:
    """What a scan found: the candidates that match, in order; how many it examined and
    the last of them (where the next page starts); whether the indexes ended."""

    matched: list[_Candidate] = field(default_factory=list)
    scanned: int = 0
    last: _Candidate = (0, "")
    exhausted: bool = False


class _Source:
    """One index being read newest first: what was read and not yet taken, and where
    the next read starts (ZRANGE from `high` down, skipping `skip` entries of that
    score already read)."""

    def __init__(self, key: str, high: str) -> None:
        self.key = key
        self.high = high
        self.skip = 0
        self.buffer: deque[_Candidate] = deque()
        self.ended = False

    def next_read(self, low: str, count: int) -> tuple[str | int, ...]:
        """The ZRANGE of the next `count` entries down to score `low`."""
        return (
            *("ZRANGE", self.key, self.high, low, "BYSCORE", "REV"),
            *("LIMIT", self.skip, count, "WITHSCORES"),
        )

    def read(self, reply: list[bytes], asked: int, after: _Candidate | None) -> None:
        """Take a ZRANGE WITHSCORES reply (member, score, ...) of at most `asked`."""
        entries = [
            (int(float(score)), member.decode())
            for member, score in zip(reply[::2], reply[1::2], strict=True)
        ]
        if len(entries) < asked:
            self.ended = True
        elif entries:
            last_score = entries[-1][0]
            ties = sum(1 for score, _ in entries if score == last_score)
            if self.high == str(last_score):
                self.skip += ties
            else:
                self.high, self.skip = str(last_score), ties
        # A cursor's own score is read inclusively: the entries of that score that come
        # before it (or are it) in the order were on an earlier page.
        self.buffer.extend(e for e in entries if after is None or e < after)


class _Merge:
    """The candidates of several indexes merged by (score, id), highest first."""

    # Entries a source reads at a time: at least this many, at most the second.
    MIN_READ, MAX_READ = 16, 1000

    def __init__(
        self, lane: DirectLane, indexes: list[str], low: str, high: str, after: _Candidate | None
    ) -> None:
        self.lane = lane
        self.low = low
        self.after = after
        if after is not None and (high == "+inf" or after[0] < int(high.lstrip("("))):
            high = str(after[0])
        self.sources = [_Source(index, high) for index in indexes]

    @property
    def done(self) -> bool:
        return all(source.ended and not source.buffer for source in self.sources)

    async def take(self, count: int) -> list[_Candidate]:
        """The next `count` candidates (fewer at the end)."""
        taken: list[_Candidate] = []
        # Enough that one round usually serves the page, shards being even.
        read = max(self.MIN_READ, min(self.MAX_READ, math.ceil(2 * count / len(self.sources))))
        while len(taken) < count:
            await self._fill(read)
            if not any(source.buffer for source in self.sources):
                break
            # What a source has not read yet comes after its last buffered entry: a
            # buffered entry comes before everything unread when it is at or above the
            # last buffered entry of every source that has more to read.
            floor = max(
                (s.buffer[-1] for s in self.sources if not s.ended),
                default=None,
            )
            ready = [
                [(entry, i) for entry in source.buffer if floor is None or entry >= floor]
                for i, source in enumerate(self.sources)
            ]
            merged = heapq.merge(*ready, reverse=True)
            for entry, i in itertools.islice(merged, count - len(taken)):
                self.sources[i].buffer.popleft()
                taken.append(entry)
        return taken

    async def _fill(self, read: int) -> None:
        """Read until every source that has not ended has something buffered."""
        while empty := [s for s in self.sources if not s.buffer and not s.ended]:
            replies = await self.lane.execute_chain(*[s.next_read(self.low, read) for s in empty])
            for source, reply in zip(empty, replies, strict=True):
                source.read(reply, read, self.after)


def _matches(filter: WorkflowFilter, meta: dict[str, bytes]) -> bool:
    """Whether a workflow's meta (as _read_metas reads it) matches `filter`, ignoring
    its workflow id; no meta (a workflow deleted) matches nothing."""
    if not meta:
        return False
    if filter.statuses and meta.get(MetaField.STATUS, b"").decode() not in filter.statuses:
        return False
    for wanted, meta_field in ((filter.name, MetaField.NAME), (filter.owner, MetaField.OWNER)):
        if wanted is not None and meta.get(meta_field) != wanted.encode():
            return False
    if filter.started_after_ms is not None or filter.started_before_ms is not None:
        try:
            started = int(meta.get(MetaField.CREATED, b""))
        except ValueError:
            return False
        if filter.started_after_ms is not None and started < filter.started_after_ms:
            return False
        if filter.started_before_ms is not None and started >= filter.started_before_ms:
            return False
    if filter.waiting_on == "activity":
        return any(f.startswith(ACTIVITY_PREFIX) for f in meta)
    if filter.waiting_on == "timer":
        return any(f.startswith(TIMER_PREFIX) for f in meta)
    if filter.waiting_on == "signal":
        return bool(_signals(meta.get(MetaField.SIGNALS)))
    return True


def _signals(raw: bytes | None) -> Any:
    """The signal names a meta's field holds (nothing if it cannot be read)."""
    try:
        return decode(raw, what="its signals") if raw else None
    except PayloadError:
        return None


def _status(value: Status | str) -> Status:
    try:
        return Status(value.upper() if isinstance(value, str) else value)
    except (ValueError, AttributeError):
        raise ValueError(f"unknown status {value!r}: one of {', '.join(Status)}") from None


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def _fingerprint(filter: WorkflowFilter) -> int:
    """What ties a cursor to the filter it was made for."""
    return zlib.crc32(repr(filter).encode())


def _encode_cursor(position: _Candidate, fingerprint: int) -> str:
    score, workflow_id = position
    raw = json.dumps([fingerprint, score, workflow_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: int) -> _Candidate:
    """The position a cursor holds; ValueError naming what is wrong with it."""
    shown = repr(cursor[:60]) if isinstance(cursor, str) else repr(cursor)
    if not isinstance(cursor, str):
        raise ValueError(f"cursor {shown} is not a cursor: a page's next_cursor is a string")
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError(
            f"cursor {shown} is not a cursor of a workflow listing (it does not decode): "
            "pass a page's next_cursor as it is"
        ) from None
    match value:
        case [int(made_for), int(score), str(workflow_id)] if not isinstance(score, bool):
            pass
        case _:
            raise ValueError(
                f"cursor {shown} is not a cursor of a workflow listing (not a position): "
                "pass a page's next_cursor as it is"
            )
    if made_for != fingerprint:
        raise ValueError(
            f"cursor {shown} was made for a listing with another filter: a cursor "
            "continues only the listing that made it"
        )
    return score, workflow_id
