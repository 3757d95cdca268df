"""A dashboard's listing reads the shards' indexes page by page: every filter alone and
combined finds exactly the workflows it names, a listing paged with a cursor returns
each match once and in order (however the page boundaries fall among workflows started
in the same millisecond), a scan limit stops a page early with a cursor that goes on,
counts say whether they are exact, and the closes are counted per minute."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

import loom_redis as loom
from loom_redis.events import Status
from loom_redis.store import Store, WorkflowFilter, WorkflowPage
from loom_redis.testing import running_worker
from tests.support import wait_until

pytestmark = pytest.mark.anyio

release = anyio.Event()


@loom.activity(name="listing_hold")
async def hold() -> str:
    await release.wait()
    return "held"


@loom.workflow(name="listing_Quick")
class Quick(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        if ctx.input.get("fail"):
            raise RuntimeError("asked to fail")


@loom.workflow(name="listing_Waits")
class Waits(loom.Workflow[dict, dict]):
    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        on = ctx.input["on"]
        if on == "signal":
            await ctx.wait_for_signal("go")
        elif on == "timer":
            await ctx.sleep(3600)
        else:
            await ctx.activity(hold)


@loom.workflow(name="listing_Rare")
class Rare(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        pass


async def every_page(
    store: Store, wanted: WorkflowFilter, *, limit: int = 3, scan_limit: int = 5000
) -> list[WorkflowPage]:
    """The listing's pages, following the cursor to the end."""
    pages = [await store.list_page(wanted, limit=limit, scan_limit=scan_limit)]
    while pages[-1].next_cursor is not None:
        cursor = pages[-1].next_cursor
        pages.append(
            await store.list_page(wanted, cursor=cursor, limit=limit, scan_limit=scan_limit)
        )
        assert len(pages) < 1000, "the listing does not end"
    return pages


async def listed(store: Store, wanted: WorkflowFilter, *, limit: int = 3) -> list[str]:
    return [
        row["workflow_id"]
        for page in await every_page(store, wanted, limit=limit)
        for row in page.workflows
    ]


@asynccontextmanager
async def zoo(client: loom.Client, redis_url: str, namespace: str) -> AsyncIterator[dict[str, str]]:
    """Workflows of every status, two names and two owners, open ones waiting on each
    kind of thing, with a worker running (the activity one holds its activity until
    the block ends). Yields their ids by role."""
    global release
    release = anyio.Event()
    async with running_worker(redis_url, namespace):
        ids = {
            "completed": (await client.start(Quick, {}, owner="ann")).id,
            "completed2": (await client.start(Quick, {})).id,
            "failed": (await client.start(Quick, {"fail": True}, owner="bob")).id,
            "cancelled": (await client.start(Waits, {"on": "signal"}, owner="ann")).id,
            "signal": (await client.start(Waits, {"on": "signal"}, owner="ann")).id,
            "timer": (await client.start(Waits, {"on": "timer"}, owner="bob")).id,
            "activity": (await client.start(Waits, {"on": "activity"}, owner="ann")).id,
            # No worker reads this queue: it stays PENDING.
            "pending": (await client.start(Waits, {"on": "signal"}, owner="ann", queue="idle")).id,
        }
        await client.cancel(ids["cancelled"])
        waits = {"signal": "signals", "timer": "timers", "activity": "activities"}

        async def settled() -> bool:
            infos = {role: await client.describe(i) for role, i in ids.items()}
            return all(
                infos[role]["status"] == status
                for role, status in [
                    ("completed", "COMPLETED"),
                    ("completed2", "COMPLETED"),
                    ("failed", "FAILED"),
                    ("cancelled", "CANCELLED"),
                ]
            ) and all(infos[role]["waiting_for"][kind] for role, kind in waits.items())

        await wait_until(settled)
        try:
            yield ids
        finally:
            release.set()


