"""The dashboard in headless Chromium, as a person uses it: every page against real
workflows run by a real worker, the live parts changing without a reload, signal and
cancel from a workflow's page, and user text shown as text. A screenshot of each page
goes to LOOM_SCREENSHOTS (default .cache/screenshots; `make screenshots` puts them in
docs/screenshots for the README)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import loom_redis as loom
from loom_redis.testing import isolated_registry, running_worker
from tests.web.test_api import until
from tests.web.test_api_reads import LATE_ACTIVITY, CallsLateWorkflow
from tests.web_workflows import ApprovalWorkflow, ChattyWorkflow, SleeperWorkflow

pytestmark = pytest.mark.anyio

SCREENSHOTS = Path(os.environ.get("LOOM_SCREENSHOTS", ".cache/screenshots"))
LIVE_MS = 15_000


async def shoot(page: Any, name: str) -> None:
    # Playwright makes the folders of the path.
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def waiting_for_go(client: loom.Client, handle: Any) -> None:
    async def waits() -> bool:
        info = await client.describe(handle.workflow_id)
        return "go" in info["waiting_for"]["signals"]

    await until(waits)


async def test_every_page_and_a_signal_sent_from_a_workflow_s_page(
    client: loom.Client, redis_url: str, namespace: str, web: str, page: Any
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await client.start(ApprovalWorkflow, {"item": "lamp"}, owner="alice")
        done = await client.start(SleeperWorkflow, {"seconds": 0})
        await done.result(timeout=15)
        await waiting_for_go(client, handle)
        wid = handle.workflow_id

        await page.goto(web + "/")
        await page.wait_for_selector('[data-status="RUNNING"] .count')
        assert await page.inner_text('[data-status="RUNNING"] .count') == "1"
        assert await page.inner_text('[data-status="COMPLETED"] .count') == "1"
        assert await page.inner_text('[data-metric="live_workers"] .count') == "1"
        await shoot(page, "overview")

        await page.goto(web + "/workflows")
        row = page.locator(f'tr[data-workflow-id="{wid}"]')
        await row.wait_for()
        assert "2 of 3: await_go" in await row.inner_text()
        assert "signal" in await row.inner_text()
        await shoot(page, "workflows")

        await page.click(f'a:text("{wid}")')
        await page.wait_for_selector("#graph")
        states = {
            await step.get_attribute("data-step"): await step.get_attribute("data-state")
            for step in await page.locator("#graph li.step").all()
        }
        assert states == {"prepare": "done", "await_go": "waiting", "ship": "pending"}
        assert "for signal go" in await page.inner_text("[data-waiting]")
        assert await page.locator('#events tr[data-type="SIGNAL_RECEIVED"]').count() == 0
        await shoot(page, "workflow")

        await page.fill('form.signal input[name="payload"]', '{"by": "page"}')
        await page.click("form.signal button")
        await page.wait_for_selector("#action-result .said.ok")
        # Live, without a reload: the status, the graph and a new history row.
        await page.wait_for_selector('#summary [data-status="COMPLETED"]', timeout=LIVE_MS)
        await page.wait_for_selector('#graph li[data-step="ship"][data-state="done"]')
        await page.wait_for_selector(
            '#events tr[data-type="WORKFLOW_COMPLETED"]', state="attached", timeout=LIVE_MS
        )
        assert await page.locator('#events tr[data-type="SIGNAL_RECEIVED"]').count() == 1
        assert '"by": "page"' in await page.inner_text("#result")

        await page.goto(web + "/definitions")
        approval = page.locator('[data-definition="web_Approval"]')
        assert [await s.get_attribute("data-step") for s in await approval.locator("li").all()] == [
            "prepare",
            "await_go",
            "ship",
        ]
        await shoot(page, "definitions")

        await page.goto(web + "/queues")
        await page.wait_for_selector("table.workers tr.live")
        assert await page.locator('table.shards[data-queue="default"] tbody tr').count() >= 16
        await shoot(page, "queues")
    assert (await handle.result(timeout=5))["go"] == {"by": "page"}


async def test_cancel_a_sleeping_workflow_from_its_page(
    client: loom.Client, redis_url: str, namespace: str, web: str, page: Any
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await client.start(SleeperWorkflow, {"seconds": 3600})

        async def sleeping() -> bool:
            return bool((await client.describe(handle.workflow_id))["waiting_for"]["timers"])

        await until(sleeping)
        await page.goto(f"{web}/workflows/{handle.workflow_id}")
        waiting = await page.inner_text("[data-waiting]")
        assert "for a timer" in waiting and "until" in waiting
        await page.fill('form.cancel input[name="reason"]', "not needed")
        await page.click("form.cancel button")
        await page.wait_for_selector('#summary [data-status="CANCELLED"]', timeout=LIVE_MS)
        with pytest.raises(loom.WorkflowCancelledError, match="not needed"):
            await handle.result(timeout=5)


async def test_a_workflow_leaves_the_running_filter_when_it_ends(
    client: loom.Client, redis_url: str, namespace: str, web: str, page: Any
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await client.start(ApprovalWorkflow, {"item": "desk"})
        await waiting_for_go(client, handle)
        await page.goto(web + "/workflows?status=RUNNING")
        row = page.locator(f'tr[data-workflow-id="{handle.workflow_id}"]')
        await row.wait_for()
        newcomer = await client.start(SleeperWorkflow, {"seconds": 3600})
        # A new workflow appears without a reload, and the ended one leaves.
        await page.locator(f'tr[data-workflow-id="{newcomer.workflow_id}"]').wait_for(
            timeout=LIVE_MS
        )
        await handle.signal("go")
        await row.wait_for(state="detached", timeout=LIVE_MS)


async def test_text_users_wrote_is_shown_as_text(
    client: loom.Client, redis_url: str, namespace: str, web: str, page: Any
) -> None:
    attack = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
    handle = await client.start(SleeperWorkflow, {"seconds": 3600, "note": attack}, owner="o<b>x")
    async with running_worker(redis_url, namespace):
        await page.goto(f"{web}/workflows/{handle.workflow_id}")
        assert attack in await page.inner_text("pre")
        await page.goto(web + "/workflows")
        assert "o<b>x" in await page.inner_text(f'tr[data-workflow-id="{handle.workflow_id}"]')
        assert await page.evaluate("window.pwned") is None


async def test_a_20000_event_history_pages_in_as_it_is_scrolled(
    client: loom.Client, redis_url: str, namespace: str, web: str, page: Any
) -> None:
    async with running_worker(redis_url, namespace):
        handle = await client.start(ChattyWorkflow, {"events": 20_000})
        await handle.result(timeout=120)
    length = (await client.describe(handle.workflow_id))["history_length"]
    assert length > 20_000
    await page.goto(f"{web}/workflows/{handle.workflow_id}")
    rows = page.locator("#events tr[data-type]")
    assert await rows.count() == 200
    for loaded in (400, 600):
        await page.locator("#events tr.more").scroll_into_view_if_needed()
        await page.wait_for_function(
            f"document.querySelectorAll('#events tr[data-type]').length >= {loaded}"
        )
    # Only what was scrolled to is on the page; the page answers at once.
    assert await rows.count() == 600
    assert await page.evaluate("1 + 1") == 2
    assert await page.inner_text('#graph li[data-step="count"] .state') == "done"


async def test_bulk_cancel_and_bulk_retry_from_the_workflows_page(
    client: loom.Client, redis_url: str, namespace: str, web: str, page: Any
) -> None:
    sleepers = [await client.start(SleeperWorkflow, {"seconds": 3600}) for _ in range(2)]
    with isolated_registry():
        async with running_worker(redis_url, namespace, unregistered_grace_seconds=0):
            stuck = await client.start(CallsLateWorkflow, {})
            await until(client.dead_letters)
            await page.goto(web + "/workflows?name=web_Sleeper")
            await page.click("details.bulk summary")
            assert await page.inner_text('[data-bulk="cancel"]') == "2"
            await page.fill('form.bulk-cancel input[name="reason"]', "tidy up")
            await page.click("form.bulk-cancel button")
            await page.wait_for_selector("details.bulk .said.ok")
            for handle in sleepers:
                with pytest.raises(loom.WorkflowCancelledError, match="tidy up"):
                    await handle.result(timeout=15)
            # The table shows it without a reload.
            await page.wait_for_selector('tr[data-status="CANCELLED"]', timeout=LIVE_MS)

            @loom.activity(name=LATE_ACTIVITY)
            async def late(n: int) -> int:
                return n + 41

            await page.goto(web + "/workflows?name=web_CallsLate")
            await page.click("details.bulk summary")
            assert await page.inner_text('[data-bulk="retry"]') == "1"
        async with running_worker(redis_url, namespace):
            await page.click("form.bulk-retry button")
            await page.wait_for_selector("details.bulk .said.ok")
            assert await stuck.result(timeout=15) == {"answer": 42}
    assert await client.dead_letters() == []


async def test_with_a_token_a_person_logs_in_to_act(
    client: loom.Client, redis_url: str, namespace: str, serve: Any, page: Any
) -> None:
    handle = await client.start(SleeperWorkflow, {"seconds": 3600})
    with serve(token="open sesame") as web:
        await page.goto(f"{web}/workflows/{handle.workflow_id}")
        assert "log in" in await page.inner_text("section.actions")
        assert await page.locator("form.cancel").count() == 0
        await page.click("header >> text=log in to act")
        await page.fill('input[name="token"]', "guess")
        await page.click("form.stack button")
        await page.wait_for_selector("text=That is not the token.")
        await page.fill('input[name="token"]', "open sesame")
        await page.click("form.stack button")
        await page.wait_for_url(web + "/")
        await page.goto(f"{web}/workflows/{handle.workflow_id}")
        await page.click("form.cancel button")
        await page.wait_for_selector("#action-result .said.ok")
    assert (await client.describe(handle.workflow_id))["cancel_requested"] is True
