"""Workers of one queue that register different workflows and activities (a rolling
deploy, workers split by team): a task a worker does not register goes back to the queue
for another worker, and reaches the dead-letter stream only when no live worker of the
queue has registered its name for the grace period."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from click.testing import CliRunner

import loom_redis as loom
from loom_redis import events as loom_events
from loom_redis.cli import main
from loom_redis.testing import free_port, running_worker
from tests.partial_workflows import REMOTE_ACTIVITY, SplitWorkflow
from tests.support import file_text, wait_until_ready, worker_process

pytestmark = pytest.mark.anyio

PARTIAL = "tests.partial_workflows"


@loom.activity(name=REMOTE_ACTIVITY)
async def remote(n: int) -> int:
    return n * 10


@loom.workflow(name="partial_Greeting")
class GreetingWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="greet")
    async def greet(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("greeting", f"Hello, {ctx.input['name']}!")


async def wait_for_output(output: Path, *texts: str) -> str:
    with anyio.move_on_after(20):
        while True:
            said = await file_text(output)
            if all(text in said for text in texts):
                return said
            await anyio.sleep(0.05)
    pytest.fail(f"the worker never said {texts}:\n{await file_text(output)}")


async def scrape(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text: str = reply.read().decode()
            return text

    return await anyio.to_thread.run_sync(get)


async def test_a_task_this_worker_does_not_register_goes_to_a_worker_that_does(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    output = tmp_path / "partial.out"
    port = free_port()
    async with worker_process(
        redis_url,
        namespace,
        tmp_path / "side.log",
        output,
        "--metrics-port",
        str(port),
        module=PARTIAL,
    ) as partial:
        await wait_until_ready(client, partial, output)
        # Only the partial worker runs: it must hand back what it does not register.
        splits = [await SplitWorkflow.start({"n": n}) for n in range(4)]
        greetings = [await GreetingWorkflow.start({"name": f"P{n}"}) for n in range(4)]
        said = await wait_for_output(
            output,
            "does not register workflow 'partial_Greeting'",
            f"does not register activity {REMOTE_ACTIVITY!r}",
            "handed back to queue 'default' for another worker",
            "no live worker of the queue registers it: dead-lettered in",
        )
        assert "(it registers partial_Split)" in said
        assert "(it registers no activity)" in said

        # Workers publish what they register.
        [beat] = await client.workers()
        assert beat["workflows"] == ["partial_Split"]
        assert beat["activities"] == []
        metrics = await scrape(port)
        assert (
            'loom_unregistered_tasks_total{kind="workflow",name="partial_Greeting",'
            'outcome="handed_back"}'
        ) in metrics

        # The complete worker arrives, as a rolling deploy's new pod would.
        async with running_worker(redis_url, namespace):
            for n, handle in enumerate(splits):
                assert await handle.result(timeout=20) == {"answer": n * 10}
            for n, handle in enumerate(greetings):
                assert await handle.result(timeout=20) == {"greeting": f"Hello, P{n}!"}
            listed = await anyio.to_thread.run_sync(
                lambda: CliRunner().invoke(
                    main, ["workers", "--url", redis_url, "--namespace", namespace]
                )
            )
    assert await client.dead_letters() == []
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert "  workflows: partial_Split; activities: none" in lines
    assert any(
        "partial_Greeting" in line and REMOTE_ACTIVITY in line.partition("activities:")[2]
        for line in lines
    )
    history = await splits[0].history()
    assert [e.type for e in history].count("ACTIVITY_SCHEDULED") == 1


async def test_with_no_live_worker_registering_the_name_the_task_is_dead_lettered_after_grace(
    client: loom.Client, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    output = tmp_path / "partial.out"
    async with worker_process(
        redis_url,
        namespace,
        tmp_path / "side.log",
        output,
        "--unregistered-grace",
        "1",
        module=PARTIAL,
    ) as partial:
        await wait_until_ready(client, partial, output)
        handle = await GreetingWorkflow.start({"name": "Late"})
        with anyio.fail_after(20):
            while not (dead := await client.dead_letters()):
                await anyio.sleep(0.05)
    [entry] = dead
    reason = str(entry["reason"])
    assert "no live worker of queue 'default' has registered workflow 'partial_Greeting'" in reason
    assert f"(workflow {handle.workflow_id!r})" in reason
    assert "this worker registers partial_Split" in reason
    assert "loom dead retry" in reason
    assert await handle.status() == "PENDING"

    # Deployed at last: the task goes back and runs.
    async with running_worker(redis_url, namespace):
        assert await client.redrive(str(entry["id"])) == "ok"
        assert await handle.result(timeout=10) == {"greeting": "Hello, Late!"}


async def test_an_activity_task_handed_back_is_not_counted_as_a_lease_taken_over(
    client: loom.Client,
) -> None:
    """The sweep counts an activity lease that fell due as a take-over
    (loom_tasks_reclaimed_total{how="lease_expired"}); a task handed back by a worker
    that does not register it is queued the same way, but nobody died."""
    store = client.store
    shard = store.keys.shard_of("handed-back")
    stream = store.keys.activity_queue(shard, "default")
    await store.ensure_groups(["default"])
    fields = store.activity_task_fields("handed-back", 2, 1, b"\x80")
    await store.redis.xadd(stream, dict(zip(fields[::2], fields[1::2], strict=True)))
    [task] = await store.read_tasks({stream: (shard, "default")}, "w1", 1, 100)
    assert await store.defer_task(task, "default", 0, unregistered_since=0) == "ok"
    held = store.held_activity_task("lease-held", "default", command_of_seq(3))
    await store.redis.zadd(store.keys.timers(held.shard), {held.lease: 0})

    due, _ = await store.due_timers()
    leases = {member.workflow_id: member.lease for member in due}
    assert leases == {"handed-back": False, "lease-held": True}


def command_of_seq(seq: int) -> loom_events.Command:
    return loom_events.Command(
        loom_events.EventType.ACTIVITY_SCHEDULED, seq, {"name": REMOTE_ACTIVITY, "args": []}
    )
