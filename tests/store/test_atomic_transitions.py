"""Each transition is atomic (issue 11): a script never fails after its first write.

A step may gather thousands of activities (more values than Lua's unpack passes at once
go in pieces); one that makes more commands than a task may write fails the workflow
and writes none of them; and a key of the wrong type (written by hand) fails every
script before it writes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.exceptions import ResponseError

import loom_redis as loom
from loom_redis import engine
from loom_redis.events import EventType, Status
from loom_redis.store import Store, Task, TaskPlan
from loom_redis.store.connection import now_ms
from loom_redis.store.keys import WORKER_GROUP
from loom_redis.store.wire import DeleteWhen
from loom_redis.testing import running_worker
from tests.support import namespace_dump

pytestmark = pytest.mark.anyio

ECHOED: list[int] = []


@loom.activity(name="atomic_echo")
async def echo(value: int) -> int:
    ECHOED.append(value)
    return value


@loom.workflow(name="atomic_Gather")
class GatherWorkflow(loom.Workflow[dict, dict]):
    @loom.step(name="gather")
    async def gather(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        results = await asyncio.gather(*[ctx.activity(echo, i) for i in range(ctx.input["n"])])
        await ctx.state.set("total", sum(results))


async def gather(redis_url: str, namespace: str, client: loom.Client, n: int) -> None:
    async with running_worker(redis_url, namespace):
        handle = await client.start(GatherWorkflow, {"n": n})
        assert await handle.result(timeout=120) == {"total": n * (n - 1) // 2}


async def test_a_step_gathers_10000_activities(
    redis_url: str, namespace: str, client: loom.Client
) -> None:
    # 20,000 meta fields and values: more than one HSET from Lua could take.
    await gather(redis_url, namespace, client, 10_000)


async def test_too_many_commands_in_one_task_fail_the_workflow_and_write_none(
    redis_url: str, namespace: str, client: loom.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine.instance, "MAX_COMMANDS_PER_TASK", 100)
    ECHOED.clear()
    async with running_worker(redis_url, namespace):
        # STEP_STARTED and 99 activities: at the limit.
        at_limit = await client.start(GatherWorkflow, {"n": 99})
        assert await at_limit.result(timeout=30) == {"total": 99 * 98 // 2}
        ECHOED.clear()
        over = await client.start(GatherWorkflow, {"n": 100})
        with pytest.raises(loom.WorkflowExecutionError) as failed:
            await over.result(timeout=30)
    message = str(failed.value)
    for part in (
        over.workflow_id,
        "step 'gather'",
        "101 commands in one workflow task (100 ACTIVITY_SCHEDULED, 1 STEP_STARTED)",
        "more than the 100 one task may write; none was written",
    ):
        assert part in message
    types = [event.type for event in await over.history()]
    assert types == [
        EventType.WORKFLOW_STARTED,
        EventType.WORKFLOW_FAILED,
        EventType.WORKFLOW_TASK_COMPLETED,
    ]
    assert ECHOED == []


# -- every script refuses a key of the wrong type before it writes --------------------

WID = "atomic-subject"


@dataclass(frozen=True)
class Hostile:
    """A script run against a key of the wrong type: `setup` leaves the namespace as the
    script finds it and returns the key to overwrite; `act` runs the script."""

    setup: Callable[[Store], Awaitable[str]]
    act: Callable[[Store], Awaitable[Any]]


async def started(store: Store, **meta: str) -> None:
    """The subject workflow, started (no worker runs it), with these meta fields."""
    await store.start_workflow(
        WID,
        name="atomic_Gather",
        version="1",
        queue="default",
        owner="o",
        agent=None,
        total_steps=1,
        workflow_input={"n": 1},
        request_id="atomic-start",
    )
    if meta:
        await store.redis.hset(store.keys.meta(WID), mapping=meta)


def shard(store: Store) -> int:
    return store.keys.shard_of(WID)


async def pending_task(store: Store) -> Task:
    """An activity task of the subject's seq 1, delivered to a consumer (pending)."""
    stream = store.keys.activity_queue(shard(store), "default")
    await store.ensure_groups(["default"])
    fields = store.activity_task_fields(WID, 1, 1, b"\x80")
    await store.redis.xadd(stream, dict(zip(fields[::2], fields[1::2], strict=True)))
    reply = await store.redis.xreadgroup(WORKER_GROUP, "c", {stream: ">"}, count=1)
    entry_id, read = reply[0][1][0]
    return Task(stream, shard(store), entry_id.decode(), {k.decode(): v for k, v in read.items()})


