"""The dashboard's JSON API over real HTTP against real workflows: Loom's progress
endpoints (SSE included, with resumption), and who may act (the token, cross-site
requests, a read-only Redis user)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner
from httpx_sse import EventSource, aconnect_sse

import loom_redis as loom
from loom_redis.cli import main as cli
from loom_redis.testing import running_worker
from tests.support import acl_rule, create_user, with_credentials
from tests.web_workflows import ApprovalWorkflow, SleeperWorkflow

pytestmark = pytest.mark.anyio


async def until(check: Callable[[], Any], timeout: float = 15) -> Any:
    """Wait for `check()` (sync or async) to be truthy; its value."""
    with anyio.fail_after(timeout):
        while True:
            value = check()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return value
            await anyio.sleep(0.05)


async def messages(events: EventSource) -> AsyncIterator[tuple[str, Any]]:
    async for message in events.aiter_sse():
        yield message.id, json.loads(message.data)


async def test_progress_is_get_progress_and_its_stream_pushes_each_change(
    client: loom.Client, redis_url: str, namespace: str, web: str
) -> None:
    async with running_worker(redis_url, namespace), httpx.AsyncClient(base_url=web) as http:
        handle = await client.start(ApprovalWorkflow, {"item": "a"}, owner="alice")
        await until(lambda: client.describe(handle.workflow_id))
        async with aconnect_sse(http, "GET", "/api/progress/alice/stream") as events:
            stream = messages(events)
            first_id, first = await anext(stream)
            assert first["owner"] == "alice"
            assert [w["workflow_id"] for w in first["workflows"]] == [handle.workflow_id]
            assert first_id
            # Each message is get_progress as it was then; the wait for the signal comes.
            seen = first
            while seen["workflows"][0]["current_step"] != 2:
                _, seen = await anext(stream)
            assert (await http.get("/api/progress/alice")).json() == json.loads(
                json.dumps(await client.get_progress("alice"))
            )
            await handle.signal("go", {"by": "web"})
            while seen["workflows"]:
                _, seen = await anext(stream)
    assert await handle.result(timeout=10) == {
        "prepared": "prepared a",
        "go": {"by": "web"},
        "shipped": "shipped a",
    }


async def test_loom_s_progress_stream_sends_the_list_and_resumes_without_repeats(
    client: loom.Client, redis_url: str, namespace: str, web: str
) -> None:
    handle = await client.start(SleeperWorkflow, {"seconds": 60}, owner="bo")
    async with httpx.AsyncClient(base_url=web, timeout=30) as http:
        async with aconnect_sse(http, "GET", "/api/progress/stream", params={"owner": "bo"}) as es:
            last_id, listed = await anext(messages(es))
        assert [w["workflow_id"] for w in listed] == [handle.workflow_id]
        # Back with the last id it saw: what it saw is not sent again, only what changed.
        headers = {"Last-Event-ID": last_id}
        async with aconnect_sse(
            http, "GET", "/api/progress/stream", params={"owner": "bo"}, headers=headers
        ) as es:
            stream = messages(es)
            await client.cancel(handle.workflow_id, "enough")
            async with running_worker(redis_url, namespace):
                with anyio.fail_after(15):
                    _, after = await anext(stream)
                    assert after != listed
                    while after:
                        _, after = await anext(stream)


async def test_actions_need_the_token_when_one_is_set(
    client: loom.Client, redis_url: str, namespace: str, serve: Any
) -> None:
    token = secrets.token_urlsafe(16)
    handle = await client.start(SleeperWorkflow, {"seconds": 60})
    with serve(token=token) as web:
        async with httpx.AsyncClient(base_url=web) as http:
            path = f"/api/workflows/{handle.workflow_id}/cancel"
            refused = await http.post(path, json={"reason": "no token"})
            assert refused.status_code == 401
            assert "LOOM_WEB_TOKEN" in refused.json()["detail"]
            wrong = await http.post(path, json={}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert (await client.describe(handle.workflow_id))["cancel_requested"] is False
            me = (await http.get("/api/me")).json()
            assert me == {"read": True, "act": False, "unavailable": None, "token_required": True}
            done = await http.post(
                path, json={"reason": "ops"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert done.status_code == 200, done.text
            assert done.json() == {
                "workflow_id": handle.workflow_id,
                "cancel_requested": True,
                "reason": "ops",
            }
    async with running_worker(redis_url, namespace):
        with pytest.raises(loom.WorkflowCancelledError, match="ops"):
            await handle.result(timeout=15)


async def test_a_request_another_site_makes_a_browser_send_is_refused(
    client: loom.Client, web: str
) -> None:
    handle = await client.start(SleeperWorkflow, {"seconds": 60})
    async with httpx.AsyncClient(base_url=web) as http:
        path = f"/api/workflows/{handle.workflow_id}/cancel"
        evil = await http.post(path, json={}, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403
        assert "cross-site" in evil.json()["detail"]
        fetched = await http.post(path, json={}, headers={"Sec-Fetch-Site": "cross-site"})
        assert fetched.status_code == 403
        # A plain form post (what another site's page can make a browser send).
        form = await http.post(f"/actions/workflows/{handle.workflow_id}/cancel", data={})
        assert form.status_code == 403
    assert (await client.describe(handle.workflow_id))["cancel_requested"] is False


@pytest.mark.standalone
async def test_with_the_read_only_user_it_reads_and_says_why_it_cannot_act(
    client: loom.Client, redis_url: str, namespace: str, serve: Any
) -> None:
    admin: aioredis.Redis = aioredis.Redis.from_url(redis_url, protocol=2)
    user, password = f"loom-dashboard-{namespace}", secrets.token_urlsafe(16)
    await create_user(admin, user, password, acl_rule("loom-dashboard"))
    try:
        handle = await client.start(SleeperWorkflow, {"seconds": 60}, owner="cy")
        with serve(url=with_credentials(redis_url, user, password)) as web:
            async with httpx.AsyncClient(base_url=web) as http:
                me = (await http.get("/api/me")).json()
                assert me["act"] is False
                assert "evalsha" in me["unavailable"]
                for path in ("/api/overview", "/api/progress/cy", "/api/definitions"):
                    assert (await http.get(path)).status_code == 200, path
                shown = (await http.get(f"/api/workflows/{handle.workflow_id}")).json()
                assert shown["status"] == "PENDING"
                refused = await http.post(f"/api/workflows/{handle.workflow_id}/cancel", json={})
                assert refused.status_code == 403
                assert "actions are unavailable" in refused.json()["detail"]
                page = await http.get(f"/workflows/{handle.workflow_id}")
                assert "Unavailable:" in page.text
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


def test_it_will_not_serve_other_machines_without_a_token(monkeypatch: Any) -> None:
    monkeypatch.delenv("LOOM_WEB_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["web", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code != 0
    assert "without a token" in result.output and "--insecure" in result.output
