"""The dashboard's pages, rendered on the server (Jinja2), and the fragments and actions
their htmx asks for."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from ..errors import LoomError
from ..events import Status
from . import _actions, _data
from ._api import Filter
from ._app import WebState, web_state
from ._guard import TOKEN_COOKIE, acting, same_origin, token_given, token_valid

router = APIRouter(include_in_schema=False)

State = Annotated[WebState, Depends(web_state)]

# History rows a page (and each "more" of it) shows.
HISTORY_PAGE = 200


def _page(request: Request, state: WebState, name: str, **context: Any) -> HTMLResponse:
    may_act = state.refusal is None and token_valid(state, token_given(request))
    return state.templates.TemplateResponse(
        request,
        name,
        {
            "unavailable": state.refusal,
            "may_act": may_act,
            "token_required": state.settings.token is not None,
            "namespace": state.client.namespace,
            **context,
        },
    )


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, state: State) -> HTMLResponse:
    return _page(request, state, "overview.html", overview=await _data.overview(state.client))


@router.get("/workflows", response_class=HTMLResponse)
async def workflows(
    request: Request,
    state: State,
    chosen: Filter,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> HTMLResponse:
    try:
        page = await _data.workflows(state.client, chosen, cursor or None, limit)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    params = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    return _page(
        request,
        state,
        "workflows.html",
        page=page,
        params=params,
        cursor=cursor,
        statuses=[str(s) for s in Status],
        wait_kinds=_data.WAIT_KINDS,
        query=str(request.url.query),
    )


@router.get("/workflows/{workflow_id}", response_class=HTMLResponse)
async def workflow(request: Request, state: State, workflow_id: str) -> HTMLResponse:
    info, view = await _data.workflow(state.client, workflow_id)
    events, following = await state.client.history_page(workflow_id, count=HISTORY_PAGE)
    return _page(
        request,
        state,
        "workflow.html",
        **await _data.workflow_context(state.client, info, view),
        events=events,
        next_after=following,
        last_id=view.last_id or "0-0",
    )


@router.get("/fragments/workflows/{workflow_id}/history", response_class=HTMLResponse)
async def history_rows(
    request: Request, state: State, workflow_id: str, after: str
) -> HTMLResponse:
    """The next page of a history table's rows (and what comes after them: the next
    "more", or the live tail)."""
    events, following = await state.client.history_page(
        workflow_id, after=after, count=HISTORY_PAGE
    )
    last = events[-1]["id"] if events else after
    return state.templates.TemplateResponse(
        request,
        "_events.html",
        {"events": events, "next_after": following, "workflow_id": workflow_id, "last": last},
    )


@router.get("/definitions", response_class=HTMLResponse)
async def definitions(request: Request, state: State) -> HTMLResponse:
    return _page(request, state, "definitions.html", definitions=await state.client.definitions())


@router.get("/queues", response_class=HTMLResponse)
async def queues(request: Request, state: State) -> HTMLResponse:
    return _page(request, state, "queues.html", **await _data.queues(state.client))


# -- logging in (when a token is set) --------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, state: State) -> HTMLResponse:
    return _page(request, state, "login.html", failed=False)


@router.post("/login", response_model=None)
async def login(
    request: Request, state: State, token: Annotated[str, Form()]
) -> HTMLResponse | RedirectResponse:
    same_origin(request, form=True)
    if not token_valid(state, token):
        return _page(request, state, "login.html", failed=True)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    same_origin(request, form=True)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(TOKEN_COOKIE)
    return response


# -- actions from the pages: each answers with the fragment that says what it did -------

Acting = Annotated[WebState, Depends(acting)]


async def _said(request: Request, state: WebState, doing: Awaitable[dict[str, Any]]) -> Response:
    try:
        done = await doing
    except (LoomError, HTTPException) as exc:
        message = exc.detail if isinstance(exc, HTTPException) else str(exc)
        return state.templates.TemplateResponse(
            request, "_said.html", {"error": message, "done": None}
        )
    return state.templates.TemplateResponse(request, "_said.html", {"error": None, "done": done})


@router.post("/actions/workflows/{workflow_id}/signal")
async def signal(
    request: Request,
    state: Acting,
    workflow_id: str,
    name: Annotated[str, Form()],
    payload: Annotated[str, Form()] = "",
) -> Response:
    try:
        value = json.loads(payload) if payload.strip() else None
    except json.JSONDecodeError as exc:
        return state.templates.TemplateResponse(
            request, "_said.html", {"error": f"the payload is not JSON: {exc}", "done": None}
        )
    return await _said(request, state, _actions.signal(state.client, workflow_id, name, value))


@router.post("/actions/workflows/{workflow_id}/cancel")
async def cancel(
    request: Request, state: Acting, workflow_id: str, reason: Annotated[str, Form()] = ""
) -> Response:
    return await _said(request, state, _actions.cancel(state.client, workflow_id, reason))


@router.get("/fragments/bulk", response_class=HTMLResponse)
async def bulk_preview(request: Request, state: State, chosen: Filter) -> HTMLResponse:
    """What each bulk action would touch for the table's filter."""
    return state.templates.TemplateResponse(
        request,
        "_bulk.html",
        {
            "cancel": await _actions.cancel_preview(state.client, chosen),
            "retry": await _actions.retry_preview(state.client, chosen),
            "query": str(request.url.query),
            "may_act": state.refusal is None and token_valid(state, token_given(request)),
        },
    )


@router.post("/actions/bulk/cancel")
async def bulk_cancel(
    request: Request, state: Acting, chosen: Filter, reason: Annotated[str, Form()] = ""
) -> Response:
    return await _said(request, state, _actions.bulk_cancel(state.client, chosen, reason))


@router.post("/actions/dead-letters/{entry_id}/retry")
async def retry(request: Request, state: Acting, entry_id: str) -> Response:
    return await _said(request, state, _actions.retry(state.client, entry_id))


@router.post("/actions/bulk/retry")
async def bulk_retry(request: Request, state: Acting, chosen: Filter) -> Response:
    return await _said(request, state, _actions.bulk_retry(state.client, chosen))
