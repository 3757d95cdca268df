"""Every command the store sends on its direct lane names keys of one hash slot: each
Lua transition runs on one shard (DESIGN.md), so that it can run on Redis Cluster, where
a script's keys must all live on one node. Checked on the commands a broad run of real
workflows sends: activities (one retried), signals, timers, cancels, failures, a dead
letter put back, and the deletion of closed workflows."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import loom_redis as loom
from loom_redis.store.cluster import command_slot
from loom_redis.store.connection import DirectLane
from loom_redis.store.wire import SCRIPT_NAMES
from loom_redis.testing import isolated_registry, running_worker
from tests.web.test_api import until
from tests.web.test_api_reads import LATE_ACTIVITY, CallsLateWorkflow
from tests.web_workflows import (
    ApprovalWorkflow,
    FailingWorkflow,
    RetryingWorkflow,
    SleeperWorkflow,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """Every command sent on a direct lane while the test runs."""
    commands: list[tuple[Any, ...]] = []
    chain = DirectLane.execute_chain

    async def recording(
        self: DirectLane, *sending: Sequence[Any], confirmed: bool = False
    ) -> list[Any]:
        commands.extend(tuple(command) for command in sending)
        return await chain(self, *sending, confirmed=confirmed)

    monkeypatch.setattr(DirectLane, "execute_chain", recording)
    yield commands


async def test_every_command_on_the_lane_names_keys_of_one_slot(
    client: loom.Client, redis_url: str, namespace: str, sent: list[tuple[Any, ...]]
) -> None:
    with isolated_registry():
        # Activities queued (not run at once): a failed attempt's retry is a script of
        # its own then.
        options = {"eager_seconds": 0.0}
        async with running_worker(redis_url, namespace, unregistered_grace_seconds=0, **options):
            approval = await client.start(ApprovalWorkflow, {"item": "a"}, owner="o")
            napper = await client.start(SleeperWorkflow, {"seconds": 0.2})
            sleeper = await client.start(SleeperWorkflow, {"seconds": 3600})
            failing = await client.start(FailingWorkflow, {})
            stuck = await client.start(CallsLateWorkflow, {})
            retrying = await client.start(RetryingWorkflow, {"key": namespace})
            await approval.signal("go")
            await client.cancel(sleeper.workflow_id, "enough")
            [letter] = await until(client.dead_letters)

            @loom.activity(name=LATE_ACTIVITY)
            async def late(n: int) -> int:
                return n

        async with running_worker(redis_url, namespace, **options):
            await client.redrive(str(letter["id"]))
            for handle in (approval, stuck, retrying):
                await handle.result(timeout=15)
            # A client that did not start it waits through a script of its own.
            async with loom.Client.connect(redis_url, namespace=namespace) as other:
                await other.get_handle(napper.workflow_id).result(timeout=15)
            for handle in (sleeper, failing):
                with pytest.raises(loom.LoomError):
                    await handle.result(timeout=15)
    assert len(await client.prune(0)) == 6

    scripts = {script.sha: name for name, script in client.store._scripts.items()}
    seen: set[str] = set()
    for command in sent:
        command_slot(command)  # raises for keys of several slots
        if str(command[0]).upper() == "EVALSHA":
            seen.add(scripts[str(command[1])])
    # What a takeover, a lease renewal and a re-queued unregistered task run is not here.
    assert seen >= set(SCRIPT_NAMES) - {"take_over", "renew_leases", "defer_task", "dead_timer"}
