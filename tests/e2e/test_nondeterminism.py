"""A code change that breaks an open workflow's history is detected on replay: it fails
the workflow with NonDeterministicWorkflowError, or suspends it until fixed code returns."""

from __future__ import annotations

import anyio
import pytest

import loom_redis as loom
from loom_redis import definitions
from loom_redis.testing import isolated_registry, running_worker

pytestmark = pytest.mark.anyio

NAME = "nondet_OrderWorkflow"


@loom.activity(name="nondet_reserve")
async def reserve(order_id: str) -> str:
    return f"reserved {order_id}"


@loom.activity(name="nondet_charge")
async def charge(order_id: str) -> str:
    return f"charged {order_id}"


@loom.workflow(name=NAME)
class OrderWorkflow(loom.Workflow[dict, dict]):
    """Version 1: reserve, then wait for approval signals."""

    @loom.step(name="prepare")
    async def prepare(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("reserved", await ctx.activity(reserve, ctx.input["order_id"]))
        approvals = [await ctx.wait_for_signal("approve")]
        for _ in range(ctx.input.get("more_approvals", 0)):
            approvals.append(await ctx.wait_for_signal("approve"))
        await ctx.state.set("approvals", approvals)

    @loom.step(name="finish")
    async def finish(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("done", True)


ORIGINAL = OrderWorkflow.__loom_workflow__  # type: ignore[attr-defined]


def register_changed_code(
    on_nondeterminism: definitions.NondeterminismPolicy | None = None,
) -> None:
    """Register NAME with code that calls another activity before the wait (inside an
    isolated_registry(without=[NAME]) block, where NAME is free)."""

    @loom.workflow(name=NAME, on_nondeterminism=on_nondeterminism)
    class ChangedOrderWorkflow(loom.Workflow[dict, dict]):
        @loom.step(name="prepare")
        async def prepare(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
            await ctx.state.set("reserved", await ctx.activity(charge, ctx.input["order_id"]))
            await ctx.state.set("approvals", [await ctx.wait_for_signal("approve")])

        @loom.step(name="finish")
        async def finish(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
            await ctx.state.set("done", True)

    assert definitions.registered_workflow(NAME) is not ORIGINAL


def of_type(history: list[loom.Event], event_type: str) -> list[loom.Event]:
    return [e for e in history if e.type == event_type]


async def wait_until_waiting(handle: loom.WorkflowHandle) -> list[loom.Event]:
    """History once the workflow has recorded its reservation and waits for the signal."""
    with anyio.fail_after(5):
        while True:
            history = await handle.history()
            if any(e.data.get("key") == "reserved" for e in of_type(history, "STATE_SET")):
                assert str(history[-1].type) == "WORKFLOW_TASK_COMPLETED"
                return history
            await anyio.sleep(0.02)


async def wait_for_status(handle: loom.WorkflowHandle, status: str) -> None:
    with anyio.fail_after(5):
        while await handle.status() != status:
            await anyio.sleep(0.02)


async def test_changed_code_fails_with_nondeterministic_error(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await OrderWorkflow.start({"order_id": "A1"}, workflow_id="nondet-fail")
        history = await wait_until_waiting(handle)
    scheduled = of_type(history, "ACTIVITY_SCHEDULED")
    assert len(scheduled) == 1
    seq = scheduled[0].seq

    with isolated_registry(without=[NAME]):
        register_changed_code()
        async with running_worker(redis_url, namespace):
            await handle.signal("approve", "boss")
            with pytest.raises(loom.NonDeterministicWorkflowError) as caught:
                await handle.result(timeout=10)
    assert definitions.registered_workflow(NAME) is ORIGINAL
    message = str(caught.value)
    assert "'nondet-fail'" in message
    assert "step 'prepare'" in message
    assert f"seq {seq}" in message
    assert "history has ACTIVITY_SCHEDULED(nondet_reserve)" in message
    assert "the code did ACTIVITY_SCHEDULED(nondet_charge)" in message
    assert await handle.status() == "FAILED"

    history = await handle.history()
    failed = of_type(history, "WORKFLOW_FAILED")
    assert len(failed) == 1
    assert failed[0].data["type"] == "NonDeterministicWorkflowError"
    # Nothing the changed code did was appended: one activity, the reservation only.
    assert len(of_type(history, "ACTIVITY_SCHEDULED")) == 1
    assert [e.data["key"] for e in of_type(history, "STATE_SET")] == ["reserved"]
    assert of_type(history, "ACTIVITY_COMPLETED")[0].data["result"] == "reserved A1"


@pytest.mark.parametrize("where", ["worker", "workflow"])
async def test_suspended_workflow_resumes_when_the_code_is_fixed(
    client: loom.Client, redis_url: str, namespace: str, where: str
) -> None:
    worker_options = {"suspend_retry_seconds": 0.1}
    if where == "worker":
        worker_options["on_nondeterminism"] = "suspend"
    async with running_worker(redis_url, namespace, **worker_options):
        handle = await OrderWorkflow.start(
            {"order_id": "B2", "more_approvals": 1}, workflow_id="nondet-suspend"
        )
        await wait_until_waiting(handle)

        with isolated_registry(without=[NAME]):
            register_changed_code("suspend" if where == "workflow" else None)
            await handle.signal("approve", "first")
            await wait_for_status(handle, "SUSPENDED")
            info = await handle.describe()
            assert info["error"]["type"] == "NonDeterministicWorkflowError"
            assert "history has ACTIVITY_SCHEDULED(nondet_reserve)" in info["error"]["message"]
            assert "the code did ACTIVITY_SCHEDULED(nondet_charge)" in info["error"]["message"]
            suspended_history = await handle.history()
            # A signal sent while suspended is kept.
            await handle.signal("approve", "second")
            # Retries with the broken code keep it suspended and append nothing of theirs.
            await anyio.sleep(0.3)
            assert await handle.status() == "SUSPENDED"
            history = await handle.history()
            assert len(history) == len(suspended_history) + 1
            assert str(history[-1].type) == "SIGNAL_RECEIVED"

        # The fixed code is deployed: the block gave NAME its original definition back.
        result = await handle.result(timeout=10)

    assert result == {"reserved": "reserved B2", "approvals": ["first", "second"], "done": True}
    assert await handle.status() == "COMPLETED"
    assert (await handle.describe())["error"] is None
    history = await handle.history()
    assert of_type(history, "WORKFLOW_FAILED") == []
    assert len(of_type(history, "ACTIVITY_SCHEDULED")) == 1
    assert [e.data["payload"] for e in of_type(history, "SIGNAL_RECEIVED")] == [
        "first",
        "second",
    ]
    assert [e.data["key"] for e in of_type(history, "STATE_SET")] == [
        "reserved",
        "approvals",
        "done",
    ]
