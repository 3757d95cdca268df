"""Fixtures of the dashboard's tests: `loom web`'s app served by a real uvicorn on
loopback (in a thread of its own, with its own event loop and Redis connections), and
headless Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from loom_redis.testing import free_port
from loom_redis.web import WebSettings, create_app

CHROMIUM = os.environ.get("LOOM_TEST_CHROMIUM", "/usr/bin/chromium")
# Screenshots of each page, kept for the README (see tests/web/test_browser.py).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@contextlib.contextmanager
def serving(redis_url: str, namespace: str, token: str | None = None) -> Iterator[str]:
    """The dashboard of `namespace` served on a free loopback port; its base URL."""
    port = free_port()
    app = create_app(WebSettings(url=redis_url, namespace=namespace, token=token))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="loom-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def web(redis_url: str, namespace: str) -> Iterator[str]:
    """The base URL of the dashboard of this test's namespace (no token)."""
    with serving(redis_url, namespace) as url:
        yield url


@pytest.fixture
def serve(redis_url: str, namespace: str) -> Callable[..., Any]:
    """Serve this test's namespace with other settings: `with serve(token=...) as url`."""

    def start(**settings: Any) -> contextlib.AbstractContextManager[str]:
        return serving(settings.pop("url", redis_url), namespace, **settings)

    return start


def chromium_problem() -> str | None:
    """Why headless Chromium cannot run here, None if it can."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (Debian's `chromium` package; make test installs it)"
    return None


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """A page of headless Chromium (Debian's, no browser download), dialogs accepted."""
    problem = chromium_problem()
    if problem:
        pytest.skip(problem)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        opened = await context.new_page()

        async def accept(dialog: Any) -> None:  # hx-confirm's confirm()
            await dialog.accept()

        opened.on("dialog", accept)
        try:
            yield opened
        finally:
            await browser.close()
