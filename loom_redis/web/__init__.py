"""`loom web`: the dashboard and the progress API (`pip install 'loom-redis[web]'`).

FastAPI on uvicorn, pages rendered on the server (Jinja2) and made live with
Server-Sent Events and htmx, both served by the package itself. It reads through the
client and the store's query layer and acts through the client API, on the same keys
as every worker.

- `_app`: the application, its settings, the client it shares, error pages.
- `_guard`: who may act (the token, cross-site requests, a read-only Redis user).
- `_data`: what each page (and its JSON twin) shows; `_views`: the pure shaping of it.
- `_actions`: signal, cancel, re-drive, one at a time or in bulk.
- `_api` (JSON, `/api`), `_pages` (HTML), `_live` (Server-Sent Events).
"""

from ._app import WebSettings, create_app
from ._guard import is_loopback

__all__ = ["WebSettings", "create_app", "is_loopback"]
