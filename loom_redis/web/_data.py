"""What each page and its JSON twin show, read through the client and the store's query
layer: one function per view, so that a page and `/api/...` can never disagree."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..client import Client
from ..store import WorkflowFilter
from ..store.connection import now_ms
from ._views import WorkflowView, workflow_row

# The queue every namespace has; others come from the workers' heartbeats.
DEFAULT_QUEUE = "default"
WAIT_KINDS = ("activity", "timer", "signal")


async def known_queues(client: Client) -> list[str]:
    """The queues the dashboard reports: the default one and every queue a worker that
    is (or was, within its heartbeat's memory) running reads."""
    queues = {DEFAULT_QUEUE}
    for beat in await client.workers():
        queues.update(str(queue) for queue in beat.get("queues", ()))
    return sorted(queues)


async def overview(client: Client) -> dict[str, Any]:
    """Counts by status, closings per minute over the last hour, backlog per queue, due
    and overdue timers, dead letters, live workers."""
    queues = await known_queues(client)
    backlog = await client.store.backlog(queues)
    live = await client.live_workers()
    return {
        "counts": await client.stats(),
        "per_minute": await client.closed_per_minute(60),
        "queues": [
            {
                "queue": queue,
                "backlog": found.length,
                "lag": found.lag,
                "pending": found.pending,
                "oldest_pending_age_ms": (
                    backlog.at_ms - found.oldest_pending_ms if found.oldest_pending_ms else None
                ),
            }
            for queue, found in backlog.queues.items()
        ],
        "timers_due": backlog.timers_due,
        "timers_overdue_ms": (
            backlog.at_ms - backlog.oldest_due_ms if backlog.oldest_due_ms else 0
        ),
        "dead_letters": backlog.dead_letters,
        "live_workers": len(live),
    }


async def workflows(
    client: Client, chosen: WorkflowFilter, cursor: str | None, limit: int
) -> dict[str, Any]:
    """A page of the workflows table: rows, the cursor of the next page, and whether the
    scan limit cut it short."""
    page = await client.browse_workflows(chosen, cursor=cursor, limit=limit)
    now = now_ms()
    return {
        "workflows": [workflow_row(info, now) for info in page.workflows],
        "next_cursor": page.next_cursor,
        "complete": page.complete,
        "scanned": page.scanned,
    }


async def workflow(client: Client, workflow_id: str) -> tuple[dict[str, Any], WorkflowView]:
    """A workflow as its page shows it: its meta, and its history folded into its
    steps' graph, its state and its signals."""
    # The history first: the meta read after it is at least as new, so a live page
    # whose cursor is the history's last entry never misses the meta's last change.
    entries = await client.history_entries(workflow_id)
    info = await client.describe(workflow_id)
    definitions = {d.get("name"): d for d in await client.definitions()}
    view = WorkflowView.of(definitions.get(info.get("workflow_name")))
    view.apply(entries)
    view.waiting_for(info.get("waiting_for") or {})
    return info, view


async def timers_of(client: Client, info: dict[str, Any]) -> dict[int, int | None]:
    """When each timer an open workflow waits for is due (ms), by seq."""
    seqs = (info.get("waiting_for") or {}).get("timers") or []
    return {
        seq: await client.store.timer_due(info["workflow_id"], str(info["queue"]), seq)
        for seq in seqs
    }


async def workflow_context(
    client: Client, info: dict[str, Any], view: WorkflowView
) -> dict[str, Any]:
    """What the workflow page's parts (summary, graph) are rendered with."""
    return {
        "info": info,
        "view": view,
        "steps": [step.to_dict() for step in view.steps],
        "timers_due": await timers_of(client, info),
    }


async def queues(client: Client) -> dict[str, Any]:
    """Per queue and shard: lengths, lag, pending, oldest pending age and consumers;
    the workers, live and departed; the dead letters."""
    return {
        "queues": [asdict(detail) for detail in await client.queue_details()],
        "workers": await workers(client),
        "dead_letters": await client.dead_letters(limit=200),
    }


async def workers(client: Client) -> list[dict[str, Any]]:
    """The workers' heartbeats, each with `live`: whether it is fresh (a departed
    worker's is kept for a minute)."""
    live = {beat["name"] for beat in await client.live_workers()}
    return [{**beat, "live": beat["name"] in live} for beat in await client.workers()]
