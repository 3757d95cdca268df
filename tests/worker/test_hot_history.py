"""A workflow whose history keeps moving still makes progress (issue 11 §2).

Events that arrive while a workflow task runs (signals, cancel requests, activity
outcomes, timers) no longer make its commit lose: the commit writes what the code did
after them, marks them as left for the next task (WORKFLOW_TASK_COMPLETED's `skip`), and
queues that task. A history that moved by anything else (another worker's commit) is
still a conflict, and a replay feeds every event to the code in the batch it was fed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import anyio
import pytest

import loom_redis as loom
from loom_redis.definitions import workflow_definition
from loom_redis.engine import WorkflowInstance
from loom_redis.errors import NonDeterministicWorkflowError
from loom_redis.events import Event, EventType, Status
from loom_redis.store import CommitResult, Store, TaskPlan
from loom_redis.store.connection import now_ms
from loom_redis.store.keys import WORKER_GROUP
from loom_redis.testing import isolated_registry, running_worker
from tests.support import read_every_shard

pytestmark = pytest.mark.anyio

SIGNALS = 30


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    with isolated_registry():
        yield


@loom.activity(name="hot_echo")
async def echo(value: int) -> int:
    return value


@loom.workflow(name="hot_Counter")
class Counter(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Receives `count` ticks one after another, recording each (a STATE_SET a replay
    compares), and echoes every fifth through an activity."""

    @loom.step(name="count")
    async def count(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        for n in range(int(ctx.input["count"])):
            tick = await ctx.wait_for_signal("tick")
            if n % 5 == 0:
                tick = await ctx.activity(echo, tick)
            await ctx.state.set("last", tick)
        await ctx.state.set("done", True)


def _signalling_before_each_commit(
    monkeypatch: pytest.MonkeyPatch, client: loom.Client, workflow_id: str
) -> list[int]:
    """Make every commit of a workflow task find one more signal in the history than its
    worker read (as under a steady stream of signals). Returns the ticks sent."""
    sent: list[int] = []
    commit = Store.commit_workflow_task

    async def commit_after_a_signal(self: Store, *args: Any, **kwargs: Any) -> Any:
        if args[0] == workflow_id and len(sent) < SIGNALS:
            sent.append(len(sent))
            await client.signal(workflow_id, "tick", sent[-1])
        return await commit(self, *args, **kwargs)

    monkeypatch.setattr(Store, "commit_workflow_task", commit_after_a_signal)
    return sent


@pytest.mark.parametrize("cache_size", [512, 0], ids=["cached", "replayed"])
async def test_a_workflow_whose_history_moves_before_every_commit_completes(
    client: loom.Client,
    redis_url: str,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    cache_size: int,
) -> None:
    """Before the fix every commit conflicted, 20 times in a row, and the task then waited
    out its lease (60 s here). With no cache, every task replays the whole history, so a
    replay that fed a skipped signal to the wrong batch would fail the workflow."""
    handle = await client.start(Counter, {"count": SIGNALS})
    sent = _signalling_before_each_commit(monkeypatch, client, handle.workflow_id)
    async with running_worker(
        redis_url, namespace, lease_seconds=60, cache_size=cache_size, eager_seconds=0
    ):
        with anyio.fail_after(30):
            result = await handle.result()
    assert sent == list(range(SIGNALS))
    assert result == {"last": SIGNALS - 1, "done": True}
    history = await client.history(handle.workflow_id)
    skips = [
        e.data["skip"]
        for e in history
        if e.type == EventType.WORKFLOW_TASK_COMPLETED and isinstance(e.data, dict)
    ]
    assert skips, "no commit left a signal for the next task"
    # The whole history replays in a fresh instance, feeding each batch as it was fed.
    definition = workflow_definition(Counter)
    fresh = WorkflowInstance(definition, handle.workflow_id)  # type: ignore[abstract]
    assert fresh.apply(history, now_ms()).status == Status.COMPLETED


@dataclass
class FirstTask:
    """A started Counter whose first workflow task one test takes and commits by hand,
    after `signals` signals arrived."""

    store: Store
    workflow_id: str
    task: Any
    history: list[Event]

    @classmethod
    async def taken(cls, client: loom.Client, signals: int) -> FirstTask:
        store = client.store
        handle = await client.start(Counter, {"count": 2})
        await store.ensure_groups(["default"])
        [task] = await read_every_shard(store, "racer", 10, 5000)
        history = await store.read_history(handle.workflow_id)
        for n in range(signals):
            await client.signal(handle.workflow_id, "tick", n)
        return cls(store, handle.workflow_id, task, history)

    async def commit(self, *, expected_length: int | None = None) -> CommitResult:
        """Commit what the code did on the history read, as read at its last entry."""
        definition = workflow_definition(Counter)
        instance = WorkflowInstance(definition, self.workflow_id)  # type: ignore[abstract]
        commands = instance.apply(self.history, now_ms()).commands
        return await self.store.commit_workflow_task(
            self.workflow_id,
            queue="default",
            task_id=self.task.id,
            expected_length=len(self.history) if expected_length is None else expected_length,
            last_read_id=self.history[-1].id,
            plans=[TaskPlan(commands, Status.RUNNING, consumed_events=True)],
        )


async def test_a_commit_after_signals_writes_them_as_skipped_and_queues_a_task(
    client: loom.Client,
) -> None:
    first = await FirstTask.taken(client, signals=3)
    store, workflow_id, task, history = first.store, first.workflow_id, first.task, first.history
    result = await first.commit()

    assert result.outcome == "ok"
    after = await store.read_history(workflow_id)
    assert [e.type for e in after[len(history) : len(history) + 3]] == [
        EventType.SIGNAL_RECEIVED
    ] * 3
    assert after[-1].type == EventType.WORKFLOW_TASK_COMPLETED
    assert after[-1].data == {"skip": 3}
    assert result.length == len(after)
    # One workflow task for the three signals, queued by the commit (the signals found
    # the task flag set and queued none); the task that ran is gone.
    shard_queue = store.keys.queue(store.keys.shard_of(workflow_id), "default")
    [(queued_id, fields)] = await store.redis.xrange(shard_queue)
    assert queued_id.decode() != task.id
    assert fields == {b"k": b"w", b"wf": workflow_id.encode()}
    assert await store.redis.hget(store.keys.meta(workflow_id), "wft") == b"1"


async def test_a_history_moved_by_another_commit_is_still_a_conflict(
    client: loom.Client,
) -> None:
    """Two workers racing on one task: the loser's commit finds the winner's commands
    (not external events) after what it read, and writes nothing."""
    first = await FirstTask.taken(client, signals=1)
    store, workflow_id = first.store, first.workflow_id
    assert [(await first.commit()).outcome for _ in range(2)] == ["ok", "conflict"]
    after = await store.read_history(workflow_id)
    assert [e.type for e in after].count(EventType.WORKFLOW_TASK_COMPLETED) == 1
    pending = await store.redis.xpending(
        store.keys.queue(store.keys.shard_of(workflow_id), "default"), WORKER_GROUP
    )
    assert pending["pending"] == 0


async def test_a_commit_that_read_from_another_point_is_a_conflict(
    client: loom.Client,
) -> None:
    """The entry the worker read last must be where the expected length says: a stale
    pair (a history read, then an older length) writes nothing."""
    first = await FirstTask.taken(client, signals=1)
    result = await first.commit(expected_length=len(first.history) - 1)
    assert result.outcome == "conflict"
    assert len(await first.store.read_history(first.workflow_id)) == len(first.history) + 1


async def test_a_skip_beyond_its_task_is_refused_naming_the_entry(client: loom.Client) -> None:
    first = await FirstTask.taken(client, signals=1)
    workflow_id = first.workflow_id
    await first.commit()
    after = await first.store.read_history(workflow_id)
    closing = after[-1]
    spoilt = [*after[:-1], replace(closing, data={"skip": 2})]
    definition = workflow_definition(Counter)
    fresh = WorkflowInstance(definition, workflow_id)  # type: ignore[abstract]
    with pytest.raises(NonDeterministicWorkflowError, match=f"{closing.id}.*skips 2 events"):
        fresh.apply(spoilt, now_ms())
