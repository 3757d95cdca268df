"""Eager activities: a workflow task runs the first activity it schedules at once, on its
worker. A quick one is written together with the workflow task in one commit, and the
history is the one the queued way writes; a slow one has its scheduling written when the
eager window ends, with a lease in the timer zset instead of a queued task, renewed
while it runs, and firing it as a queued task if its worker dies."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import anyio
import msgpack
import pytest

import loom_redis as loom
from loom_redis.events import EventType
from loom_redis.testing import running_worker
from tests.crash_workflows import PipelineWorkflow, expected_result
from tests.store_calls import count_worker_calls
from tests.support import side_log_lines, wait_for_lines, wait_until_ready, worker_process

pytestmark = pytest.mark.anyio

# The Store transitions a worker makes for an activity's outcome.
TRANSITIONS = ("commit_workflow_task", "record_activity_result", "schedule_activity_retry")
RUNS: Counter[str] = Counter()
GATES: dict[str, anyio.Event] = {}


@loom.activity(name="eager_greet")
async def greet(name: str) -> str:
    RUNS[name] += 1
    return f"hello {name}"


@loom.activity(name="eager_gated")
async def gated(name: str) -> str:
    RUNS[name] += 1
    await GATES[name].wait()
    return f"{name} passed"


@loom.activity(name="eager_flaky", retry_count=2, retry_backoff_seconds=0.05)
async def flaky(name: str, failures: int) -> str:
    RUNS[name] += 1
    if RUNS[name] <= failures:
        raise RuntimeError(f"{name} failed on run {RUNS[name]}")
    return f"{name} ran {RUNS[name]} times"


@loom.workflow(name="eager_Greeting")
class Greeting(loom.Workflow[dict, dict]):
    @loom.step()
    async def greet(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("greeting", await ctx.activity(greet, ctx.input["name"]))


@loom.workflow(name="eager_Gated")
class Gated(loom.Workflow[dict, dict]):
    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("first", await ctx.activity(gated, ctx.input["name"]))
        await ctx.state.set("second", await ctx.activity(greet, ctx.input["name"] + "-2"))


@loom.workflow(name="eager_Flaky")
class Flaky(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("out", await ctx.activity(flaky, ctx.input["name"], ctx.input["n"]))


def shape(history: list[loom.Event]) -> list[tuple[str, int]]:
    return [(str(e.type), e.seq) for e in history]


async def test_a_quick_activity_is_written_with_its_workflow_task_in_one_commit(
    client: loom.Client, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_worker_calls(monkeypatch, client, *TRANSITIONS)
    async with running_worker(redis_url, namespace):
        eager = await client.start(Greeting, {"name": "eager"})
        assert await eager.result(timeout=10) == {"greeting": "hello eager"}
    assert calls == Counter({"commit_workflow_task": 1})
    async with running_worker(redis_url, namespace, eager_seconds=0):
        queued = await client.start(Greeting, {"name": "queued"})
        assert await queued.result(timeout=10) == {"greeting": "hello queued"}
    assert calls == Counter({"commit_workflow_task": 3})
    # The same history either way: replay cannot tell them apart.
    eager_history, queued_history = await eager.history(), await queued.history()
    assert shape(eager_history) == shape(queued_history)
    assert EventType.ACTIVITY_SCHEDULED in [e.type for e in eager_history]
    assert RUNS["eager"] == RUNS["queued"] == 1


async def test_a_slow_activity_is_scheduled_at_the_window_end_and_holds_a_renewed_lease(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    store = client.store
    GATES["slow"] = anyio.Event()
    lease_seconds = 0.6
    async with running_worker(
        redis_url, namespace, eager_seconds=0.05, lease_seconds=lease_seconds
    ):
        handle = await client.start(Gated, {"name": "slow"})
        timers = store.keys.timers(store.keys.shard_of(handle.workflow_id))
        with anyio.fail_after(10):
            while not (scheduled := _scheduled(await handle.history())):
                await anyio.sleep(0.01)
        # No task was queued for it: its lease stands in the timer zset.
        [(lease, due)] = await store.redis.zrange(timers, 0, -1, withscores=True)
        kind, workflow_id, _queue, seq, task = msgpack.unpackb(lease, raw=True)
        assert (kind, workflow_id) == (b"retry", handle.workflow_id.encode())
        assert [int(seq)] == scheduled
        assert dict(zip(task[::2], task[1::2], strict=True))[b"att"] == b"1"
        # Held past several leases: renewed, so never queued for another attempt.
        await anyio.sleep(3 * lease_seconds)
        [(_, renewed)] = await store.redis.zrange(timers, 0, -1, withscores=True)
        assert renewed > due
        assert RUNS["slow"] == 1
        GATES["slow"].set()
        assert await handle.result(timeout=10) == {
            "first": "slow passed",
            "second": "hello slow-2",
        }
        assert await store.redis.zcard(timers) == 0
    history = await handle.history()
    completed = [e.seq for e in history if e.type == EventType.ACTIVITY_COMPLETED]
    assert completed == _scheduled(history) and len(completed) == 2
    assert RUNS["slow"] == RUNS["slow-2"] == 1


def _scheduled(history: list[loom.Event]) -> list[int]:
    return [e.seq for e in history if e.type == EventType.ACTIVITY_SCHEDULED]


async def test_a_failed_first_attempt_is_retried_through_the_timers_and_recorded_once(
    client: loom.Client, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_worker_calls(monkeypatch, client, *TRANSITIONS)
    async with running_worker(redis_url, namespace):
        handle = await client.start(Flaky, {"name": "flaky", "n": 1})
        assert await handle.result(timeout=10) == {"out": "flaky ran 2 times"}
        # The first attempt's retry went in with the workflow task's commit.
        assert calls["schedule_activity_retry"] == 0
        doomed = await client.start(Flaky, {"name": "doomed", "n": 5})
        with pytest.raises(loom.ActivityFailedError, match="doomed failed on run 3"):
            await doomed.result(timeout=10)
    for name, runs, history in (
        ("flaky", 2, await handle.history()),
        ("doomed", 3, await doomed.history()),
    ):
        assert RUNS[name] == runs
        types = [e.type for e in history]
        assert types.count(EventType.ACTIVITY_SCHEDULED) == 1
        [seq] = _scheduled(history)
        outcomes = [e for e in history if e.type.startswith("ACTIVITY_") and e.seq == seq]
        assert [e.data["attempts"] for e in outcomes[1:]] == [runs]


async def test_a_worker_dying_with_held_activities_leaves_them_to_another(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    side_log = tmp_path / "side.log"
    first_out, second_out = tmp_path / "worker1.out", tmp_path / "worker2.out"
    options = ("--lease", "1", "--eager-seconds", "0.05")
    async with worker_process(redis_url, namespace, side_log, first_out, *options) as first:
        await wait_until_ready(client, first, first_out)
        handles = [
            await client.start(PipelineWorkflow, {"n": n, "seconds": 0.5}, workflow_id=f"held-{n}")
            for n in range(3)
        ]
        # Each first activity runs at once and outlasts the window: held, then killed.
        await wait_for_lines(side_log, "begin", 3, first_out)
        with anyio.fail_after(10):
            while await _held_leases(client) < 3:
                await anyio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert not any(line[0] == "end" for line in await side_log_lines(side_log))
    async with worker_process(redis_url, namespace, side_log, second_out, *options):
        for n, handle in enumerate(handles):
            assert await handle.result(timeout=30) == expected_result(n)
    assert await _held_leases(client) == 0
    ends = Counter(tuple(line[1:3]) for line in await side_log_lines(side_log) if line[0] == "end")
    assert set(ends.values()) == {1}  # each activity ran to its end once: the kill cut the first
    for handle in handles:
        history = await handle.history()
        completed = [e.seq for e in history if e.type == EventType.ACTIVITY_COMPLETED]
        assert len(completed) == len(set(completed)) == 3


async def _held_leases(client: loom.Client) -> int:
    keys = client.store.keys
    return sum([await client.store.redis.zcard(keys.timers(s)) for s in range(keys.shards)])


async def test_a_drain_hands_back_the_lease_of_an_activity_still_running(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """A worker that stops while an activity it runs at once outlasts its drain makes
    that activity's lease due at once, as it hands queued tasks back: another worker
    runs it without waiting for the lease (30 s here) to end."""
    store = client.store
    GATES["drained"] = anyio.Event()
    async with running_worker(redis_url, namespace, drain_seconds=0.3, lease_seconds=30):
        handle = await client.start(Gated, {"name": "drained"})
        timers = store.keys.timers(store.keys.shard_of(handle.workflow_id))
        with anyio.fail_after(10):
            while not await store.redis.zcard(timers):
                await anyio.sleep(0.01)
    [(_, due)] = await store.redis.zrange(timers, 0, -1, withscores=True)
    assert due <= time.time() * 1000  # handed back: due now, not in 30 s
    GATES["drained"].set()
    async with running_worker(redis_url, namespace, timer_scan_seconds=0.2):
        assert await handle.result(timeout=10) == {
            "first": "drained passed",
            "second": "hello drained-2",
        }
    assert RUNS["drained"] == 2  # cut short by the drain, then run again
    assert await store.redis.zcard(timers) == 0
