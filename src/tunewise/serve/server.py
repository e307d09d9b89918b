"""Running the app with uvicorn: in the foreground (the CLI) or on a background thread (tests, bench)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any



def run_server(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM. uvicorn then stops accepting connections, lets requests in flight
    finish, and runs the app's shutdown, which drains the batch queues."""
    import uvicorn

    class Stopped(Exception):
        pass

    def stopped(signum: int, frame: Any) -> None:
        raise Stopped

    # After its graceful shutdown uvicorn re-raises the signal it caught under the previous handlers;
    # these turn that into a normal return (exit status 0), not a kill by SIGTERM or a KeyboardInterrupt.
    previous = {sig: signal.signal(sig, stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level)).run()
    except Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class BackgroundServer:
    """uvicorn on a free loopback port in a daemon thread.

    >>> with BackgroundServer(app) as server:  # doctest: +SKIP
    ...     httpx.get(server.url + "/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", log_level: str = "warning") -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))  # the OS picks a free port; no race between choosing and binding
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """What SIGTERM does: stop accepting, finish requests in flight, run the app's shutdown."""
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
