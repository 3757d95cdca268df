"""Server-Sent Events: Loom's progress stream, and what keeps the pages live.

A workflow's page and the progress streams are pushed when a history changes (a
blocking read of the histories, not a poll); the overview and the workflows table,
which sum over many workflows, are read again every few seconds and sent when what
they show has changed: one read for every viewer of the same view (see SharedReads),
so that many open dashboards cost Redis what one does. Each message has an `id:` so
that a browser that reconnects (it sends the last one back as `Last-Event-ID`) resumes
where it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.templating import Jinja2Templates
from sse_starlette import EventSourceResponse

from ..client import Client
from . import _data
from ._api import Filter
from ._app import WebState, web_state
from ._views import WorkflowView

router = APIRouter(tags=["live"])

State = Annotated[WebState, Depends(web_state)]

# How long one blocking read of histories waits before looking again.
BLOCK_MS = 5_000
# How often the overview and the table are read again.
OVERVIEW_SECONDS = 2.0
TABLE_SECONDS = 1.5
# The most history entries one message of a workflow's page carries.
EVENTS_PER_READ = 200


def _digest(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def _resumed_from(request: Request) -> str | None:
    return request.headers.get("last-event-id") or None


# -- Loom's progress API -------------------------------------------------------------


@router.get("/api/progress/{owner}/stream", tags=["api"])
async def progress_stream(request: Request, state: State, owner: str) -> EventSourceResponse:
    """`get_progress(owner)` as Server-Sent Events: one message (the same JSON) per
    change, pushed when the owner's histories change."""
    return EventSourceResponse(_progress(state.client, owner, _resumed_from(request), whole=True))


@router.get("/api/progress/stream", tags=["api"])
async def loom_progress_stream(request: Request, state: State, owner: str) -> EventSourceResponse:
    """Loom's SSE endpoint (`/api/progress/stream?owner=...`): each message is the list
    of the owner's workflows, as Loom's `stream_progress` yields it."""
    return EventSourceResponse(_progress(state.client, owner, _resumed_from(request), whole=False))


async def _progress(
    client: Client, owner: str, resumed_from: str | None, *, whole: bool
) -> AsyncIterator[dict[str, Any]]:
    """A message per change; the id is the digest of what it carries, so a browser that
    comes back having seen the current one is not sent it again."""
    async for workflows in client.stream_progress(owner):
        payload: Any = {"owner": owner, "workflows": workflows} if whole else workflows
        data = json.dumps(payload, sort_keys=True, default=str)
        message_id = _digest(data)
        if message_id == resumed_from:
            continue
        resumed_from = None
        yield {"id": message_id, "data": data}


# -- the pages -------------------------------------------------------------------------


def _render(templates: Jinja2Templates, name: str, **context: Any) -> str:
    return templates.get_template(name).render(**context)


@router.get("/live/overview", include_in_schema=False)
async def live_overview(state: State) -> EventSourceResponse:
    async def read() -> str:
        overview = await _data.overview(state.client)
        return _render(state.templates, "_overview.html", overview=overview)

    async def changes() -> AsyncIterator[dict[str, Any]]:
        last = None
        while True:
            html = await state.shared.get("overview", read, OVERVIEW_SECONDS / 2)
            if html != last:
                last = html
                yield {"event": "overview", "id": _digest(html), "data": html}
            await anyio.sleep(OVERVIEW_SECONDS)

    return EventSourceResponse(changes())


@router.get("/live/workflows", include_in_schema=False)
async def live_workflows(state: State, chosen: Filter, limit: int = 50) -> EventSourceResponse:
    """The first page of the table for the filter, sent again whenever it changes: new
    workflows appear, changed ones change, ended ones leave a filter on open ones."""

    async def read() -> str:
        page = await _data.workflows(state.client, chosen, None, limit)
        return _render(state.templates, "_rows.html", page=page)

    async def changes() -> AsyncIterator[dict[str, Any]]:
        last = None
        while True:
            html = await state.shared.get(("rows", chosen, limit), read, TABLE_SECONDS / 2)
            if html != last:
                last = html
                yield {"event": "rows", "id": _digest(html), "data": html}
            await anyio.sleep(TABLE_SECONDS)

    return EventSourceResponse(changes())


@router.get("/live/workflows/{workflow_id}", include_in_schema=False)
async def live_workflow(
    request: Request, state: State, workflow_id: str, after: str
) -> EventSourceResponse:
    """A workflow's summary and graph, sent again each time its history grows past
    entry `after` (the last one the page was rendered with)."""
    client = state.client
    cursor = _resumed_from(request) or after

    async def changes() -> AsyncIterator[dict[str, Any]]:
        nonlocal cursor
        view: WorkflowView | None = None
        while True:
            if not await client.store.wait_for_history({workflow_id: cursor}, BLOCK_MS, 1):
                continue
            if view is None:  # the whole history once, then only what it gains
                info, view = await _data.workflow(client, workflow_id)
            else:
                await _fold_new_entries(client, workflow_id, view)
                info = await client.describe(workflow_id)  # after the history: as new
                view.waiting_for(info.get("waiting_for") or {})
            cursor = view.last_id or cursor
            context = await _data.workflow_context(client, info, view)
            for part in ("summary", "graph"):
                html = _render(state.templates, f"_{part}.html", **context)
                yield {"event": part, "id": cursor, "data": html}

    return EventSourceResponse(changes())


async def _fold_new_entries(client: Client, workflow_id: str, view: WorkflowView) -> None:
    """Fold into `view` the history entries after the last it has seen."""
    after = view.last_id
    while after is not None:
        entries, after = await client.history_page(workflow_id, after=after, count=EVENTS_PER_READ)
        view.apply(entries)


@router.get("/live/workflows/{workflow_id}/events", include_in_schema=False)
async def live_events(
    request: Request, state: State, workflow_id: str, after: str
) -> EventSourceResponse:
    """The history entries appended after entry `after`, one message each (its id the
    entry's), as table rows."""
    client = state.client
    cursor = _resumed_from(request) or after

    async def appended() -> AsyncIterator[dict[str, Any]]:
        nonlocal cursor
        while True:
            if not await client.store.wait_for_history({workflow_id: cursor}, BLOCK_MS, 1):
                continue
            entries, _ = await client.history_page(workflow_id, after=cursor, count=EVENTS_PER_READ)
            for entry in entries:
                html = _render(state.templates, "_events.html", events=[entry], next_after=None)
                cursor = entry["id"]
                yield {"event": "event", "id": cursor, "data": html}

    return EventSourceResponse(appended())
