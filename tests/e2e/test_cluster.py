"""loom-redis on a real Redis Cluster (three masters on loopback, from the same server
binary as the rest of the suite), unchanged but for the URL: workflows of every kind
spread over the masters, the CLI, the progress stream and the dashboard. `make
test-cluster` runs the whole suite on a cluster; this is the part `make test` runs."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
from click.testing import CliRunner

import loom_redis as loom
from loom_redis.cli import main
from loom_redis.store.connection import RedisError
from loom_redis.testing import LocalCluster, isolated_registry, running_worker
from tests.support import admin_client
from tests.web.conftest import serving
from tests.web.test_api import until
from tests.web.test_api_reads import LATE_ACTIVITY, CallsLateWorkflow
from tests.web_workflows import ApprovalWorkflow, RetryingWorkflow, SleeperWorkflow

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    binary = os.environ.get("LOOM_TEST_SERVER_BINARY") or None
    with LocalCluster(masters=3, binary=binary) as cluster:
        yield cluster.url


@pytest.fixture
async def on_cluster(cluster_url: str, namespace: str) -> AsyncIterator[loom.Client]:
    loom.configure(url=cluster_url, namespace=namespace)
    async with loom.Client.connect(cluster_url, namespace=namespace) as client:
        yield client
    loom.configure()


async def test_workflows_of_every_kind_run_on_a_cluster(
    on_cluster: loom.Client, cluster_url: str, namespace: str
) -> None:
    client = on_cluster
    result = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(
            main, ["init", "--url", cluster_url, "--namespace", namespace, "--queue", "default"]
        )
    )
    assert result.exit_code == 0, result.output
    with isolated_registry():
        async with running_worker(cluster_url, namespace, unregistered_grace_seconds=0):
            approvals = [
                await client.start(ApprovalWorkflow, {"item": str(n)}, owner="ann")
                for n in range(8)
            ]
            napper = await client.start(SleeperWorkflow, {"seconds": 0.2})
            retrying = await client.start(RetryingWorkflow, {"key": namespace})
            stuck = await client.start(CallsLateWorkflow, {})
            # The progress stream follows histories on every master.
            updates = client.stream_progress("ann")
            assert len(await anext(updates)) == 8
            for handle in approvals:
                await handle.signal("go")
            with anyio.fail_after(20):
                while await anext(updates):
                    pass
            await updates.aclose()
            [letter] = await until(client.dead_letters)

            @loom.activity(name=LATE_ACTIVITY)
            async def late(n: int) -> int:
                return n + 1

        async with running_worker(cluster_url, namespace):
            await client.redrive(str(letter["id"]))
            assert await stuck.result(timeout=20) == {"answer": 2}
            assert await napper.result(timeout=20) == {"woke": True}
            assert await retrying.result(timeout=20) == {"calls": 2}
            for number, handle in enumerate(approvals):
                shipped = (await handle.result(timeout=20))["shipped"]
                assert shipped == f"shipped {number}"
            assert (await client.stats())["COMPLETED"] == 11

    # The workflows' keys are spread over the three masters.
    admin = admin_client(cluster_url)
    try:
        await admin.initialize()  # type: ignore[union-attr]
        owners = {
            admin.get_node_from_key(client.store.keys.meta(h.workflow_id)).name  # type: ignore[union-attr]
            for h in approvals
        }
    finally:
        await admin.aclose()
    assert len(owners) > 1


async def test_loom_init_says_how_the_shards_fall_on_the_masters(cluster_url: str) -> None:
    """A namespace's shards go to the masters as their hash tags' slots fall: 16 shards
    of `spread-16` go 4 / 5 / 7 on three masters (the slot ranges of `--cluster
    create`), and init warns; 64 shards of `spread-64` go 25 / 18 / 21, and it does not."""

    def init(namespace: str, shards: int) -> str:
        arguments = ["init", "--url", cluster_url, "--namespace", namespace]
        result = CliRunner().invoke(main, [*arguments, "--shards", str(shards)])
        assert result.exit_code == 0, result.output
        return result.output

    uneven = await anyio.to_thread.run_sync(init, "spread-16", 16)
    spread = uneven.split("shards per master: ")[1].split(" (")[0]
    assert sorted(int(entry.split()[1]) for entry in spread.split(", ")) == [4, 5, 7]
    assert "the busiest serves 44% of them" in uneven
    assert "warning: the 16 shards fall unevenly on the 3 masters" in uneven
    even = await anyio.to_thread.run_sync(init, "spread-64", 64)
    assert "the busiest serves 39% of them" in even
    assert "warning" not in even


async def test_the_dashboard_reads_a_cluster(
    on_cluster: loom.Client, cluster_url: str, namespace: str
) -> None:
    async with running_worker(cluster_url, namespace):
        handles = [await on_cluster.start(SleeperWorkflow, {"seconds": 0.1}) for _ in range(5)]
        for handle in handles:
            await handle.result(timeout=20)
    with serving(cluster_url, namespace) as web:
        async with httpx.AsyncClient(base_url=web) as http:
            listed = (await http.get("/api/workflows", params={"limit": 3})).json()
            assert len(listed["workflows"]) == 3 and listed["next_cursor"]
            overview = (await http.get("/api/overview")).json()
            assert overview["counts"]["COMPLETED"] == 5
            assert sum(m["completed"] for m in overview["per_minute"][-2:]) == 5
            for path in ("/", "/workflows", f"/workflows/{handles[0].workflow_id}", "/queues"):
                assert (await http.get(path)).status_code == 200, path


async def test_loom_cluster_names_a_cluster_by_one_node_s_plain_url(
    on_cluster: loom.Client, cluster_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The flag sets LOOM_REDIS_CLUSTER for the process: undone after the test.
    monkeypatch.setenv("LOOM_REDIS_CLUSTER", "")
    await on_cluster.start(SleeperWorkflow, {"seconds": 60})
    first_node = cluster_url.removeprefix("redis+cluster://").split(",")[0]
    plain = f"redis://{first_node}/0"
    arguments = ["stats", "--json", "--url", plain, "--namespace", namespace]
    result = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(main, ["--cluster", *arguments])
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["PENDING"] == 1


async def test_workers_and_clients_ride_out_a_master_s_failover(namespace: str) -> None:
    """SIGKILL a master while workflows run: its replica is promoted (the nodes time a
    silent peer out after 2 s) and every workflow completes. Replication is
    asynchronous, so a write the dead master acknowledged may be gone: a workflow then
    replays from an earlier point (its activities run at least once), and still ends.
    (A start acknowledged and lost is gone whole: the test lets the replicas catch up
    with the starts before the kill.)"""
    binary = os.environ.get("LOOM_TEST_SERVER_BINARY") or None
    with LocalCluster(masters=3, replicas=1, binary=binary) as cluster:
        async with (
            loom.Client.connect(cluster.url, namespace=namespace) as client,
            running_worker(cluster.url, namespace, lease_seconds=10),
        ):
            handles = [
                await client.start(RetryingWorkflow, {"key": f"{namespace}-{n}"}) for n in range(12)
            ] + [await client.start(SleeperWorkflow, {"seconds": 3}) for _ in range(12)]
            # The starts on the replicas too: a start lost with the master is the loss
            # asynchronous replication allows (bench/cluster_failover.py counts those).
            await anyio.to_thread.run_sync(cluster.wait_for_replication)
            victim = await anyio.to_thread.run_sync(cluster.master_of_slot, 0)
            victim.stop(kill=True)
            results = [await handle.result(timeout=60) for handle in handles]
    assert results[12:] == [{"woke": True}] * 12
    assert all(result["calls"] >= 2 for result in results[:12])


async def test_replicated_durability_loses_no_acknowledged_start_in_a_failover(
    namespace: str,
) -> None:
    """The same failover under durability "replicated", the kill right after the
    starts: each start was acknowledged once a replica had it, so none is lost. The
    promoted replica has no replica of its own, so its shards wait (their transitions
    fail and are retried) until the killed node is back, as a replica of it."""
    binary = os.environ.get("LOOM_TEST_SERVER_BINARY") or None
    with LocalCluster(masters=3, replicas=1, binary=binary) as cluster:
        async with (
            loom.Client.connect(
                cluster.url, namespace=namespace, durability="replicated"
            ) as client,
            running_worker(cluster.url, namespace, durability="replicated", lease_seconds=20),
        ):
            handles = [
                await client.start(RetryingWorkflow, {"key": f"{namespace}-{n}"}) for n in range(12)
            ] + [await client.start(SleeperWorkflow, {"seconds": 2}) for _ in range(12)]
            victim = await anyio.to_thread.run_sync(cluster.master_of_slot, 0)
            victim.stop(kill=True)
            with anyio.fail_after(30):
                while await anyio.to_thread.run_sync(cluster.master_of_slot, 0) is victim:
                    await anyio.sleep(0.2)
            await anyio.to_thread.run_sync(victim.start)
            results = [await handle.result(timeout=60) for handle in handles]
    assert results[12:] == [{"woke": True}] * 12
    assert all(result["calls"] >= 2 for result in results[:12])


async def test_a_read_over_the_masters_raises_while_one_is_gone(namespace: str) -> None:
    """A pipeline over every shard answers, for the shards of a master that just died, a
    lost connection in place of a reply: the store raises it (the worker's loops wait
    for the cluster then), never reads it as an empty answer or trips over it."""
    binary = os.environ.get("LOOM_TEST_SERVER_BINARY") or None
    with LocalCluster(masters=3, binary=binary) as cluster:
        async with loom.Client.connect(cluster.url, namespace=namespace) as client:
            store = client.store
            await store.ensure_groups(["default"])
            streams = store.queue_keys(["default"])
            assert len(await store.task_consumers(streams)) == 0
            victim = await anyio.to_thread.run_sync(cluster.master_of_slot, 0)
            victim.stop(kill=True)
            for read in (
                lambda: store.task_consumers(streams),
                lambda: store.backlog(["default"]),
                lambda: store.ensure_groups(["default"]),
            ):
                with pytest.raises(RedisError):
                    await read()
