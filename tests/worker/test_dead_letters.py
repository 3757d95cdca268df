"""Dead letters: a task no worker can run is parked with its reason, and put back later."""

from __future__ import annotations

import anyio
import anyio.to_thread
import pytest
from click.testing import CliRunner

import loom_redis as loom
from loom_redis.cli import main
from loom_redis.testing import isolated_registry, running_worker

pytestmark = pytest.mark.anyio

LATE_ACTIVITY = "dead_letters_late_activity"


@loom.workflow(name="DeadLettersWorkflow")
class CallsAnActivityByName(loom.Workflow[dict, dict]):
    @loom.step()
    async def call(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("answer", await ctx.activity(LATE_ACTIVITY, ctx.input["n"]))


async def _wait_for_dead_letters(client: loom.Client, count: int) -> list[dict[str, object]]:
    with anyio.fail_after(10):
        while len(found := await client.dead_letters()) < count:
            await anyio.sleep(0.05)
    return found


async def test_unknown_activity_is_dead_lettered_then_redriven(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    # What the test registers (the fix below) is forgotten after it.
    with isolated_registry():
        async with running_worker(redis_url, namespace, unregistered_grace_seconds=0):
            handle = await CallsAnActivityByName.start({"n": 20})
            [dead] = await _wait_for_dead_letters(client, 1)
            assert dead["kind"] == "activity"
            assert dead["workflow_id"] == handle.workflow_id
            reason = str(dead["reason"])
            assert (
                f"no live worker of queue 'default' has registered activity {LATE_ACTIVITY!r}"
                in reason
            )
            assert await handle.status() == "RUNNING"

            # The CLI runs its own event loop, so it runs in a thread here.
            listed = await anyio.to_thread.run_sync(
                lambda: CliRunner().invoke(
                    main, ["dead", "list", "--url", redis_url, "--namespace", namespace]
                )
            )
            assert listed.exit_code == 0, listed.output
            assert str(dead["id"]) in listed.output and LATE_ACTIVITY in listed.output
            # The workflow, inspected, names the entry its task waits in.
            inspected = await anyio.to_thread.run_sync(
                lambda: CliRunner().invoke(
                    main,
                    ["inspect", handle.workflow_id, "--url", redis_url, "--namespace", namespace],
                )
            )
            assert inspected.exit_code == 0, inspected.output
            assert f"{'dead letter':<16} {dead['id']} " in inspected.output

            # The fix is deployed: the activity exists now, and the task goes back.
            @loom.activity(name=LATE_ACTIVITY)
            async def late_activity(n: int) -> int:
                return n + 1

            assert await client.redrive(str(dead["id"])) == "ok"
            assert await handle.result(timeout=10) == {"answer": 21}
    assert await client.dead_letters() == []
    events = [e.type for e in await handle.history()]
    assert events.count(loom.EventType.ACTIVITY_SCHEDULED) == 1
    assert events.count(loom.EventType.ACTIVITY_COMPLETED) == 1


async def test_redrive_of_an_unknown_id_says_so(client: loom.Client) -> None:
    with pytest.raises(LookupError, match="no dead-lettered task"):
        await client.redrive("1-1")
