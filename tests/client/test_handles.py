"""Workflow handles (status, result, errors), id reuse, and progress reporting."""

from __future__ import annotations

import anyio
import pytest

import loom_redis as loom
from loom_redis.testing import running_worker

pytestmark = pytest.mark.anyio


@loom.activity(name="handles_work")
async def work(value: int) -> int:
    return value + 1


@loom.workflow(name="handles_GateWorkflow")
class GateWorkflow(loom.Workflow[dict, dict]):
    """Waits for a signal, then completes with what it got."""

    @loom.step()
    async def gate(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("opened_with", await ctx.wait_for_signal("open"))


@loom.workflow(name="handles_BrokenWorkflow")
class BrokenWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def compute(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("value", await ctx.activity(work, 1))

    @loom.step()
    async def explode(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        raise ValueError(f"bad order {ctx.input['order_id']}")


@loom.workflow(name="handles_QuizWorkflow", agent="Robin")
class QuizWorkflow(loom.Workflow[dict, dict]):
    @loom.step(name="generate_quiz", description="generating your quiz")
    async def generate(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.wait_for_signal("generated")

    @loom.step(name="grade_quiz", description="grading your answers")
    async def grade(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.wait_for_signal("graded")


@loom.workflow(name="handles_NoAgentWorkflow")
class NoAgentWorkflow(loom.Workflow[dict, dict]):
    @loom.step(description="counting")
    async def count(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("n", await ctx.activity(work, ctx.input["n"]))


def of_type(history: list[loom.Event], event_type: str) -> list[loom.Event]:
    return [e for e in history if e.type == event_type]


async def wait_for_step(owner: str, workflow_id: str, step: int) -> dict:
    with anyio.fail_after(5):
        while True:
            progress = await loom.get_progress(owner)
            entry = [w for w in progress["workflows"] if w["workflow_id"] == workflow_id]
            if entry and entry[0]["current_step"] == step:
                return progress
            await anyio.sleep(0.02)


async def test_unknown_workflow_id(client: loom.Client) -> None:
    for handle in (client.get_handle("handles-missing"), loom.get_handle("handles-missing")):
        assert handle.id == handle.workflow_id == "handles-missing"
        with pytest.raises(loom.WorkflowNotFoundError, match="handles-missing"):
            await handle.status()
        with pytest.raises(loom.WorkflowNotFoundError):
            await handle.result(timeout=0.1)
        with pytest.raises(loom.WorkflowNotFoundError):
            await handle.describe()
        with pytest.raises(loom.WorkflowNotFoundError):
            await handle.history()


async def test_running_workflow_result_times_out(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await GateWorkflow.start({}, workflow_id="handles-gate")
        assert handle.id == handle.workflow_id == "handles-gate"
        with pytest.raises(loom.WorkflowStillRunningError) as caught:
            await handle.result(timeout=0.3)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.workflow_id == "handles-gate"
        assert caught.value.status in ("PENDING", "RUNNING")
        assert await handle.status() in ("PENDING", "RUNNING")
        # The same workflow through the other two ways to get a handle.
        await loom.get_handle("handles-gate").signal("open", "by module handle")
        result = await client.get_handle("handles-gate").result(timeout=10)
    assert result == {"opened_with": "by module handle"}
    assert await handle.status() == "COMPLETED"
    assert await handle.result() == result
    assert await loom.get_handle("handles-gate").result() == result
    info = await handle.describe()
    assert info["workflow_name"] == "handles_GateWorkflow"
    assert info["result"] == result
    assert info["closed_ms"] is not None


async def test_failed_workflow_raises_execution_error(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await BrokenWorkflow.start({"order_id": "Z9"})
        with pytest.raises(loom.WorkflowExecutionError, match="bad order Z9") as caught:
            await handle.result(timeout=10)
    assert caught.value.workflow_id == handle.workflow_id
    assert await handle.status() == "FAILED"
    # Asking again gives the same error, from the stored record.
    with pytest.raises(loom.WorkflowExecutionError, match="bad order Z9"):
        await client.get_handle(handle.id).result()
    history = await handle.history()
    failed = of_type(history, "WORKFLOW_FAILED")
    assert len(failed) == 1
    assert failed[0].data["type"] == "ValueError"
    assert failed[0].data["message"] == "bad order Z9"
    assert failed[0].data["step"] == "explode"
    assert "ValueError: bad order Z9" in failed[0].data["traceback"]
    info = await handle.describe()
    assert info["error"]["message"] == "bad order Z9"


async def test_same_workflow_id_twice(client: loom.Client, redis_url: str, namespace: str) -> None:
    first = await GateWorkflow.start({"try": 1}, workflow_id="handles-once")
    with pytest.raises(loom.WorkflowAlreadyStartedError, match="handles-once") as caught:
        await GateWorkflow.start({"try": 2}, workflow_id="handles-once")
    assert caught.value.status == "PENDING"
    # Through the client too, and even with another workflow class.
    with pytest.raises(loom.WorkflowAlreadyStartedError):
        await client.start(BrokenWorkflow, {}, workflow_id="handles-once")
    again = await GateWorkflow.start(
        {"try": 3}, workflow_id="handles-once", id_reuse="return_existing"
    )
    assert again.workflow_id == first.workflow_id == "handles-once"

    history = await again.history()
    started = of_type(history, "WORKFLOW_STARTED")
    assert len(started) == 1
    assert len(history) == 1
    assert started[0].data["input"] == {"try": 1}
    assert (await again.describe())["input"] == {"try": 1}

    async with running_worker(redis_url, namespace):
        await again.signal("open", 1)
        assert await first.result(timeout=10) == {"opened_with": 1}
    # A finished workflow's id stays taken.
    with pytest.raises(loom.WorkflowAlreadyStartedError, match="COMPLETED"):
        await GateWorkflow.start({}, workflow_id="handles-once")
    existing = await GateWorkflow.start({}, workflow_id="handles-once", id_reuse="return_existing")
    assert await existing.result() == {"opened_with": 1}
    assert len(of_type(await existing.history(), "WORKFLOW_STARTED")) == 1


async def test_get_progress_reports_active_workflows_of_the_owner(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        quiz = await QuizWorkflow.start({}, workflow_id="handles-quiz", owner="user_abc")
        plain = await NoAgentWorkflow.start({"n": 1}, workflow_id="handles-plain", owner="user_abc")
        other = await QuizWorkflow.start({}, workflow_id="handles-other", owner="someone_else")
        assert await plain.result(timeout=10) == {"n": 2}
        progress = await wait_for_step("user_abc", "handles-quiz", 1)
        # The completed workflow of the owner is not listed; the other owner's neither.
        assert progress == {
            "owner": "user_abc",
            "workflows": [
                {
                    "workflow_id": "handles-quiz",
                    "workflow_name": "handles_QuizWorkflow",
                    "agent": "Robin",
                    "message": "Robin is generating your quiz",
                    "current_step": 1,
                    "total_steps": 2,
                    "status": "RUNNING",
                }
            ],
        }
        await quiz.signal("generated")
        progress = await wait_for_step("user_abc", "handles-quiz", 2)
        assert progress["workflows"][0]["message"] == "Robin is grading your answers"
        assert progress["workflows"][0]["status"] == "RUNNING"
        assert (await client.get_progress("user_abc")) == progress
        assert [
            w["workflow_id"] for w in (await loom.get_progress("someone_else"))["workflows"]
        ] == ["handles-other"]
        await quiz.signal("graded")
        await quiz.result(timeout=10)
        assert await loom.get_progress("user_abc") == {"owner": "user_abc", "workflows": []}
        await other.cancel()
        with pytest.raises(loom.WorkflowCancelledError):
            await other.result(timeout=10)
        assert (await loom.get_progress("someone_else"))["workflows"] == []
    assert await loom.get_progress("nobody") == {"owner": "nobody", "workflows": []}


async def test_stream_progress_yields_when_the_step_changes(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    async with running_worker(redis_url, namespace):
        quiz = await QuizWorkflow.start({}, workflow_id="handles-stream", owner="streamer")
        await wait_for_step("streamer", "handles-stream", 1)
        updates = loom.stream_progress("streamer")
        try:
            with anyio.fail_after(5):
                first = await anext(updates)
            assert len(first) == 1
            assert first[0]["workflow_id"] == "handles-stream"
            assert first[0]["current_step"] == 1
            assert first[0]["message"] == "Robin is generating your quiz"

            await quiz.signal("generated")
            with anyio.fail_after(5):
                second = await anext(updates)
            assert second[0]["current_step"] == 2
            assert second[0]["message"] == "Robin is grading your answers"
            assert set(second[0]) == {
                "workflow_id",
                "workflow_name",
                "agent",
                "message",
                "current_step",
                "total_steps",
                "status",
            }

            await quiz.signal("graded")
            with anyio.fail_after(5):
                third = await anext(updates)
            # Once it completes, it is no longer active.
            assert third == []
        finally:
            await updates.aclose()


async def test_a_workflow_no_worker_ran_yet_counts_its_first_event(client: loom.Client) -> None:
    handle = await client.start(GateWorkflow, {})
    info = await handle.describe()
    assert (info["status"], info["history_length"]) == ("PENDING", 1)
    assert info["history_length"] == len(await handle.history())
