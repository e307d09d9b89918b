"""`tunewise ui`: the local web app (see docs/ui.md)."""

from __future__ import annotations

import socket

import click


def free_port(port: int = 0) -> int:
    """`port` if nothing listens on it (0: any free one); a clear error instead of a URL that fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise click.ClickException(f"port {port} on 127.0.0.1 is in use (another `tunewise ui`?); pass --port 0 for a free one") from None
        return sock.getsockname()[1]


@click.command("ui")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port on 127.0.0.1; 0 picks a free one.")
@click.option("--max-upload-mb", default=100, show_default=True, type=click.IntRange(1), help="Largest data file the page accepts as an upload.")
@click.option("--log-level", default="warning", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def command(port: int, max_upload_mb: int, log_level: str) -> None:
    """Start the web app on 127.0.0.1 and print its private URL.

    New decision (data -> audit -> questions -> advice and cost -> task file), Run (a queue with live
    progress, cancel, resume), Runs (reports, answers side by side, two runs compared) and a
    Playground that chats with any rung of a finished run. Only this machine can reach it, and only
    with the token in the printed URL.
    """
    from tunewise.paths import home
    from tunewise.serve.server import run_server
    from tunewise.ui import console
    from tunewise.web.app import build_web_app
    from tunewise.web.security import new_token

    token = new_token()
    port = free_port(port)
    app = build_web_app(token, max_upload_bytes=max_upload_mb << 20)
    url = f"http://127.0.0.1:{port}/?token={token}"
    console.print(f"[bold]tunewise ui[/bold]: open {url}", soft_wrap=True)
    console.print(f"  private to this machine (127.0.0.1) and to that link; uploads and task files go to {home() / 'web'}", soft_wrap=True)
    console.print("  Ctrl-C stops it (a run in progress is interrupted; starting it again resumes)", soft_wrap=True)
    run_server(app, "127.0.0.1", port, log_level)
