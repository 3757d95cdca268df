"""The dashboard's JSON API reads everything its pages show, against real workflows:
the workflows table's filters and cursor, a history in pages, queues and workers,
definitions, dead letters re-driven and a bulk cancel with its preview."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import loom_redis as loom
from loom_redis.testing import isolated_registry, running_worker
from tests.web.test_api import until
from tests.web_workflows import ApprovalWorkflow, FailingWorkflow, SleeperWorkflow

pytestmark = pytest.mark.anyio

LATE_ACTIVITY = "web_late_activity"


@loom.workflow(name="web_CallsLate")
class CallsLateWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step()
    async def call(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("answer", await ctx.activity(LATE_ACTIVITY, 1))


async def ids(http: httpx.AsyncClient, **params: Any) -> set[str]:
    """Every workflow id the table lists for `params`, following the cursor (3 a page):
    each once, newest first (workflows started in the same millisecond in any order)."""
    rows: list[dict[str, Any]] = []
    cursor = ""
    while cursor is not None:
        page = await http.get("/api/workflows", params={**params, "limit": 3, "cursor": cursor})
        assert page.status_code == 200, page.text
        rows += page.json()["workflows"]
        cursor = page.json()["next_cursor"]
    found = [row["workflow_id"] for row in rows]
    assert len(found) == len(set(found)), found
    if not params:
        started = [row["started_ms"] for row in rows]
        assert started == sorted(started, reverse=True)
    return set(found)


async def test_the_workflows_table_filters_and_pages(
    client: loom.Client, redis_url: str, namespace: str, web: str
) -> None:
    sleepers = [
        (await client.start(SleeperWorkflow, {"seconds": 3600}, owner="ann")).workflow_id
        for _ in range(4)
    ]
    approvals = [
        (await client.start(ApprovalWorkflow, {"item": str(n)}, owner="bo")).workflow_id
        for n in range(3)
    ]
    async with running_worker(redis_url, namespace), httpx.AsyncClient(base_url=web) as http:

        async def all_waiting() -> bool:
            infos = [await client.describe(w) for w in sleepers + approvals]
            return all(i["status"] == "RUNNING" and i["task_queued"] is False for i in infos)

        await until(all_waiting)
        assert await ids(http) == set(sleepers + approvals)
        assert await ids(http, status="RUNNING") == set(sleepers + approvals)
        assert await ids(http, name="web_Sleeper") == set(sleepers)
        assert await ids(http, owner="bo") == set(approvals)
        assert await ids(http, waiting="signal") == set(approvals)
        assert await ids(http, waiting="timer", owner="ann") == set(sleepers)
        assert await ids(http, id=approvals[1]) == {approvals[1]}
        assert await ids(http, status="COMPLETED") == set()
        started = [(await client.describe(w))["started_ms"] for w in sleepers + approvals]
        window = {"since_ms": min(started), "until_ms": max(started) + 1}
        assert await ids(http, **window) == set(sleepers + approvals)
        assert await ids(http, until_ms=min(started)) == set()
        assert await ids(http, since_ms=max(started) + 1) == set()
        row = (await http.get("/api/workflows", params={"id": approvals[0]})).json()
        assert row["workflows"][0]["step"] == "2 of 3: await_go"
        assert row["workflows"][0]["waits_on"] == ["signal"]
        bad = await http.get("/api/workflows", params={"status": "DONE"})
        assert bad.status_code == 422 and "'DONE' is not one of" in bad.json()["detail"]
        garbage = await http.get("/api/workflows", params={"cursor": "garbage"})
        assert garbage.status_code == 422

        # Bulk cancel over a filter: its preview, then the action.
        preview = await http.get("/api/bulk/cancel", params={"name": "web_Sleeper"})
        assert preview.json() == {"count": 4, "exact": True}
        done = await http.post(
            "/api/bulk/cancel", params={"name": "web_Sleeper"}, json={"reason": "bulk"}
        )
        assert done.json() == {"cancelled": 4, "already_ended": 0, "limit": 10_000}
        for workflow_id in sleepers:
            with pytest.raises(loom.WorkflowCancelledError, match="bulk"):
                await client.get_handle(workflow_id).result(timeout=10)
        assert await ids(http, status="CANCELLED") == set(sleepers)
        assert (await http.get("/api/bulk/cancel", params={"name": "web_Sleeper"})).json() == {
            "count": 0,
            "exact": True,
        }


async def test_a_history_in_pages_and_the_workflow_s_graph(
    client: loom.Client, redis_url: str, namespace: str, web: str
) -> None:
    async with running_worker(redis_url, namespace), httpx.AsyncClient(base_url=web) as http:
        handle = await client.start(ApprovalWorkflow, {"item": "pen"})
        await handle.signal("go", {"ok": 1})
        await handle.result(timeout=15)
        whole = await client.history_entries(handle.workflow_id)
        paged: list[dict[str, Any]] = []
        after = None
        while True:
            page = (
                await http.get(
                    f"/api/workflows/{handle.workflow_id}/history",
                    params={"count": 4, **({"after": after} if after else {})},
                )
            ).json()
            paged += page["events"]
            after = page["next"]
            if after is None:
                break
        assert [e["id"] for e in paged] == [e["id"] for e in whole]
        shown = (await http.get(f"/api/workflows/{handle.workflow_id}")).json()
        assert shown["status"] == "COMPLETED"
        assert [(s["name"], s["status"]) for s in shown["steps"]] == [
            ("prepare", "done"),
            ("await_go", "done"),
            ("ship", "done"),
        ]
        [prepare] = shown["steps"][0]["activities"]
        assert (prepare["name"], prepare["status"], prepare["attempts"]) == (
            "web_prepare",
            "completed",
            1,
        )
        assert shown["state"] == {
            "prepared": "prepared pen",
            "go": {"ok": 1},
            "shipped": "shipped pen",
        }
        assert (await http.get("/api/workflows/nope")).status_code == 404
        # A failed workflow's page shows its error with the traceback.
        failed = await client.start(FailingWorkflow, {})
        with pytest.raises(loom.WorkflowExecutionError):
            await failed.result(timeout=15)
        page = (await http.get(f"/workflows/{failed.workflow_id}")).text
        assert "ValueError in step break: broken on purpose" in page
        assert "Traceback (most recent call last)" in page
        assert 'data-step="break" data-state="failed"' in page
        # The overview's chart counts it in its minute (this one, or the one before).
        minutes = (await http.get("/api/overview")).json()["per_minute"]
        assert sum(minute["completed"] for minute in minutes[-2:]) == 1
        assert sum(minute["failed"] for minute in minutes[-2:]) == 1


def worker_beat(beats: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [beat] = [b for b in beats if b["name"] == name]
    return beat


async def test_queues_workers_definitions_and_dead_letters(
    client: loom.Client, redis_url: str, namespace: str, web: str
) -> None:
    with isolated_registry():
        async with (
            running_worker(redis_url, namespace, unregistered_grace_seconds=0) as worker,
            httpx.AsyncClient(base_url=web) as http,
        ):
            handle = await CallsLateWorkflow.start({})

            async def dead() -> list[dict[str, Any]]:
                found: list[dict[str, Any]] = (await http.get("/api/dead-letters")).json()
                return found

            [letter] = await until(dead)
            assert letter["workflow_id"] == handle.workflow_id
            assert LATE_ACTIVITY in letter["reason"]
            queues = (await http.get("/api/queues")).json()
            [default] = [q for q in queues["queues"] if q["queue"] == "default"]
            assert len(default["streams"]) == 2 * 16
            consumers = {c["name"] for s in default["streams"] for c in s["consumers"]}
            assert worker.name in consumers
            # A worker whose heartbeat stopped 20 s ago (its record not yet forgotten).
            departed = {**worker_beat(await client.workers(), worker.name), "name": "gone"}
            departed["seen_ms"] -= 20_000
            await client.store.publish_heartbeat("gone", departed)
            beats = {b["name"]: b["live"] for b in (await http.get("/api/workers")).json()}
            assert beats == {worker.name: True, "gone": False}
            queues_page = await http.get("/queues")
            assert 'class="departed" data-worker="gone"' in queues_page.text
            names = {d["name"]: d for d in (await http.get("/api/definitions")).json()}
            assert [s["name"] for s in names["web_Approval"]["steps"]] == [
                "prepare",
                "await_go",
                "ship",
            ]
            overview = (await http.get("/api/overview")).json()
            assert overview["dead_letters"] == 1 and overview["live_workers"] == 1
            assert len(overview["per_minute"]) == 60

            @loom.activity(name=LATE_ACTIVITY)
            async def late(n: int) -> int:
                return n + 41

        async with running_worker(redis_url, namespace), httpx.AsyncClient(base_url=web) as http:
            retried = await http.post(f"/api/dead-letters/{letter['id']}/retry", json={})
            assert retried.json() == {"entry_id": letter["id"], "outcome": "ok"}
            assert await handle.result(timeout=15) == {"answer": 42}
            assert (await http.get("/api/dead-letters")).json() == []
            missing = await http.post(f"/api/dead-letters/{letter['id']}/retry", json={})
            assert missing.status_code == 404


async def test_the_api_is_documented(web: str) -> None:
    async with httpx.AsyncClient(base_url=web) as http:
        schema = (await http.get("/openapi.json")).json()
        assert "/api/progress/{owner}" in schema["paths"]
        assert "/api/workflows" in schema["paths"]
        docs = await http.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