async def start_setup(store: Store) -> str:
    return store.keys.queue(shard(store), "default")


async def commit_setup(store: Store) -> str:
    await started(store)
    return store.keys.status_index_prefix(shard(store)) + "RUNNING"


async def commit_act(store: Store) -> Any:
    return await store.commit_workflow_task(
        WID, queue="default", task_id="", expected_length=1, plans=[TaskPlan([], Status.RUNNING)]
    )


async def activity_result_setup(store: Store) -> str:
    await started(store, **{"a:1": "1", "wft": "0"})
    return store.keys.queue(shard(store), "default")


async def activity_result_act(store: Store) -> Any:
    stream = store.keys.activity_queue(shard(store), "default")
    task = Task(stream, shard(store), "", {"wf": WID.encode(), "seq": b"1"})
    return await store.record_activity_result(task, failed=False, record=b"\x90")


async def activity_retry_setup(store: Store) -> str:
    await started(store, **{"a:1": "1"})
    STATE["task"] = await pending_task(store)
    return store.keys.timers(shard(store))


async def activity_retry_act(store: Store) -> Any:
    return await store.schedule_activity_retry(STATE["task"], queue="default", attempt=2, due_ms=1)


async def await_close_setup(store: Store) -> str:
    await started(store)
    # Nobody waits yet: the script would register the wait before the notice fails it.
    await store.redis.hdel(store.keys.meta(WID), "waited")
    return store.keys.close_notice(WID)


async def external_setup(store: Store) -> str:
    await started(store, wft="0")
    return store.keys.queue(shard(store), "default")


async def fire_timer_setup(store: Store) -> str:
    await started(store, **{"a:1": "1"})
    fields = store.activity_task_fields(WID, 1, 2, b"\x80")
    member = store.timer_member("retry", WID, "default", 1, fields)
    await store.redis.zadd(store.keys.timers(shard(store)), {member: 1})
    return store.keys.activity_queue(shard(store), "default")


async def fire_timer_act(store: Store) -> Any:
    due, _ = await store.due_timers()
    return await store.fire_timer(due[0])


async def dead_letter_setup(store: Store) -> str:
    await started(store, **{"a:1": "1"})
    STATE["task"] = await pending_task(store)
    return store.keys.dead(shard(store))


async def redrive_setup(store: Store) -> str:
    await started(store)
    await store.dead_letter(await pending_task(store), "for the test")
    return store.keys.activity_queue(shard(store), "default")


async def redrive_act(store: Store) -> Any:
    (dead,) = await store.dead_letters()
    return await store.redrive(dead)


async def dead_timer_setup(store: Store) -> str:
    await store.redis.zadd(store.keys.timers(shard(store)), {b"not msgpack \xc1": 1})
    return store.keys.dead(shard(store))


async def defer_task_setup(store: Store) -> str:
    await started(store)
    STATE["task"] = await pending_task(store)
    return store.keys.timers(shard(store))


async def delete_closed_setup(store: Store) -> str:
    await started(store, status="COMPLETED")
    await store.redis.zadd(store.keys.expiry_index(shard(store)), {WID: 0})
    return store.keys.status_index(shard(store), "COMPLETED")


async def take_over_setup(store: Store) -> str:
    await started(store)
    STATE["task"] = await pending_task(store)
    return STATE["task"].queue_key


STATE: dict[str, Task] = {}

