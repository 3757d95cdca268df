"""The JSON API: everything the pages show, the actions they take, and Loom's progress
endpoints (`GET /api/progress/{owner}`; its live twin is in `_live`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.exceptions import HTTPException

from ..events import Status
from ..store import WorkflowFilter
from . import _actions, _data
from ._app import WebState, web_state
from ._guard import acting, token_given, token_valid

router = APIRouter(prefix="/api", tags=["api"])

State = Annotated[WebState, Depends(web_state)]
Acting = Annotated[WebState, Depends(acting)]


@router.get("/overview")
async def overview(state: State) -> dict[str, Any]:
    """Counts by status, closings per minute (last hour), backlog per queue, timers,
    dead letters, live workers."""
    return await _data.overview(state.client)


def filter_params(
    status: str | None = None,
    name: str | None = None,
    owner: str | None = None,
    waiting: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    workflow_id: str | None = Query(None, alias="id"),
) -> WorkflowFilter:
    """The workflows filter from query parameters, empty ones unset (status may list
    several, comma separated; waiting is activity, timer or signal; since/until bound
    the start time); a bad one is refused, named."""
    statuses: tuple[Status, ...] = ()
    if status:
        try:
            statuses = tuple(Status(part.strip().upper()) for part in status.split(",") if part)
        except ValueError:
            names = ", ".join(str(s) for s in Status)
            raise HTTPException(422, f"status {status!r} is not one of {names}") from None
    if waiting and waiting not in _data.WAIT_KINDS:
        kinds = ", ".join(_data.WAIT_KINDS)
        raise HTTPException(422, f"waiting {waiting!r} is not one of {kinds}")
    return WorkflowFilter(
        statuses=statuses,
        name=name or None,
        owner=owner or None,
        waiting_on=waiting or None,  # type: ignore[arg-type]
        started_after_ms=since_ms,
        started_before_ms=until_ms,
        workflow_id=workflow_id or None,
    )


Filter = Annotated[WorkflowFilter, Depends(filter_params)]


@router.get("/workflows")
async def workflows(
    state: State,
    chosen: Filter,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """A page of workflows, newest first; pass `next_cursor` back as `cursor` for the
    next one."""
    try:
        # An empty cursor (a form's) is the first page.
        return await _data.workflows(state.client, chosen, cursor or None, limit)
    except ValueError as exc:  # a cursor that is not one of ours
        raise HTTPException(422, str(exc)) from None


@router.get("/workflows/{workflow_id}")
async def workflow(state: State, workflow_id: str) -> dict[str, Any]:
    """A workflow: its meta (input, result or error included), its steps as a graph,
    its state, its signals and the timers it waits for."""
    info, view = await _data.workflow(state.client, workflow_id)
    context = await _data.workflow_context(state.client, info, view)
    return {
        **info,
        "steps": context["steps"],
        "state": view.state,
        "signals": view.signals,
        "timers_due": context["timers_due"],
    }


@router.get("/workflows/{workflow_id}/history")
async def history(
    state: State,
    workflow_id: str,
    after: str | None = None,
    count: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Its history, oldest first, `count` entries after entry id `after`; `next` is the
    `after` of the next page (None at the end)."""
    entries, following = await state.client.history_page(workflow_id, after=after, count=count)
    return {"events": entries, "next": following}


@router.post("/workflows/{workflow_id}/signal")
async def signal(
    state: Acting,
    workflow_id: str,
    name: Annotated[str, Body()],
    payload: Annotated[Any, Body()] = None,
) -> dict[str, Any]:
    """Send signal `name` with `payload` (any JSON) to an open workflow."""
    return await _actions.signal(state.client, workflow_id, name, payload)


@router.post("/workflows/{workflow_id}/cancel")
async def cancel(
    state: Acting, workflow_id: str, reason: Annotated[str | None, Body(embed=True)] = None
) -> dict[str, Any]:
    """Ask an open workflow to cancel."""
    return await _actions.cancel(state.client, workflow_id, reason)


@router.get("/bulk/cancel")
async def bulk_cancel_preview(state: State, chosen: Filter) -> dict[str, Any]:
    """How many open workflows a bulk cancel over this filter would touch."""
    return await _actions.cancel_preview(state.client, chosen)


@router.post("/bulk/cancel")
async def bulk_cancel(
    state: Acting,
    chosen: Filter,
    reason: Annotated[str | None, Body(embed=True)] = None,
) -> dict[str, Any]:
    """Cancel every open workflow the filter matches."""
    return await _actions.bulk_cancel(state.client, chosen, reason)


@router.get("/definitions")
async def definitions(state: State) -> list[dict[str, Any]]:
    """The workflow definitions workers published: version, agent, description, steps."""
    return await state.client.definitions()


@router.get("/queues")
async def queues(state: State) -> dict[str, Any]:
    """Per queue and shard: lengths, lag, pending, oldest pending age, consumers; the
    workers (live and departed) and the dead letters."""
    return await _data.queues(state.client)


@router.get("/workers")
async def workers(state: State) -> list[dict[str, Any]]:
    """The workers' heartbeats, each with `live` (its heartbeat is fresh)."""
    return await _data.workers(state.client)


@router.get("/dead-letters")
async def dead_letters(
    state: State, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[dict[str, Any]]:
    """Tasks in the dead-letter streams, newest first, with their reasons."""
    return await state.client.dead_letters(limit=limit)


@router.post("/dead-letters/{entry_id}/retry")
async def retry(state: Acting, entry_id: str) -> dict[str, Any]:
    """Put a dead-lettered task back on its queue."""
    return await _actions.retry(state.client, entry_id)


@router.get("/bulk/retry")
async def bulk_retry_preview(state: State, chosen: Filter) -> dict[str, Any]:
    """How many dead-lettered tasks of the workflows the filter matches a bulk retry
    would put back (every dead letter, for no filter)."""
    return await _actions.retry_preview(state.client, chosen)


@router.post("/bulk/retry")
async def bulk_retry(state: Acting, chosen: Filter) -> dict[str, Any]:
    """Put back on their queues the dead-lettered tasks of the workflows the filter
    matches (every dead letter, for no filter)."""
    return await _actions.bulk_retry(state.client, chosen)


@router.get("/progress/{owner}")
async def progress(state: State, owner: str) -> dict[str, Any]:
    """Loom's `get_progress(owner)`: the owner's active workflows and where each is."""
    return await state.client.get_progress(owner)


@router.get("/me")
async def me(request: Request, state: State) -> dict[str, Any]:
    """What this request may do: read always; act when the Redis user may write and
    the token (if one is set) is given."""
    return {
        "read": True,
        "act": state.refusal is None and token_valid(state, token_given(request)),
        "unavailable": state.refusal,
        "token_required": state.settings.token is not None,
    }
