"""Worker metrics read at scrape time."""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import REGISTRY

import loom_redis as loom
from loom_redis.testing import free_port, running_worker
from tests.support import http_get

pytestmark = pytest.mark.anyio

released = anyio.Event()
activity_waits = anyio.Event()


@loom.activity(name="metrics_wait")
async def wait_for_release() -> str:
    activity_waits.set()
    await released.wait()
    return "released"


@loom.workflow(name="metrics_Waiting")
class Waiting(loom.Workflow[dict, dict]):
    @loom.step()
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("said", await ctx.activity(wait_for_release))


def in_flight() -> float | None:
    return REGISTRY.get_sample_value("loom_tasks_in_flight")


async def test_tasks_in_flight_are_counted_at_scrape_time(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    global released, activity_waits
    released, activity_waits = anyio.Event(), anyio.Event()
    async with running_worker(redis_url, namespace, eager_seconds=0) as worker:
        assert in_flight() == 0
        handle = await client.start(Waiting, {})
        with anyio.fail_after(10):
            # The activity task runs, waiting (a task only taken may still wait for its
            # executor: in flight, but not running).
            await activity_waits.wait()
        assert in_flight() == len(worker.tasks_in_flight) == 1
        released.set()
        assert await handle.result(timeout=10) == {"said": "released"}
        with anyio.fail_after(10):  # the worker finishes the task after the commit
            while in_flight() != 0:
                await anyio.sleep(0.01)
        assert not worker.tasks_in_flight
    assert in_flight() == 0  # a stopped worker counts nothing


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@loom.activity(name="metrics_echo")
async def echo(value: str) -> str:
    return value


@loom.workflow(name="metrics_Echo")
class Echo(loom.Workflow[dict, dict]):
    @loom.step()
    async def echo(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("echoed", await ctx.activity(echo, ctx.input["value"]))


async def test_task_kinds_are_labelled_in_words(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    def tasks(kind: str, outcome: str) -> float:
        return sample("loom_tasks_total", queue="default", kind=kind, outcome=outcome)

    before = {kind: tasks(kind, "ok") for kind in ("workflow", "activity")}
    dead_before = sample("loom_dead_letters_total", kind="unknown")
    async with running_worker(redis_url, namespace, eager_seconds=0):
        handle = await client.start(Echo, {"value": "hi"})
        assert await handle.result(timeout=10) == {"echoed": "hi"}
        # An entry no loom-redis wrote, of no known kind: a dead letter.
        await client.store.redis.xadd(client.store.keys.queue(0, "default"), {"k": "zz"})
        with anyio.fail_after(10):
            while not await client.dead_letters():
                await anyio.sleep(0.02)
    # The activity's outcome and the workflow's next step are one commit: one task.
    assert tasks("workflow", "ok") - before["workflow"] == 1
    assert tasks("activity", "ok") - before["activity"] == 1
    assert sample("loom_dead_letters_total", kind="unknown") - dead_before == 1
    assert tasks("unknown", "dead") >= 1


async def test_in_flight_counts_running_tasks_and_waiting_ones_apart(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """A read brings more tasks than the worker has executors for: they wait locally, and
    are not counted in flight (which never exceeds the concurrency)."""
    global released
    released = anyio.Event()
    handles = [await client.start(Waiting, {}) for _ in range(20)]
    async with running_worker(redis_url, namespace, concurrency=2, eager_seconds=0):
        assert sample("loom_worker_concurrency") == 2
        with anyio.fail_after(10):
            while True:
                running = sample("loom_tasks_in_flight")
                waiting = sample("loom_tasks_waiting_locally")
                assert running <= 2, (running, waiting)
                if running == 2 and waiting > 0:
                    break
                await anyio.sleep(0.005)
        released.set()
        for handle in handles:
            assert await handle.result(timeout=20) == {"said": "released"}
    assert sample("loom_worker_concurrency") == 0  # a stopped worker counts nothing


async def test_metrics_endpoint_has_no_created_series(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    port = free_port()
    async with running_worker(redis_url, namespace, metrics_port=port):
        handle = await client.start(Echo, {"value": "hi"})
        assert await handle.result(timeout=10) == {"echoed": "hi"}
        text = await http_get(port, "/metrics")
    assert "loom_tasks_total{" in text
    assert "loom_activity_duration_seconds_count{" in text
    assert "_created" not in text, [line for line in text.splitlines() if "_created" in line]


async def test_gauges_report_the_backlog_and_histograms_the_latencies(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    global released
    released = anyio.Event()

    def gauge(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"loom_namespace": namespace, "queue": "default"})

    def counted(name: str, **labels: str) -> float:
        return sample(f"{name}_count", **labels)

    closed_before = counted(
        "loom_workflow_duration_seconds", workflow="metrics_Waiting", status="COMPLETED"
    )
    started_before = counted("loom_schedule_to_start_seconds", queue="default", kind="workflow")
    handles = [await client.start(Waiting, {}) for _ in range(2)]
    async with running_worker(redis_url, namespace, eager_seconds=0, backlog_interval_seconds=0.05):
        with anyio.fail_after(10):  # both activities run, and the gauges say so
            while (gauge("loom_queue_pending"), gauge("loom_queue_backlog")) != (2, 2):
                await anyio.sleep(0.02)
        assert gauge("loom_queue_lag") == 0
        assert gauge("loom_workers_live") == 1
        assert (gauge("loom_queue_oldest_pending_age_seconds") or 0) > 0
        released.set()
        for handle in handles:
            assert await handle.result(timeout=10) == {"said": "released"}
        with anyio.fail_after(10):
            while gauge("loom_queue_backlog") != 0:
                await anyio.sleep(0.02)
        assert gauge("loom_queue_oldest_pending_age_seconds") == 0
        dead_letters = {"loom_namespace": namespace}
        assert REGISTRY.get_sample_value("loom_dead_letter_entries", dead_letters) == 0
    closed = counted(
        "loom_workflow_duration_seconds", workflow="metrics_Waiting", status="COMPLETED"
    )
    assert closed - closed_before == 2
    # Each workflow's first task, and the task its activity's result queued.
    started = counted("loom_schedule_to_start_seconds", queue="default", kind="workflow")
    assert started - started_before >= 2
