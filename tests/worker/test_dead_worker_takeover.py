"""A worker whose heartbeat stops is dead: its tasks run again on another worker long
before their lease ends (a SIGKILLed worker subprocess; a worker cut off from Redis,
whose late outcome is then refused), while a live worker in a long activity keeps it."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import anyio
import pytest
from prometheus_client import REGISTRY

import loom_redis as loom
from loom_redis.events import EventType
from loom_redis.store import DEAD_AFTER_MS
from loom_redis.store.keys import WORKER_GROUP
from loom_redis.testing import running_worker
from tests.crash_workflows import LongWorkflow, PipelineWorkflow, expected_result
from tests.support import (
    CuttableProxy,
    file_text,
    side_log_lines,
    wait_for_lines,
    wait_until_ready,
    worker_process,
)

pytestmark = pytest.mark.anyio

# Long enough that no lease can end within the test: only a stopped heartbeat can make
# another worker take a task over.
LEASE = 120.0
# Well past the dead threshold and the scan, and short of the earliest end of a lease (a
# task's lease is renewed every third of a lease).
TAKEOVER_SECONDS = 40.0
assert DEAD_AFTER_MS / 1000 < TAKEOVER_SECONDS < LEASE * 2 / 3


def _running(lines: list[list[str]], pid: int) -> set[tuple[str, str]]:
    """Activities (name, workflow id) that process `pid` began and did not end."""
    begun = Counter(
        tuple(line[1:3]) for line in lines if line[0] == "begin" and line[3] == str(pid)
    )
    ended = Counter(tuple(line[1:3]) for line in lines if line[0] == "end" and line[3] == str(pid))
    return set(begun - ended)


async def test_a_sigkilled_workers_tasks_run_again_long_before_their_lease(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    side_log = tmp_path / "side.log"
    first_out, second_out = tmp_path / "worker1.out", tmp_path / "worker2.out"
    options = ("--lease", str(LEASE), "--concurrency", "8")
    async with (
        worker_process(redis_url, namespace, side_log, first_out, *options) as first,
        worker_process(redis_url, namespace, side_log, second_out, *options) as second,
    ):
        await wait_until_ready(client, first, first_out)
        await wait_until_ready(client, second, second_out)
        handles = [
            await client.start(PipelineWorkflow, {"n": n, "seconds": 0.5}) for n in range(16)
        ]
        await wait_for_lines(side_log, "end", 4, first_out)
        # Several running, so that not all of them end between this look and the kill.
        with anyio.fail_after(20):
            while len(_running(await side_log_lines(side_log), first.pid)) < 3:
                await anyio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        interrupted = _running(await side_log_lines(side_log), first.pid)

        results = []
        with anyio.move_on_after(TAKEOVER_SECONDS):
            results = [await handle.result() for handle in handles]
        if len(results) < len(handles):
            pytest.fail(
                f"the killed worker's tasks did not run again within {TAKEOVER_SECONDS:g}s "
                f"(lease {LEASE:g}s); the other worker said:\n{await file_text(second_out)}"
            )
    assert results == [expected_result(n) for n in range(16)]
    lines = await side_log_lines(side_log)
    rerun = {tuple(line[1:3]) for line in lines if line[0] == "end" and line[3] == str(second.pid)}
    assert interrupted and interrupted <= rerun, (interrupted, rerun)
    assert "dead worker" in await file_text(second_out)


@pytest.mark.parametrize("eager_seconds", [0.05, 0.0], ids=["run-at-once", "queued"])
async def test_a_live_worker_in_a_long_activity_is_not_robbed(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path, eager_seconds: float
) -> None:
    """Its heartbeat goes on while the activity runs past the dead threshold."""
    side_log = tmp_path / "side.log"
    output = tmp_path / "worker.out"
    seconds = DEAD_AFTER_MS / 1000 + 5
    options = ("--lease", str(LEASE), "--eager-seconds", str(eager_seconds))
    async with worker_process(redis_url, namespace, side_log, output, *options) as first:
        await wait_until_ready(client, first, output)
        handle = await client.start(LongWorkflow, {"seconds": seconds})
        await wait_for_lines(side_log, "begin", 1, output)
        async with running_worker(redis_url, namespace, lease_seconds=LEASE):
            assert await handle.result(timeout=seconds + 20) == {"outcome": "done"}
    lines = await side_log_lines(side_log)
    assert [line[0] for line in lines] == ["begin", "end"], lines
    assert {line[3] for line in lines} == {str(first.pid)}


# -- a worker cut off from Redis ---------------------------------------------------------

executions: list[str] = []


@loom.activity(name="takeover_count")
async def count_execution(seconds: float) -> int:
    """Which execution of the activity this is (1, 2, ...) in this process."""
    executions.append("begin")
    number = executions.count("begin")
    await anyio.sleep(seconds)
    return number


@loom.workflow(name="takeover_Counted")
class CountedWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("execution", await ctx.activity(count_execution, ctx.input["seconds"]))


@pytest.mark.standalone
async def test_a_worker_cut_off_from_redis_is_taken_over_and_its_late_outcome_refused(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    executions.clear()
    proxy = CuttableProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    try:
        async with running_worker(proxy.url, namespace, lease_seconds=LEASE) as cut_off:
            handle = await CountedWorkflow.start({"seconds": 3.0})
            with anyio.fail_after(10):
                while not executions:
                    await anyio.sleep(0.01)
            async with running_worker(redis_url, namespace, lease_seconds=LEASE):
                proxy.cut = True
                proxy.sever()
                result = None
                with anyio.move_on_after(TAKEOVER_SECONDS):
                    result = await handle.result()
                if result is None:
                    pytest.fail(
                        f"the cut-off worker's activity did not run again within "
                        f"{TAKEOVER_SECONDS:g}s (lease {LEASE:g}s): {executions.count('begin')} "
                        "execution(s)"
                    )
                # The other worker's execution, the second, is the one recorded.
                assert result == {"execution": 2}
                history = await handle.history()
                proxy.cut = False
                # Back: its own execution ends, and its outcome is refused.
                with anyio.fail_after(30):
                    while cut_off.tasks_in_flight:
                        await anyio.sleep(0.05)
            assert await handle.history() == history
            assert await handle.result() == {"execution": 2}
            # It serves again: a new workflow completes.
            assert await (await CountedWorkflow.start({"seconds": 0.0})).result(timeout=20) == {
                "execution": 3
            }
    finally:
        await proxy.stop()
    completed = [e for e in history if e.type == EventType.ACTIVITY_COMPLETED]
    assert len(completed) == 1


@pytest.mark.standalone
async def test_a_redis_stall_longer_than_the_dead_threshold_robs_no_worker(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """Redis answers no one for a while (CLIENT PAUSE, as a stalled server would): every
    heartbeat stops at once, and no worker counts another as dead for it."""
    executions.clear()
    pause_ms = DEAD_AFTER_MS + 1000
    async with running_worker(redis_url, namespace, lease_seconds=LEASE):
        handle = await CountedWorkflow.start({"seconds": pause_ms / 1000 + 6})
        with anyio.fail_after(10):
            while not executions:
                await anyio.sleep(0.01)
        async with running_worker(redis_url, namespace, lease_seconds=LEASE):
            await anyio.sleep(2)  # the second worker has seen the first one's heartbeat
            await client.store.redis.execute_command("CLIENT", "PAUSE", pause_ms, "ALL")
            assert await handle.result(timeout=pause_ms / 1000 + 30) == {"execution": 1}
    assert executions == ["begin"]


async def test_a_worker_leaves_a_task_taken_over_from_it_to_its_taker(
    client: loom.Client, redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A task another worker took over while this one still runs it (this one was cut
    off, or stalled past the lease) stays with its taker: renewing leases does not pull
    it back, and this worker stops renewing it, counts it and says so."""
    executions.clear()
    lost_before = REGISTRY.get_sample_value("loom_tasks_lost_total") or 0.0
    # Renewals every 2 s, and no stale claim of the task back from its taker before the
    # activity ends; queued: the activity's task is in a stream.
    async with running_worker(redis_url, namespace, lease_seconds=6.0, eager_seconds=0.0) as worker:
        handle = await CountedWorkflow.start({"seconds": 5.5})
        with anyio.fail_after(10):
            while not executions:
                await anyio.sleep(0.01)
        [task] = worker.tasks_in_flight
        redis = client.store.redis
        await redis.xclaim(task.queue_key, WORKER_GROUP, "taker", 0, [task.id], justid=True)
        with anyio.fail_after(5):
            while (REGISTRY.get_sample_value("loom_tasks_lost_total") or 0.0) == lost_before:
                await anyio.sleep(0.05)
        await anyio.sleep(2.2)  # another renewal
        [pending] = await redis.xpending_range(
            task.queue_key, WORKER_GROUP, min=task.id, max=task.id, count=1
        )
        assert pending["consumer"] == b"taker"
        assert REGISTRY.get_sample_value("loom_tasks_lost_total") == lost_before + 1
        # Its own run goes on, and its outcome is recorded: the taker recorded none.
        assert await handle.result(timeout=20) == {"execution": 1}
    assert f"task {task.id} of workflow {handle.workflow_id} was taken over" in caplog.text
