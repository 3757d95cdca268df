"""The application: its settings, the one client every request shares, error pages."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from .. import __version__
from ..client import Client
from ..errors import LoomError, RedisUnavailableError, WorkflowNotFoundError
from . import _views
from ._shared import SharedReads

logger = logging.getLogger("loom_redis.web")

HERE = Path(str(resources.files(__package__)))


@dataclass(frozen=True)
class WebSettings:
    """What `loom web` serves: the namespace at `url`, and the token actions need."""

    url: str | None = None
    namespace: str | None = None
    # Signal, cancel and retry need it (a bearer token, or the login cookie) when set.
    token: str | None = None


@dataclass
class WebState:
    client: Client
    settings: WebSettings
    # Why actions are unavailable (a read-only Redis user), None when they are.
    refusal: str | None
    templates: Jinja2Templates
    # What the live pages of all viewers read (see _live.py).
    shared: SharedReads = field(default_factory=SharedReads)


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def create_app(settings: WebSettings | None = None) -> FastAPI:
    """The dashboard and the JSON API over the namespace of `settings`."""
    settings = settings or WebSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Client.connect(settings.url, namespace=settings.namespace) as client:
            refusal = await client.write_refusal()
            if refusal:
                logger.warning("actions are unavailable: %s", refusal)
            app.state.web = WebState(client, settings, refusal, _templates())
            yield

    app = FastAPI(
        title="loom-redis",
        version=__version__,
        description="The loom-redis dashboard's JSON API and Loom's progress API.",
        lifespan=lifespan,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(LoomError, _loom_error)
    app.add_exception_handler(HTTPException, _http_error)

    from . import _api, _live, _pages

    # The live routes first: Loom's `/api/progress/stream` before `/api/progress/{owner}`.
    app.include_router(_live.router)
    app.include_router(_api.router)
    app.include_router(_pages.router)
    return app


def _templates() -> Jinja2Templates:
    # Autoescaping on (Jinja2Templates' default for .html): every stored text a page
    # shows (ids, owners, payloads) is text, never markup.
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(
        version=__version__,
        format_ms=_views.format_ms,
        format_duration=_views.format_duration,
        to_json=_views.to_json,
        preview=_views.preview,
    )
    return templates


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", ""
    )


async def _loom_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, WorkflowNotFoundError):
        code = 404
    elif isinstance(exc, RedisUnavailableError):
        code = 503
    else:
        code = 400
    return _error(request, code, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(request, exc.status_code, str(exc.detail), exc.headers)


def _error(
    request: Request, code: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    templates = web_state(request).templates
    if request.headers.get("hx-request"):
        # An action's result area shows it (htmx swaps every answer: see base.html).
        return templates.TemplateResponse(
            request, "_said.html", {"error": message, "done": None}, status_code=code
        )
    if wants_html(request):
        return templates.TemplateResponse(
            request, "error.html", {"code": code, "message": message}, status_code=code
        )
    body: dict[str, Any] = {"detail": message}
    return JSONResponse(body, status_code=code, headers=dict(headers or {}))
