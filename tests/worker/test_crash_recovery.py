"""Crash recovery against a real server: a worker SUBPROCESS is SIGKILLed mid-run and a
second one finishes every workflow exactly once; a late duplicate activity completion is
dropped; SIGTERM drains a worker (idle, in a long activity, or busy) and exits 0, leaving
no task pending on it, and a second SIGINT hands its tasks back at once and exits 130;
tasks of two shards with the same entry id keep their own leases."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

import loom_redis as loom
from loom_redis.codec import decode, encode
from loom_redis.events import COMMAND_TYPES, Event, EventType
from loom_redis.store import Store, Task
from loom_redis.testing import free_port, running_worker
from tests.crash_workflows import LongWorkflow, PipelineWorkflow, expected_result
from tests.support import (
    CuttableProxy,
    file_text,
    http_get,
    side_log_lines,
    wait_for_lines,
    wait_until_ready,
    worker_process,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = 20


# -- worker subprocesses -----------------------------------------------------------------


def _running(lines: list[list[str]]) -> Counter[tuple[str, ...]]:
    """Activities begun and not ended."""
    begun = Counter(tuple(line[1:3]) for line in lines if line[0] == "begin")
    return begun - Counter(tuple(line[1:3]) for line in lines if line[0] == "end")


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of metric `name` in a /metrics response, by their labels."""
    body = text.partition("\r\n\r\n")[2]
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name
    }


def command_seqs(history: list[Event]) -> list[int]:
    return [e.seq for e in history if e.type in COMMAND_TYPES]


# -- SIGKILL and takeover ----------------------------------------------------------------