HOSTILE = {
    "start": Hostile(start_setup, lambda s: started(s)),
    "commit": Hostile(commit_setup, commit_act),
    "activity_result": Hostile(activity_result_setup, activity_result_act),
    "activity_retry": Hostile(activity_retry_setup, activity_retry_act),
    "await_close": Hostile(await_close_setup, lambda s: s.await_close(WID, 0.01)),
    "external": Hostile(
        external_setup,
        lambda s: s.deliver_external(WID, EventType.SIGNAL_RECEIVED, {"name": "go", "payload": 1}),
    ),
    "fire_timer": Hostile(fire_timer_setup, fire_timer_act),
    "dead_letter": Hostile(dead_letter_setup, lambda s: s.dead_letter(STATE["task"], "why")),
    "redrive": Hostile(redrive_setup, redrive_act),
    "dead_timer": Hostile(dead_timer_setup, lambda s: s.due_timers()),
    "defer_task": Hostile(
        defer_task_setup,
        lambda s: s.defer_task(STATE["task"], "default", 1, unregistered_since=0),
    ),
    "delete_closed": Hostile(
        delete_closed_setup, lambda s: s.delete_closed(WID, DeleteWhen.EXPIRED, now_ms())
    ),
    "take_over": Hostile(
        take_over_setup,
        lambda s: s.take_over(STATE["task"].queue_key, STATE["task"].shard, "c", "d", 1),
    ),
    "renew_leases": Hostile(take_over_setup, lambda s: s.renew_leases([STATE["task"]], "c")),
}


async def test_a_commit_deletes_9000_meta_fields(client: loom.Client) -> None:
    # A workflow that ends with 9,000 activities pending deletes their meta fields: more
    # than one HDEL from Lua could take.
    store = client.store
    await started(store)
    pending = [f"a:{seq}" for seq in range(1, 9001)]
    await store.redis.hset(store.keys.meta(WID), mapping=dict.fromkeys(pending, "1"))
    result = await store.commit_workflow_task(
        WID,
        queue="default",
        task_id="",
        expected_length=1,
        plans=[TaskPlan([], Status.RUNNING, meta_delete=pending)],
    )
    assert result.outcome == "ok"
    fields = await store.redis.hkeys(store.keys.meta(WID))
    assert [f for f in fields if f.startswith(b"a:")] == []


async def test_a_task_of_5000_fields_goes_to_the_dead_letter_stream_cut(
    client: loom.Client,
) -> None:
    store = client.store
    stream = store.keys.queue(0, "default")
    await store.ensure_groups(["default"])
    await store.redis.xadd(stream, {f"f{i}": "v" for i in range(5000)})
    reply = await store.redis.xreadgroup(WORKER_GROUP, "c", {stream: ">"}, count=1)
    entry_id, read = reply[0][1][0]
    task = Task(stream, 0, entry_id.decode(), {k.decode(): v for k, v in read.items()})
    await store.dead_letter(task, "unknown kind")
    (dead,) = await store.dead_letters()
    assert dead.reason == "unknown kind (the task has 5000 fields; the first 64 are kept)"
    assert len(dead.fields) == 64 + len(dead.ANNOTATIONS)
    assert await store.redis.xlen(stream) == 0


async def test_a_dead_letter_of_5000_fields_is_not_put_back(client: loom.Client) -> None:
    store = client.store
    fields = {"queue": store.keys.queue(0, "default"), "k": "w", "wf": "x"}
    entry_id = await store.redis.xadd(
        store.keys.dead(0), {**fields, **{f"f{i}": "v" for i in range(5000)}}
    )
    dead = await store.find_dead_letter(entry_id.decode())
    assert dead is not None
    with pytest.raises(loom.PayloadError, match="it has 5003 fields, more than a task has"):
        await store.redrive(dead)
    assert await store.redis.xlen(store.keys.dead(0)) == 1


def test_every_script_has_a_hostile_case() -> None:
    from loom_redis.store.wire import SCRIPT_NAMES

    assert sorted(HOSTILE) == sorted(SCRIPT_NAMES)


@pytest.mark.parametrize("script", sorted(HOSTILE))
async def test_a_key_of_the_wrong_type_fails_the_script_before_it_writes(
    client: loom.Client, namespace: str, script: str
) -> None:
    store = client.store
    case = HOSTILE[script]
    key = await case.setup(store)
    await store.redis.delete(key)
    await store.redis.set(key, "written by hand")
    before = await namespace_dump(store.redis, namespace)
    with pytest.raises(ResponseError) as refused:
        await case.act(store)
    assert await namespace_dump(store.redis, namespace) == before, "something was written"
    assert f"WRONGTYPE loom: key {key} is not a " in str(refused.value)
    assert "nothing was written" in str(refused.value)
