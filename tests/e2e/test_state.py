"""Workflow state: one event per set/update/batch, dict-like reads, result() is the state."""

from __future__ import annotations

from typing import Any

import pytest

import loom_redis as loom
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio


@loom.activity(name="state_echo")
async def echo(value: Any) -> Any:
    return value


@loom.workflow(name="state_SetWorkflow")
class SetWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def write(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("order_id", ctx.input["order_id"])
        await ctx.state.set("status", "processing")
        await ctx.state.set("items", ["a", "b"])

    @loom.step()
    async def read(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        # Reads after an activity: the state was rebuilt by replay of the first step.
        await ctx.activity(echo, "x")
        await ctx.state.set(
            "reads",
            {
                "get": ctx.state.get("order_id"),
                "get_default": ctx.state.get("missing", "fallback"),
                "item": ctx.state["status"],
                "attr": ctx.state.order_id,
                "attr_status": ctx.state.status,
                "contains": "items" in ctx.state,
                "len": len(ctx.state),
                "keys": sorted(ctx.state.keys()),
            },
        )
        snapshot = ctx.state.snapshot()
        snapshot["items"].append("changed only in the copy")
        await ctx.state.set("snapshot_isolated", ctx.state["items"] == ["a", "b"])
        try:
            ctx.state.no_such_key  # noqa: B018
        except AttributeError as exc:
            await ctx.state.set("attr_error", str(exc))


@loom.workflow(name="state_UpdateWorkflow")
class UpdateWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def first(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("count", 1)
        await ctx.state.update(lambda s: {**s, "count": s["count"] + 1, "shipped": True})
        await ctx.state.update(lambda s: {"count": s["count"] * 10})

    @loom.step()
    async def second(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        value = await ctx.activity(echo, ctx.state["count"])
        await ctx.state.update(lambda s: {**s, "echoed": value})


@loom.workflow(name="state_BatchWorkflow")
class BatchWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def batched(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("before", 0)
        async with ctx.state.batch():
            await ctx.state.set("order_id", "ORD-1")
            await ctx.state.set("status", "processing")
            await ctx.state.set("items", ["item1", "item2"])
            await ctx.state.set("total", 99.5)
            # Reads inside the block see the pending values.
            await ctx.state.set("seen_inside", ctx.state["order_id"])
        async with ctx.state.batch():
            await ctx.state.set("second_batch", True)
            await ctx.state.update(lambda s: {**s, "updated_in_batch": True})
        # A batch that changes nothing emits nothing.
        async with ctx.state.batch():
            pass
        await ctx.activity(echo, "after")
        await ctx.state.set("after", 1)


def types(history: list[loom.Event]) -> list[str]:
    return [str(e.type) for e in history]


def of_type(history: list[loom.Event], event_type: str) -> list[loom.Event]:
    return [e for e in history if e.type == event_type]


async def test_each_set_is_one_state_set_event_and_reads_work(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await SetWorkflow.start({"order_id": "ORD-7"})
        result = await handle.result(timeout=10)
    assert result["order_id"] == "ORD-7"
    assert result["reads"] == {
        "get": "ORD-7",
        "get_default": "fallback",
        "item": "processing",
        "attr": "ORD-7",
        "attr_status": "processing",
        "contains": True,
        "len": 3,
        "keys": ["items", "order_id", "status"],
    }
    assert result["snapshot_isolated"] is True
    assert "no_such_key" in result["attr_error"]

    history = await handle.history()
    sets = of_type(history, "STATE_SET")
    assert [e.data["key"] for e in sets] == [
        "order_id",
        "status",
        "items",
        "reads",
        "snapshot_isolated",
        "attr_error",
    ]
    assert [e.data["value"] for e in sets[:3]] == ["ORD-7", "processing", ["a", "b"]]
    assert of_type(history, "STATE_UPDATE") == []
    # Sequence numbers are unique and increase in the order the code ran.
    seqs = [e.seq for e in sets]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # The final state is what result() returns, and what history ends with.
    completed = of_type(history, "WORKFLOW_COMPLETED")
    assert len(completed) == 1
    assert completed[0].data["result"] == result
    assert await handle.status() == "COMPLETED"


async def test_each_update_is_one_state_update_event(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await UpdateWorkflow.start({})
        result = await handle.result(timeout=10)
    # The second update replaced the whole state (no "shipped" left), then "echoed" added.
    assert result == {"count": 20, "echoed": 20}

    history = await handle.history()
    assert len(of_type(history, "STATE_SET")) == 1
    updates = of_type(history, "STATE_UPDATE")
    assert [e.data["state"] for e in updates] == [
        {"count": 2, "shipped": True},
        {"count": 20},
        {"count": 20, "echoed": 20},
    ]
    assert of_type(history, "WORKFLOW_COMPLETED")[0].data["result"] == result


async def test_a_batch_block_is_exactly_one_state_update_event(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await BatchWorkflow.start({})
        result = await handle.result(timeout=10)
    assert result == {
        "before": 0,
        "order_id": "ORD-1",
        "status": "processing",
        "items": ["item1", "item2"],
        "total": 99.5,
        "seen_inside": "ORD-1",
        "second_batch": True,
        "updated_in_batch": True,
        "after": 1,
    }

    history = await handle.history()
    sets = of_type(history, "STATE_SET")
    # Only the set()s outside any batch are STATE_SET events.
    assert [e.data["key"] for e in sets] == ["before", "after"]
    updates = of_type(history, "STATE_UPDATE")
    # Two non-empty batches: two STATE_UPDATE events; the empty batch emitted none.
    assert len(updates) == 2
    assert updates[0].data["state"] == {
        "before": 0,
        "order_id": "ORD-1",
        "status": "processing",
        "items": ["item1", "item2"],
        "total": 99.5,
        "seen_inside": "ORD-1",
    }
    assert updates[1].data["state"]["second_batch"] is True
    assert updates[1].data["state"]["updated_in_batch"] is True
    # The batch's event sits between the first set and the activity.
    order = [
        str(e.type)
        for e in history
        if e.type in ("STATE_SET", "STATE_UPDATE", "ACTIVITY_SCHEDULED")
    ]
    assert order == [
        "STATE_SET",
        "STATE_UPDATE",
        "STATE_UPDATE",
        "ACTIVITY_SCHEDULED",
        "STATE_SET",
    ]
    assert of_type(history, "WORKFLOW_COMPLETED")[0].data["result"] == result
    assert types(history)[0] == "WORKFLOW_STARTED"
