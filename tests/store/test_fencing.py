"""Two workers racing on one workflow task: the history length is the fencing token,
so one commit wins and the other writes nothing and reloads."""

from __future__ import annotations

import pytest

import loom_redis as loom
from loom_redis.definitions import workflow_definition
from loom_redis.engine import WorkflowInstance
from loom_redis.events import EventType, Status
from loom_redis.store import Store, TaskPlan
from loom_redis.store.connection import now_ms
from loom_redis.store.keys import WORKER_GROUP
from loom_redis.testing import running_worker
from tests.support import read_every_shard

pytestmark = pytest.mark.anyio


@loom.activity(name="fencing_echo")
async def echo(value: str) -> str:
    return value


@loom.workflow(name="FencingWorkflow")
class Echo(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("echo", await ctx.activity(echo, ctx.input["value"]))


async def _take_workflow_task(store: Store, consumer: str) -> list[object]:
    await store.ensure_groups(["default"])
    return list(await read_every_shard(store, consumer, 10, 5000))


async def test_the_second_of_two_racing_commits_is_rejected(client: loom.Client) -> None:
    store = client.store
    handle = await Echo.start({"value": "x"})
    [task] = await _take_workflow_task(store, "racer-a")
    history = await store.read_history(handle.workflow_id)
    definition = workflow_definition(Echo)

    # Both "workers" replay the same history and produce the same commands.
    activations = []
    for _ in range(2):
        instance = WorkflowInstance(definition, handle.workflow_id)  # type: ignore[abstract]
        activations.append(instance.apply(history, now_ms()))
    commits = [
        await store.commit_workflow_task(
            handle.workflow_id,
            queue="default",
            task_id=task.id,  # type: ignore[attr-defined]
            expected_length=len(history),
            plans=[TaskPlan(activation.commands, Status.RUNNING, consumed_events=True)],
        )
        for activation in activations
    ]
    assert [c.outcome for c in commits] == ["ok", "conflict"]
    assert commits[1].length == commits[0].length
    after = await store.read_history(handle.workflow_id)
    assert len(after) == commits[0].length
    assert [e.type for e in after].count(EventType.ACTIVITY_SCHEDULED) == 1
    queued = await store.redis.xlen(
        store.keys.activity_queue(store.keys.shard_of(handle.workflow_id), "default")
    )
    assert queued == 1  # the one activity task, not two
    pending = await store.redis.xpending(task.queue_key, WORKER_GROUP)  # type: ignore[attr-defined]
    assert pending["pending"] == 0  # the workflow task was acknowledged by the winner


async def test_a_workflow_task_taken_over_midway_completes_once(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    """A worker read the task and stalled; after the lease another worker takes it over."""
    store = client.store
    handle = await Echo.start({"value": "y"})
    [stalled] = await _take_workflow_task(store, "stalled-worker")
    async with running_worker(redis_url, namespace, lease_seconds=0.3):
        assert await handle.result(timeout=10) == {"echo": "y"}
    history = await handle.history()
    assert [e.type for e in history].count(EventType.ACTIVITY_SCHEDULED) == 1
    assert [e.type for e in history].count(EventType.WORKFLOW_COMPLETED) == 1
    # The stalled worker wakes up and commits what it computed from the old history.
    definition = workflow_definition(Echo)
    old = history[:1]
    instance = WorkflowInstance(definition, handle.workflow_id)  # type: ignore[abstract]
    late = await store.commit_workflow_task(
        handle.workflow_id,
        queue="default",
        task_id=stalled.id,  # type: ignore[attr-defined]
        expected_length=len(old),
        plans=[
            TaskPlan(instance.apply(old, now_ms()).commands, Status.RUNNING, consumed_events=True)
        ],
    )
    assert late.outcome == "closed"
    assert len(await handle.history()) == len(history)
