"""`loom web`: serve the dashboard and the progress API."""

from __future__ import annotations

import os

import click

from ._common import namespace_option, url_option

WEB_TOKEN_ENV = "LOOM_WEB_TOKEN"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@url_option
@namespace_option
@click.option(
    "--insecure",
    is_flag=True,
    help=f"Serve a non-loopback address without a token ({WEB_TOKEN_ENV}): anyone who "
    "reaches it may then signal, cancel and retry.",
)
def web(host: str, port: int, url: str | None, namespace: str | None, insecure: bool) -> None:
    """Serve the dashboard and the progress API (needs `pip install 'loom-redis[web]'`).

    Anyone who reaches it reads. Signal, cancel and retry need the token in
    LOOM_WEB_TOKEN when it is set (a bearer token, or the dashboard's login); given
    only the read-only Redis user of docs/security.md, actions say why they are
    unavailable.
    """
    try:
        import uvicorn

        from ..web import WebSettings, create_app, is_loopback
    except ImportError as exc:
        raise click.ClickException(
            f"loom web needs the web extra ({exc.name} is missing): pip install 'loom-redis[web]'"
        ) from None
    token = os.environ.get(WEB_TOKEN_ENV) or None
    if not is_loopback(host) and token is None and not insecure:
        raise click.ClickException(
            f"refusing to serve {host}, which other machines can reach, without a token: "
            f"set {WEB_TOKEN_ENV} (actions then need it), or pass --insecure to let "
            "anyone who reaches it act"
        )
    app = create_app(WebSettings(url=url, namespace=namespace, token=token))
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"loom web: the dashboard is at http://{shown}:{port}/ (API docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