async def test_every_filter_alone_and_combined_finds_exactly_its_workflows(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    store = client.store
    async with zoo(client, redis_url, namespace) as ids:
        infos = {i: await client.describe(i) for i in ids.values()}

        async def found(**fields: object) -> set[str]:
            rows = await listed(store, WorkflowFilter(**fields))  # type: ignore[arg-type]
            assert len(rows) == len(set(rows)), "a workflow listed twice"
            return {role for role, i in ids.items() if i in rows} | {
                f"unknown {i}" for i in rows if i not in ids.values()
            }

        everything = set(ids)
        open_ = {"signal", "timer", "activity", "pending"}
        assert await found() == everything
        # Statuses, any of.
        assert await found(statuses=(Status.COMPLETED,)) == {"completed", "completed2"}
        assert await found(statuses=("failed", "CANCELLED")) == {"failed", "cancelled"}
        assert await found(statuses=(Status.PENDING,)) == {"pending"}
        assert await found(statuses=(Status.RUNNING, Status.PENDING)) == open_
        # Name, owner, what the code waits for.
        assert await found(name="listing_Waits") == open_ | {"cancelled"}
        assert await found(name="no such name") == set()
        assert await found(owner="ann") == {
            "completed",
            "cancelled",
            "signal",
            "activity",
            "pending",
        }
        assert await found(owner="bob") == {"failed", "timer"}
        assert await found(waiting_on="signal") == {"signal"}
        assert await found(waiting_on="timer") == {"timer"}
        assert await found(waiting_on="activity") == {"activity"}
        # The start time range: after inclusive, before exclusive.
        starts = sorted({info["started_ms"] for info in infos.values()})
        middle = starts[len(starts) // 2]
        later = {r for r, i in ids.items() if infos[i]["started_ms"] >= middle}
        assert later and later != everything
        assert await found(started_after_ms=middle) == later
        assert await found(started_before_ms=middle) == everything - later
        assert await found(started_after_ms=middle, started_before_ms=middle + 1) == {
            r for r, i in ids.items() if infos[i]["started_ms"] == middle
        }
        # A search by id: that one, if it matches the rest.
        assert await found(workflow_id=ids["timer"]) == {"timer"}
        assert await found(workflow_id=ids["timer"], owner="bob", waiting_on="timer") == {"timer"}
        assert await found(workflow_id=ids["timer"], statuses=(Status.COMPLETED,)) == set()
        assert await found(workflow_id="no-such-workflow") == set()
        # Combined: an owner's open workflows (its index), an owner's closed ones (the
        # status index), a name with what the code waits for, a status with a range.
        assert await found(owner="ann", statuses=(Status.RUNNING,)) == {"signal", "activity"}
        assert await found(owner="ann", statuses=tuple(s for s in Status if not s.is_terminal)) == {
            "signal",
            "activity",
            "pending",
        }
        assert await found(owner="ann", statuses=(Status.COMPLETED, Status.CANCELLED)) == {
            "completed",
            "cancelled",
        }
        assert await found(owner="ann", name="listing_Waits", waiting_on="activity") == {"activity"}
        assert await found(owner="bob", waiting_on="signal") == set()
        assert await found(statuses=(Status.RUNNING,), started_after_ms=middle) == {
            r for r in ("signal", "timer", "activity") if r in later
        }

        # The rows: the summary of each, no payloads.
        (row,) = (await store.list_page(WorkflowFilter(workflow_id=ids["signal"]))).workflows
        assert row["workflow_name"] == "listing_Waits"
        assert row["status"] == Status.RUNNING
        assert row["owner"] == "ann"
        assert row["waiting_for"] == {"activities": [], "timers": [], "signals": ["go"]}
        assert row["started_ms"] == infos[ids["signal"]]["started_ms"]
        assert not {"input", "result", "error"} & set(row)
        (row,) = (await store.list_page(WorkflowFilter(workflow_id=ids["activity"]))).workflows
        assert (
            row["waiting_for"]["activities"] == infos[ids["activity"]]["waiting_for"]["activities"]
        )


async def test_counts_are_exact_when_the_indexes_answer_and_say_so_when_not(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    store = client.store
    async with zoo(client, redis_url, namespace) as ids:
        started = sorted([(await client.describe(i))["started_ms"] for i in ids.values()])
        # The indexes answer these alone: exact whatever the scan limit.
        exact = {
            WorkflowFilter(): len(ids),
            WorkflowFilter(statuses=(Status.COMPLETED, Status.FAILED)): 3,
            WorkflowFilter(
                owner="ann", statuses=(Status.PENDING, Status.RUNNING, Status.SUSPENDED)
            ): 3,
            WorkflowFilter(started_after_ms=started[2]): sum(1 for s in started if s >= started[2]),
            WorkflowFilter(workflow_id=ids["timer"]): 1,
            WorkflowFilter(workflow_id=ids["timer"], owner="ann"): 0,
        }
        for wanted, count in exact.items():
            assert await store.count_matching(wanted, scan_limit=1) == (count, True), wanted
            assert await client.count_workflows(wanted) == (count, True), wanted
        # Checked on meta: exact when the scan reached the end, else a lower bound.
        by_name = WorkflowFilter(name="listing_Waits")
        assert await store.count_matching(by_name) == (5, True)
        newest_three = await store.matching_ids(WorkflowFilter(), limit=3)
        named = {
            i
            for role, i in ids.items()
            if role in {"cancelled", "signal", "timer", "activity", "pending"}
        }
        assert await store.count_matching(by_name, scan_limit=3) == (
            len(named.intersection(newest_three)),
            False,
        )
        assert await store.count_matching(WorkflowFilter(owner="ann")) == (5, True)
        # The ids a bulk action would touch: newest first, up to the limit.
        everything = await listed(store, WorkflowFilter())
        waiting = await listed(store, by_name)
        assert await store.matching_ids(WorkflowFilter(), limit=100) == everything
        assert await store.matching_ids(by_name, limit=100) == waiting
        assert await store.matching_ids(by_name, limit=2) == waiting[:2]
        assert await store.matching_ids(WorkflowFilter(workflow_id=ids["failed"]), limit=5) == [
            ids["failed"]
        ]


async def start_many(client: loom.Client, count: int) -> list[str]:
    """Workflows started `count` at once (so that several share a millisecond), every
    20th named listing_Rare; none runs."""
    handles = await asyncio.gather(
        *[client.start(Rare if n % 20 == 0 else Quick, {}) for n in range(count)]
    )
    return [handle.id for handle in handles]


@pytest.mark.parametrize("shards", [2, 16])
async def test_pages_return_every_workflow_once_in_order_across_shards(
    redis_url: str, namespace: str, shards: int
) -> None:
    await (await Store.open(redis_url, namespace, shards=shards)).close()  # created so
    async with loom.Client.connect(redis_url, namespace=namespace) as client:
        store = client.store
        assert store.keys.shards == shards
        started = await start_many(client, 150)
        infos = {i: await client.describe(i) for i in started}
        # Several share a millisecond: page boundaries fall among equal scores.
        assert max(Counter(info["started_ms"] for info in infos.values()).values()) >= 2
        assert len({store.keys.shard_of(i) for i in started}) == shards
        newest_first = sorted(started, key=lambda i: (infos[i]["started_ms"], i), reverse=True)
        for limit in (1, 7, 40, 200):
            pages = await every_page(store, WorkflowFilter(), limit=limit)
            assert [r["workflow_id"] for p in pages for r in p.workflows] == newest_first
            assert all(len(p.workflows) == limit for p in pages[:-1])
            assert all(p.complete and p.ordered_by == "started" for p in pages)
        # By status: ordered by the time each entered it (here: its start).
        pages = await every_page(store, WorkflowFilter(statuses=(Status.PENDING,)), limit=9)
        assert [r["workflow_id"] for p in pages for r in p.workflows] == newest_first
        assert {p.ordered_by for p in pages} == {"status"}
        # A time range cuts the same order.
        after, before = sorted(info["started_ms"] for info in infos.values())[40:100:59]
        in_range = [i for i in newest_first if after <= infos[i]["started_ms"] < before]
        ranged = WorkflowFilter(started_after_ms=after, started_before_ms=before)
        assert await listed(store, ranged, limit=11) == in_range
        assert await store.count_matching(ranged) == (len(in_range), True)


async def test_a_scan_limit_stops_a_page_short_with_a_cursor_that_goes_on(
    client: loom.Client,
) -> None:
    store = client.store
    started = await start_many(client, 120)
    newest_first = await store.matching_ids(WorkflowFilter(), limit=1000)
    assert sorted(newest_first) == sorted(started)
    rare = [i for i in newest_first if i in started[::20]]
    wanted = WorkflowFilter(name="listing_Rare")
    first = await store.list_page(wanted, limit=50, scan_limit=25)
    assert (first.scanned, first.complete) == (25, False)
    assert first.next_cursor is not None
    # Those of the first 25 candidates, and no more.
    assert [r["workflow_id"] for r in first.workflows] == [
        i for i in newest_first[:25] if i in rare
    ]
    pages = await every_page(store, wanted, limit=50, scan_limit=25)
    assert [r["workflow_id"] for p in pages for r in p.workflows] == rare
    assert sum(p.scanned for p in pages) == 120
    assert pages[-1].complete and pages[-1].next_cursor is None
    # A page that fills before the scan limit is complete, though more may follow.
    full = await store.list_page(wanted, limit=2, scan_limit=5000)
    assert full.complete and full.next_cursor is not None
    assert [r["workflow_id"] for r in full.workflows] == rare[:2]
    # Inexact count: the first 25 candidates only.
    assert await store.count_matching(wanted, scan_limit=25) == (len(first.workflows), False)
    assert await store.count_matching(wanted) == (len(rare), True)


async def test_a_cursor_that_is_not_one_is_refused_naming_the_problem(client: loom.Client) -> None:
    store = client.store
    await start_many(client, 5)
    page = await store.list_page(WorkflowFilter(), limit=2)
    assert page.next_cursor is not None
    made_up = base64.urlsafe_b64encode(json.dumps({"a": 1}).encode()).decode()
    for garbage, problem in [
        ("garbage!!", "does not decode"),
        ("", "does not decode"),
        (made_up, "not a position"),
        (page.next_cursor[:-3], "does not decode|not a position"),
    ]:
        with pytest.raises(ValueError, match=f"^cursor .*({problem})"):
            await store.list_page(WorkflowFilter(), cursor=garbage)
    with pytest.raises(ValueError, match="another filter"):
        await store.list_page(WorkflowFilter(name="listing_Quick"), cursor=page.next_cursor)
    with pytest.raises(ValueError, match="limit must be a whole number >= 1"):
        await store.list_page(WorkflowFilter(), limit=0)
    with pytest.raises(ValueError, match="unknown status 'DONE'"):
        WorkflowFilter(statuses=("DONE",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="statuses must be a tuple"):
        WorkflowFilter(statuses="RUNNING")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="waiting_on must be one of activity, timer, signal"):
        WorkflowFilter(waiting_on="nothing")  # type: ignore[arg-type]
    # The real one goes on.
    rest = await store.list_page(WorkflowFilter(), cursor=page.next_cursor, limit=10)
    assert len(rest.workflows) == 3 and rest.next_cursor is None


async def test_closes_are_counted_in_the_minute_each_closed(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    store = client.store
    async with zoo(client, redis_url, namespace) as ids:
        pass
    # Those the zoo closed, and any that closed as it ended (the held activity's).
    infos = [await client.describe(i) for i in ids.values()]
    closed = {info["workflow_id"]: info for info in infos if info["closed_ms"]}
    assert len(closed) >= 4
    latest = max(info["closed_ms"] for info in closed.values())
    minutes = await store.closed_per_minute(5, now_ms=latest)
    assert [m["minute_ms"] for m in minutes] == [
        latest - latest % 60_000 - 60_000 * back for back in (4, 3, 2, 1, 0)
    ]
    expected = Counter(
        (info["closed_ms"] - info["closed_ms"] % 60_000, info["status"].lower())
        for info in closed.values()
    )
    for minute in minutes:
        for kind in ("completed", "failed", "cancelled"):
            assert minute[kind] == expected[(minute["minute_ms"], kind)], minute
    assert sum(m["failed"] for m in minutes) == 1
    assert sum(m["cancelled"] for m in minutes) == 1
    assert sum(m["completed"] for m in minutes) == len(closed) - 2
    # Two minutes on, they are two buckets back; an hour on, out of a 60-minute window.
    later = await store.closed_per_minute(3, now_ms=latest + 120_000)
    assert later[0] == {"minute_ms": minutes[-1]["minute_ms"]} | {
        k: minutes[-1][k] for k in ("completed", "failed", "cancelled")
    }
    hour = await store.closed_per_minute(60, now_ms=latest + 3_600_000)
    assert len(hour) == 60 and not any(m["completed"] + m["failed"] + m["cancelled"] for m in hour)
    with pytest.raises(ValueError, match="minutes must be"):
        await store.closed_per_minute(0)


async def test_workflows_that_share_a_millisecond_are_paged_exactly(
    redis_url: str, namespace: str
) -> None:
    """A burst of starts in one millisecond: the index reads go on among equal scores
    (by offset), and a cursor inside them resumes after its own id."""
    await (await Store.open(redis_url, namespace, shards=2)).close()
    async with loom.Client.connect(redis_url, namespace=namespace) as client:
        store = client.store
        started = await start_many(client, 150)
        # As if they had started in two bursts, each in one millisecond: the ids above
        # the median in the later one (so that the order is by id alone).
        by_id = sorted(started, reverse=True)
        median = by_id[len(by_id) // 2]
        for shard in range(2):
            index = store.keys.started_index(shard)
            members = await store.redis.zrange(index, 0, -1)
            scores = {m: 1_700_000_000_000 + (m.decode() > median) for m in members}
            await store.redis.zadd(index, scores, xx=True)
        with anyio.fail_after(20):
            for limit in (1, 7, 25, 40, 60):
                pages = await every_page(store, WorkflowFilter(), limit=limit)
                assert [r["workflow_id"] for p in pages for r in p.workflows] == by_id
                # Each candidate read once: none read again among the equal scores.
                assert [p.scanned for p in pages] == [len(p.workflows) for p in pages]
            assert await store.matching_ids(WorkflowFilter(), limit=1000) == by_id
