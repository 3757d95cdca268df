"""Who may act: anyone who reaches the server reads; signal, cancel and retry need the
token (when `LOOM_WEB_TOKEN` is set), a Redis user that may write, and a request from
the dashboard's own pages or an API client, never one another site made a browser send.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from fastapi import Request
from starlette.exceptions import HTTPException

from ._app import WebState, web_state

# The cookie the login form sets: HttpOnly (no script reads it) and SameSite=Strict (no
# other site's page sends it).
TOKEN_COOKIE = "loom_web_token"


def is_loopback(host: str) -> bool:
    """Whether binding `host` serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def same_origin(request: Request, *, form: bool = False) -> None:
    """Refuse a request another site's page made a browser send.

    Browsers name the page's origin on every POST (`Origin`) and say where a request
    comes from (`Sec-Fetch-Site`); a form on another site can send neither a JSON body
    nor htmx's `HX-Request` header without a CORS preflight this server never grants.
    A plain `form` (the login's) is taken from a browser that names this origin.
    """
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"cross-site request refused (from {origin})")
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise HTTPException(403, "cross-site request refused")
    if form and origin:
        return
    content_type = request.headers.get("content-type", "")
    if not (
        request.headers.get("hx-request")
        or request.headers.get("authorization")
        or content_type.startswith("application/json")
    ):
        raise HTTPException(
            403,
            "an action must come from the dashboard's pages (htmx), carry a bearer token "
            "or send JSON",
        )


def token_given(request: Request) -> str | None:
    """The token a request carries: its bearer token, else the login cookie."""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return request.cookies.get(TOKEN_COOKIE)


def token_valid(state: WebState, given: str | None) -> bool:
    token = state.settings.token
    return token is None or (given is not None and hmac.compare_digest(given, token))


def acting(request: Request) -> WebState:
    """A dependency of every action: the state, once the request may act."""
    same_origin(request)
    state = web_state(request)
    if state.refusal:
        raise HTTPException(403, f"actions are unavailable: {state.refusal}")
    if not token_valid(state, token_given(request)):
        raise HTTPException(
            401,
            "this action needs the dashboard's token (LOOM_WEB_TOKEN): log in, or send "
            "`Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return state
