"""What the dashboard does, through the client API: signal, cancel, re-drive dead
letters, one at a time or over the workflows a filter matches. Each returns what it did,
for the page (and the API caller) to show."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.exceptions import HTTPException

from ..client import Client
from ..errors import WorkflowExecutionError
from ..store import WorkflowFilter
from ._views import OPEN_STATUSES

# The most workflows one bulk cancel touches: a larger set is cancelled in several.
BULK_LIMIT = 10_000


async def signal(client: Client, workflow_id: str, name: str, payload: Any) -> dict[str, Any]:
    await client.signal(workflow_id, name, payload)
    return {"workflow_id": workflow_id, "signal": name, "delivered": True}


async def cancel(client: Client, workflow_id: str, reason: str | None) -> dict[str, Any]:
    await client.cancel(workflow_id, reason or None)
    return {"workflow_id": workflow_id, "cancel_requested": True, "reason": reason or None}


async def retry(client: Client, entry_id: str) -> dict[str, Any]:
    try:
        outcome = await client.redrive(entry_id)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    return {"entry_id": entry_id, "outcome": outcome}


async def dead_letters_of(client: Client, chosen: WorkflowFilter) -> list[dict[str, Any]]:
    """The dead letters of the workflows `chosen` matches (every one for no filter)."""
    letters = await client.dead_letters(limit=BULK_LIMIT)
    if chosen == WorkflowFilter():
        return letters
    wanted = set(await client.store.matching_ids(chosen, limit=BULK_LIMIT))
    return [letter for letter in letters if letter["workflow_id"] in wanted]


async def retry_preview(client: Client, chosen: WorkflowFilter) -> dict[str, Any]:
    return {"count": len(await dead_letters_of(client, chosen))}


async def bulk_retry(client: Client, chosen: WorkflowFilter) -> dict[str, Any]:
    """Re-drive the dead letters of the workflows `chosen` matches, as listed now
    (those added meanwhile wait for the next)."""
    outcomes: dict[str, int] = {}
    for letter in await dead_letters_of(client, chosen):
        outcome = await client.redrive(letter["id"])
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {"retried": sum(outcomes.values()), "outcomes": outcomes}


def open_only(chosen: WorkflowFilter) -> WorkflowFilter | None:
    """The filter narrowed to open workflows (the ones a cancel can touch), None if it
    asks for closed ones only."""
    wanted = tuple(s for s in chosen.statuses or sorted(OPEN_STATUSES) if s in OPEN_STATUSES)
    return dataclasses.replace(chosen, statuses=wanted) if wanted else None


async def cancel_preview(client: Client, chosen: WorkflowFilter) -> dict[str, Any]:
    narrowed = open_only(chosen)
    if narrowed is None:
        return {"count": 0, "exact": True}
    count, exact = await client.count_workflows(narrowed)
    return {"count": count, "exact": exact}


async def bulk_cancel(client: Client, chosen: WorkflowFilter, reason: str | None) -> dict[str, Any]:
    narrowed = open_only(chosen)
    ids = [] if narrowed is None else await client.store.matching_ids(narrowed, limit=BULK_LIMIT)
    cancelled, ended = 0, 0
    for workflow_id in ids:
        try:
            await client.cancel(workflow_id, reason or None)
            cancelled += 1
        except WorkflowExecutionError:  # it ended meanwhile
            ended += 1
    return {"cancelled": cancelled, "already_ended": ended, "limit": BULK_LIMIT}