async def test_sigkilled_worker_is_taken_over_and_every_workflow_completes_once(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    side_log = tmp_path / "side.log"
    first_out, second_out = tmp_path / "worker1.out", tmp_path / "worker2.out"
    options = ("--lease", "1", "--concurrency", "8")

    async with worker_process(redis_url, namespace, side_log, first_out, *options) as first:
        await wait_until_ready(client, first, first_out)
        handles = [
            await client.start(
                PipelineWorkflow, {"n": n, "seconds": 0.2}, workflow_id=f"crash-{n:02d}"
            )
            for n in range(WORKFLOWS)
        ]
        # Some activities have run to the end; others are running right now.
        await wait_for_lines(side_log, "end", 8, first_out)
        with anyio.fail_after(20):
            while not _running(await side_log_lines(side_log)):
                await anyio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
    at_kill = await side_log_lines(side_log)
    killed_pid = str(first.pid)
    ended_before_kill = sum(1 for line in at_kill if line[0] == "end")
    assert ended_before_kill < WORKFLOWS * 3, "the kill came after everything had run"
    interrupted = _running(at_kill)
    assert interrupted, "no activity was running when the worker was killed"
    assert all(line[3] == killed_pid for line in at_kill)

    metrics_port = free_port()
    second_options = (*options, "--metrics-port", str(metrics_port))
    async with worker_process(
        redis_url, namespace, side_log, second_out, *second_options
    ) as second:
        for n, handle in enumerate(handles):
            assert await handle.result(timeout=30) == expected_result(n), await file_text(
                second_out
            )
            assert await handle.status() == "COMPLETED"
        reclaimed = samples(await http_get(metrics_port, "/metrics"), "loom_tasks_reclaimed_total")
        second.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await second.wait() == 0, await file_text(second_out)

    # The second worker took over the tasks pending on the first one when it died, and
    # counted them.
    assert "took over task" in await file_text(second_out)
    assert reclaimed[(("how", "claimed"),)] > 0, reclaimed

    completions: Counter[tuple[str, str]] = Counter()
    for handle in handles:
        history = await handle.history()
        types = Counter(e.type for e in history)
        seqs = command_seqs(history)
        assert len(seqs) == len(set(seqs)), f"{handle.workflow_id}: a command seq repeats"
        assert seqs == list(range(1, len(seqs) + 1)), f"{handle.workflow_id}: seq gap"
        scheduled = {e.seq: e.data["name"] for e in history if e.type == "ACTIVITY_SCHEDULED"}
        completed = [e.seq for e in history if e.type == EventType.ACTIVITY_COMPLETED]
        assert sorted(completed) == sorted(scheduled), handle.workflow_id
        assert len(completed) == len(set(completed)) == 3, handle.workflow_id
        assert types[EventType.WORKFLOW_STARTED] == 1
        assert types[EventType.STEP_STARTED] == 3
        assert types[EventType.ACTIVITY_SCHEDULED] == 3
        assert types[EventType.STATE_SET] == 3
        assert types[EventType.WORKFLOW_COMPLETED] == 1
        assert types[EventType.ACTIVITY_FAILED] == 0
        assert history[-2].type == EventType.WORKFLOW_COMPLETED
        for seq in completed:
            completions[(scheduled[seq], handle.workflow_id)] += 1

    lines = await side_log_lines(side_log)
    executions = Counter(tuple(line[1:3]) for line in lines if line[0] == "end")
    for key, count in completions.items():
        assert executions[key] >= count, f"{key} completed without a finished execution"
    duplicates = {key: n - completions[key] for key, n in executions.items() if n > 1}
    assert sum(completions.values()) == WORKFLOWS * 3
    assert sum(executions.values()) >= sum(completions.values())
    # Activities run at least once: re-runs after the kill are allowed, and reported.
    print(
        f"\ncrash recovery: {sum(completions.values())} completions, "
        f"{sum(executions.values())} finished executions, {len(interrupted)} interrupted "
        f"by SIGKILL, duplicate executions: {duplicates or 'none'}"
    )


async def test_the_lease_of_a_killed_workers_activity_counts_as_taken_over(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """A worker killed while it runs activities at once leaves no task in a stream: their
    leases fall due, and the worker whose timer sweep queues them again counts them."""
    side_log = tmp_path / "side.log"
    first_out, second_out = tmp_path / "worker1.out", tmp_path / "worker2.out"
    async with worker_process(redis_url, namespace, side_log, first_out, "--lease", "1") as first:
        await wait_until_ready(client, first, first_out)
        handles = [await client.start(LongWorkflow, {"seconds": 3.0}) for _ in range(3)]
        # Past the eager window: each activity's scheduling is written, with its lease.
        with anyio.fail_after(20):
            for handle in handles:
                while EventType.ACTIVITY_SCHEDULED not in [e.type for e in await handle.history()]:
                    await anyio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
    assert len(_running(await side_log_lines(side_log))) == 3
    assert await pending_tasks(client.store) == 0

    metrics_port = free_port()
    options = ("--lease", "1", "--metrics-port", str(metrics_port))
    async with worker_process(redis_url, namespace, side_log, second_out, *options):
        for handle in handles:
            assert await handle.result(timeout=30) == {"outcome": "done"}, await file_text(
                second_out
            )
        reclaimed = samples(await http_get(metrics_port, "/metrics"), "loom_tasks_reclaimed_total")
    assert reclaimed == {(("how", "claimed"),): 0, (("how", "lease_expired"),): 3}, reclaimed


# -- duplicate activity completion -------------------------------------------------------


@loom.activity(name="crashdup_echo")
async def echo(value: Any) -> Any:
    return value


@loom.workflow(name="crashdup_Workflow")
class EchoThenWaitWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def echo_step(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("echoed", await ctx.activity(echo, ctx.input["value"]))

    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("signal", await ctx.wait_for_signal("go"))


def replayed_task(store: Store, workflow_id: str, scheduled: Event, queue: str) -> Task:
    """The activity task of `scheduled`, as a second worker would hold it."""
    fields = store.activity_task_fields(workflow_id, scheduled.seq, 1, encode(scheduled.data))
    shard = store.keys.shard_of(workflow_id)
    as_bytes = {
        str(k): v if isinstance(v, bytes) else str(v).encode()
        for k, v in zip(fields[::2], fields[1::2], strict=True)
    }
    return Task(store.keys.activity_queue(shard, queue), shard, "1-1", as_bytes)


def snapshot(history: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.id, str(e.type), e.seq) for e in history]


async def test_duplicate_activity_completion_is_dropped(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    store = client.store
    async with running_worker(redis_url, namespace):
        handle = await client.start(EchoThenWaitWorkflow, {"value": "first"})
        with anyio.fail_after(10):
            while True:
                history = await handle.history()
                if any(
                    e.type == EventType.STEP_STARTED and e.data["name"] == "wait" for e in history
                ):
                    break
                await anyio.sleep(0.02)
        scheduled = next(e for e in history if e.type == EventType.ACTIVITY_SCHEDULED)
        task = replayed_task(store, handle.workflow_id, scheduled, "default")
        assert task.workflow_id == handle.workflow_id and task.kind == "a"

        # The workflow is open and waits for a signal: a second completion (or a late
        # failure) of the same activity is a duplicate and appends nothing.
        before = snapshot(await handle.history())
        recorded = await store.record_activity_result(
            task, failed=False, record=encode({"result": "second", "attempts": 1})
        )
        assert recorded.outcome == "duplicate"
        recorded = await store.record_activity_result(
            task, failed=True, record=encode({"error_type": "X", "message": "late", "attempts": 1})
        )
        assert recorded.outcome == "duplicate"
        assert snapshot(await handle.history()) == before

        await handle.signal("go", "now")
        assert await handle.result(timeout=10) == {"echoed": "first", "signal": "now"}

    # After the workflow closed, a late completion is dropped.
    final = snapshot(await handle.history())
    recorded = await store.record_activity_result(
        task, failed=False, record=encode({"result": "third", "attempts": 2})
    )
    assert recorded.outcome == "dropped"
    assert snapshot(await handle.history()) == final
    completed = [e for e in await handle.history() if e.type == EventType.ACTIVITY_COMPLETED]
    assert [(e.seq, e.data["result"]) for e in completed] == [(scheduled.seq, "first")]


# -- SIGTERM -----------------------------------------------------------------------------


async def test_sigterm_on_idle_worker_exits_zero(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    output = tmp_path / "worker.out"
    side_log = tmp_path / "side.log"
    # A drain deadline far beyond the wait below: an idle worker must not wait for it.
    async with worker_process(redis_url, namespace, side_log, output, "--drain", "120") as process:
        await wait_until_ready(client, process, output)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await process.wait() == 0, await file_text(output)
    text = await file_text(output)
    assert "Traceback" not in text, text
    assert "SIGTERM: draining" in text
    # It removed its heartbeat on the way out.
    entries = await client.store.redis.hgetall(client.store.keys.workers())
    assert not any(decode(v).get("pid") == process.pid for v in entries.values())


async def test_sigterm_during_long_activity_drains_and_records_it(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    output = tmp_path / "worker.out"
    side_log = tmp_path / "side.log"
    async with worker_process(redis_url, namespace, side_log, output, "--drain", "60") as process:
        await wait_until_ready(client, process, output)
        handle = await client.start(LongWorkflow, {"seconds": 2.0})
        await wait_for_lines(side_log, "begin", 1, output)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0, await file_text(output)
    text = await file_text(output)
    assert "Traceback" not in text, text

    # The activity ran to its end during the drain, and its result was recorded.
    lines = await side_log_lines(side_log)
    assert [line[:3] for line in lines] == [
        ["begin", "crash_long", handle.workflow_id],
        ["end", "crash_long", handle.workflow_id],
    ]
    history = await handle.history()
    completed = [e for e in history if e.type == EventType.ACTIVITY_COMPLETED]
    assert [e.data["result"] for e in completed] == ["done"]

    # Another worker finishes the workflow without running the activity again.
    async with running_worker(redis_url, namespace, lease_seconds=1):
        assert await handle.result(timeout=15) == {"outcome": "done"}
    assert len(await side_log_lines(side_log)) == 2
    types = Counter(e.type for e in await handle.history())
    assert types[EventType.ACTIVITY_SCHEDULED] == types[EventType.ACTIVITY_COMPLETED] == 1


async def wait_for_output(output: Path, text: str) -> None:
    with anyio.move_on_after(20):
        while text not in await file_text(output):
            await anyio.sleep(0.02)
        return
    pytest.fail(f"the worker did not say {text!r}; it said:\n{await file_text(output)}")


@pytest.mark.parametrize("eager_seconds", ["0.05", "0"], ids=["run-at-once", "queued"])
async def test_a_second_sigint_hands_the_running_activity_back_and_exits_130(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path, eager_seconds: str
) -> None:
    """Ctrl-C drains; a second one hands back at once what the worker has not finished
    (here an activity it runs at once, with a lease, or one it took from its queue) and
    exits 130, instead of leaving it to wait for its lease."""
    output = tmp_path / "worker.out"
    side_log = tmp_path / "side.log"
    options = ("--lease", "60", "--drain", "60", "--eager-seconds", eager_seconds)
    async with worker_process(redis_url, namespace, side_log, output, *options) as process:
        await wait_until_ready(client, process, output)
        handle = await client.start(LongWorkflow, {"seconds": 3.0})
        await wait_for_lines(side_log, "begin", 1, output)
        process.send_signal(signal.SIGINT)
        await wait_for_output(output, "SIGINT: draining")
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(20):
            assert await process.wait() == 130, await file_text(output)
    text = await file_text(output)
    assert "Traceback" not in text and "Aborted!" not in text, text
    assert f"handed back 1 task(s) of workflow(s) {handle.workflow_id}" in text, text
    assert [line[0] for line in await side_log_lines(side_log)] == ["begin"]

    # Another worker finishes the workflow before the first one's lease (60 s, renewed
    # every 20 s) could have ended: it was handed back.
    async with running_worker(redis_url, namespace, lease_seconds=60):
        assert await handle.result(timeout=30) == {"outcome": "done"}
    assert await pending_tasks(client.store) == 0


@pytest.mark.standalone
async def test_a_hand_back_without_redis_says_so_and_leaves_the_lease(
    client: loom.Client, redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping at once is best effort: with Redis out of reach the worker says what it
    could not hand back, within its bound, and the task keeps its lease."""
    proxy = CuttableProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    try:
        async with running_worker(proxy.url, namespace, lease_seconds=60) as worker:
            handle = await client.start(LongWorkflow, {"seconds": 60.0})
            with anyio.fail_after(10):
                while EventType.ACTIVITY_SCHEDULED not in [e.type for e in await handle.history()]:
                    await anyio.sleep(0.02)
            proxy.cut = True
            proxy.sever()
            with anyio.fail_after(15):
                await worker.abort()
    finally:
        await proxy.stop()
    assert f"could not hand back 1 task(s) of workflow(s) {handle.workflow_id}" in caplog.text
    store = client.store
    leases = await store.redis.zrange(
        store.keys.timers(store.keys.shard_of(handle.workflow_id)), 0, -1, withscores=True
    )
    assert len(leases) == 1 and leases[0][1] > time.time() * 1000 + 30_000


async def pending_tasks(store: Store) -> int:
    """Task stream entries delivered to some worker and not acknowledged, over all shards."""
    total = 0
    for stream in store.queue_keys(["default"]):
        summary = await store.redis.xpending(stream, "workers")
        total += int(summary["pending"])
    return total


async def test_sigterm_on_busy_worker_leaves_no_task_pending(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    """A drained worker holds nothing: tasks Redis delivered to it as the SIGTERM came are
    run (not left pending until the lease ends, which here is the default 30 s)."""
    output = tmp_path / "worker.out"
    side_log = tmp_path / "side.log"
    async with worker_process(redis_url, namespace, side_log, output) as process:
        await wait_until_ready(client, process, output)
        handles = [
            await client.start(PipelineWorkflow, {"n": n, "seconds": 0.05}) for n in range(60)
        ]
        await wait_for_lines(side_log, "end", 20, output)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0, await file_text(output)
    assert sum(1 for line in await side_log_lines(side_log) if line[0] == "end") < 180
    assert await pending_tasks(client.store) == 0
    # The rest is done by another worker, whose lease (30 s) never has to pass.
    async with running_worker(redis_url, namespace):
        for n, handle in enumerate(handles):
            assert await handle.result(timeout=20) == expected_result(n)
    assert await pending_tasks(client.store) == 0


# -- task ids are unique per stream only -------------------------------------------------

RUNS: Counter[str] = Counter()


@loom.activity(name="crashid_slow")
async def slow(workflow_id: str, seconds: float) -> str:
    RUNS[workflow_id] += 1
    await anyio.sleep(seconds)
    return "slow done"


@loom.workflow(name="crashid_Slow")
class SlowWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("out", await ctx.activity(slow, ctx.workflow_id, ctx.input["seconds"]))


def id_in_shard(store: Store, shard: int, prefix: str) -> str:
    return next(
        f"{prefix}-{n}" for n in range(10_000) if store.keys.shard_of(f"{prefix}-{n}") == shard
    )


async def test_tasks_with_the_same_id_in_two_shards_keep_their_own_leases(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """Stream entry ids are unique per stream; the shards' streams often share one. A task
    finishing must not end the lease renewal of another task with its id, or the other is
    taken over while it runs (and its activity runs twice)."""
    store = client.store
    # Activities queued (not run at once by the workflow task): they have stream entries.
    async with running_worker(redis_url, namespace, lease_seconds=1, eager_seconds=0):
        slow_id = id_in_shard(store, 0, "slow")
        other_id = id_in_shard(store, 1, "other")
        # A closed workflow in shard 1: a workflow task for it is quickly acknowledged.
        other = await client.start(EchoThenWaitWorkflow, {"value": 1}, workflow_id=other_id)
        await other.cancel("done with it")
        with pytest.raises(loom.WorkflowCancelledError):
            await other.result(timeout=10)

        handle = await client.start(SlowWorkflow, {"seconds": 3.0}, workflow_id=slow_id)
        with anyio.fail_after(10):
            while not RUNS[slow_id]:
                await anyio.sleep(0.01)
        slow_queue = store.keys.activity_queue(0, "default")
        pending = await store.redis.xpending_range(slow_queue, "workers", "-", "+", 10)
        assert len(pending) == 1
        task_id = pending[0]["message_id"].decode()
        # A task of shard 1 with the very same entry id, that finishes at once.
        await store.redis.xadd(
            store.keys.queue(1, "default"), {"k": "w", "wf": other_id}, id=task_id
        )
        assert await handle.result(timeout=15) == {"out": "slow done"}
    assert RUNS[slow_id] == 1, "the slow activity was taken over while it ran"
    history = await handle.history()
    assert [e.type for e in history].count(EventType.ACTIVITY_COMPLETED) == 1
    assert await pending_tasks(store) == 0


async def test_a_task_delivered_to_a_stopping_worker_is_run_in_its_drain(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """A stop can cut a read short after Redis delivered its tasks to the worker: they are
    the worker's, pending on it, and it runs them as it drains (without waiting for its
    drain deadline) instead of leaving them until the lease ends."""
    store = client.store
    await store.ensure_groups(["default"])
    handle = await client.start(EchoThenWaitWorkflow, {"value": "x"})
    # Deliver the workflow's first task to consumer "stopping" as an XREADGROUP would.
    shard = store.keys.shard_of(handle.workflow_id)
    queue = store.keys.queue(shard, "default")
    delivered = await store.redis.xreadgroup("workers", "stopping", {queue: ">"}, count=10)
    assert len(delivered[0][1]) == 1

    with anyio.fail_after(20):
        async with running_worker(
            redis_url, namespace, name="stopping", drain_seconds=60, lease_seconds=60
        ):
            # Idle, its read blocking: a stop cuts it short, and only the drain can run
            # the task (its slots must be free for it).
            await anyio.sleep(0.5)
    history = await handle.history()
    assert [e.data["name"] for e in history if e.type == EventType.STEP_STARTED] == ["echo_step"]
    assert await pending_tasks(store) == 0
    async with running_worker(redis_url, namespace):
        await handle.signal("go", 1)
        assert await handle.result(timeout=10) == {"echoed": "x", "signal": 1}
