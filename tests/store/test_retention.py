"""Retention: a closed workflow is deleted (history, meta, close notice, request ids and
every index entry) once its retention has passed, counted from its close; an open one
never is, and an expiry read before its id was reused deletes nothing. The request ids
that keep a signal at-most-once are bounded while the workflow is open."""

from __future__ import annotations

from typing import Any

import pytest

import loom_redis as loom
from loom_redis.events import EventType
from loom_redis.store import Store
from loom_redis.store.connection import now_ms
from loom_redis.store.wire import ONCE_KEEP, ONCE_KEEP_MS, DeleteWhen
from loom_redis.testing import running_worker
from loom_redis.worker import _housekeeping
from tests.support import namespace_keys, wait_until

pytestmark = pytest.mark.anyio


@loom.workflow(name="RetentionJob")
class Job(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        if ctx.input.get("wait"):
            await ctx.state.set("signal", await ctx.wait_for_signal("go"))
        await ctx.state.set("done", True)


async def sweep(store: Store) -> int:
    """One sweep round over every shard, as a worker's housekeeping runs it."""
    return sum([await store.sweep_expired(shard) for shard in range(store.keys.shards)])


async def traces(store: Store, namespace: str, workflow_id: str) -> list[str]:
    """Every key of the namespace named after the workflow, and every sorted set (index)
    that holds it."""
    found = []
    for key in await namespace_keys(store.redis, namespace):
        if workflow_id.encode() in key or (
            await store.redis.type(key) == b"zset" and await store.redis.zscore(key, workflow_id)
        ):
            found.append(key.decode())
    return found


async def finished(workflow_id: str, **start: Any) -> loom.WorkflowHandle[dict]:
    handle = await Job.start({}, workflow_id=workflow_id, **start)
    assert await handle.result(timeout=10) == {"done": True}
    return handle


async def test_a_closed_workflow_is_deleted_after_its_retention(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    store = client.store
    await store.set_retention(0)
    async with running_worker(redis_url, namespace):
        # Everything a workflow leaves: a signal's request id, an owner, a close notice.
        gone = await Job.start({"wait": True}, workflow_id="gone", owner="olga")
        await gone.signal("go", "now")
        assert await gone.result(timeout=10) == {"signal": "now", "done": True}
        kept = await finished("kept", retention=3600)
        assert len(await traces(store, namespace, "gone")) > 4

        assert await sweep(store) == 1
    assert await traces(store, namespace, "gone") == []
    with pytest.raises(loom.WorkflowNotFoundError):
        await client.describe("gone")
    with pytest.raises(loom.WorkflowNotFoundError):
        await client.history("gone")
    assert [w["workflow_id"] for w in await client.list_workflows()] == ["kept"]
    assert await client.stats() == {"COMPLETED": 1} | {
        s: 0 for s in ("PENDING", "RUNNING", "SUSPENDED", "FAILED", "CANCELLED")
    }
    # The per-start retention (an hour) outlives the namespace's (none).
    assert (await kept.describe())["status"] == "COMPLETED"
    assert await sweep(store) == 0


async def test_a_start_shorter_retention_outruns_the_namespace_default(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    store = client.store
    async with running_worker(redis_url, namespace):
        await finished("short", retention=0)
        await finished("default")
    assert await sweep(store) == 1
    assert await traces(store, namespace, "short") == []
    # Kept for the namespace's 7 days, counted from its close.
    closed = (await client.describe("default"))["closed_ms"]
    expiry = await store.redis.zscore(
        store.keys.expiry_index(store.keys.shard_of("default")), "default"
    )
    assert expiry is not None and expiry - closed == pytest.approx(7 * 86400 * 1000, abs=1000)


async def test_an_open_workflow_is_never_deleted(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    store = client.store
    await store.set_retention(0)
    async with running_worker(redis_url, namespace):
        handle = await Job.start({"wait": True}, workflow_id="open")
        await wait_until(lambda: client.describe("open"), timeout=10)
        # As old as can be: an expiry entry of an earlier workflow of this id, due at 0.
        expiry = store.keys.expiry_index(store.keys.shard_of("open"))
        await store.redis.zadd(expiry, {"open": 0})
        before = await traces(store, namespace, "open")
        assert await sweep(store) == 0
        assert await store.delete_closed("open", DeleteWhen.CLOSED_BEFORE, now_ms()) == (
            "open",
            (await handle.describe())["status"],
        )
        # Only the stale expiry entry is gone.
        assert await traces(store, namespace, "open") == [k for k in before if k != expiry]
        await handle.signal("go", 1)
        assert await handle.result(timeout=10) == {"signal": 1, "done": True}


async def test_an_expiry_read_before_the_id_was_reused_deletes_nothing(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    store = client.store
    async with running_worker(redis_url, namespace):
        await finished("reused", retention=0)
        due_at = now_ms()
        # Another worker's sweep deletes it, and a new start takes the id again.
        assert (await store.delete_closed("reused", DeleteWhen.EXPIRED, due_at))[0] == "deleted"
        handle = await Job.start({"wait": True}, workflow_id="reused", retention=3600)
        # This sweep read the id as due before all that.
        assert (await store.delete_closed("reused", DeleteWhen.EXPIRED, due_at))[0] == "open"
        await handle.signal("go", 2)
        assert await handle.result(timeout=10) == {"signal": 2, "done": True}
        outcome = await store.delete_closed("reused", DeleteWhen.EXPIRED, due_at)
    assert outcome == ("kept", "COMPLETED")
    assert (await client.describe("reused"))["status"] == "COMPLETED"
    assert len(await client.history("reused")) > 3


async def test_every_worker_sweeps_with_the_namespace_retention_it_reads_again(
    client: loom.Client, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_housekeeping, "SWEEP_SECONDS", 0.05)
    store = client.store
    async with running_worker(redis_url, namespace) as worker:
        assert worker.store.retention_ms == 7 * 86400 * 1000
        await store.set_retention(0)  # `loom init --retention 0`, while the worker runs

        async def read_again() -> bool:
            return worker.store.retention_ms == 0

        await wait_until(read_again)
        await finished("swept")

        async def deleted() -> bool:
            return not await store.redis.exists(store.keys.meta("swept"))

        await wait_until(deleted)
    assert await traces(store, namespace, "swept") == []


async def test_the_request_ids_of_signals_are_bounded(client: loom.Client) -> None:
    store = client.store
    handle = await Job.start({"wait": True}, workflow_id="chatty")  # no worker: stays open

    async def signal(request_id: str) -> str:
        outcome, _ = await store.deliver_external(
            "chatty",
            EventType.SIGNAL_RECEIVED,
            {"name": "n", "payload": None},
            request_id=request_id,
        )
        return outcome

    requests = store.keys.once_requests("chatty")
    assert [await signal(f"r{i}") for i in range(ONCE_KEEP + 1)] == ["ok"] * (ONCE_KEEP + 1)
    assert await store.redis.zcard(requests) == ONCE_KEEP
    # A repeat within the bound is dropped; the oldest, past it, is forgotten.
    assert await signal(f"r{ONCE_KEEP}") == "duplicate"
    assert await signal("r1") == "duplicate"
    assert await store.redis.zscore(requests, "r0") is None
    # No older than ONCE_KEEP_MS either.
    await store.redis.zadd(requests, {"r1": now_ms() - ONCE_KEEP_MS - 1})
    assert await signal("r-new") == "ok"
    assert await store.redis.zscore(requests, "r1") is None
    assert await store.redis.zcard(requests) == ONCE_KEEP
    assert not any(k.startswith("once:") for k in await store.read_meta("chatty"))
    assert len(await handle.history()) == ONCE_KEEP + 3  # started, and each "ok" signal
