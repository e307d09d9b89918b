"""Running the app with uvicorn: in the foreground (the CLI) or on a background thread (tests, bench).

Both bound what a client can hold: its headers must arrive within the read timeout (uvicorn has no
such limit: a client trickling one header byte at a time holds a connection as long as it likes),
its body too (the app's Guard), and a graceful shutdown waits at most the shutdown timeout for
requests in flight before cancelling them.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any


def _timeouts(app: Any, read_timeout_s: float | None, shutdown_timeout_s: float | None) -> tuple[float, float]:
    """Explicit values, else what build_app stored on the app, else the defaults."""
    from tunewise.serve.app import DEFAULT_READ_TIMEOUT_S, DEFAULT_SHUTDOWN_TIMEOUT_S

    state = getattr(app, "state", None)
    if read_timeout_s is None:
        read_timeout_s = getattr(state, "read_timeout_s", DEFAULT_READ_TIMEOUT_S)
    if shutdown_timeout_s is None:
        shutdown_timeout_s = getattr(state, "shutdown_timeout_s", DEFAULT_SHUTDOWN_TIMEOUT_S)
    return read_timeout_s, shutdown_timeout_s


def header_deadline_protocol(read_timeout_s: float) -> type:
    """uvicorn's h11 protocol, plus a deadline for each request's headers.

    The clock starts when a connection opens or when the first byte of its next request arrives,
    and stops once the headers are complete; at the deadline the connection is closed (there is no
    request yet to answer). Idle keep-alive connections keep uvicorn's own `timeout_keep_alive`.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()  # a new request has begun (a no-op while its clock already runs)
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the headers are in

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(read_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.logger.info("closing a connection whose request headers took more than %g s", read_timeout_s)
                self.transport.close()

    return HeaderDeadlineProtocol


def uvicorn_config(app: Any, read_timeout_s: float, shutdown_timeout_s: float, **options: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        http=header_deadline_protocol(read_timeout_s),
        timeout_graceful_shutdown=shutdown_timeout_s,  # type: ignore[arg-type]  # a float works
        **options,
    )


def run_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    read_timeout_s: float | None = None,
    shutdown_timeout_s: float | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. uvicorn then stops accepting connections, lets requests in flight
    finish (for at most the shutdown timeout, then cancels them), and runs the app's shutdown, which
    drains the batch queues."""
    import uvicorn

    read_timeout_s, shutdown_timeout_s = _timeouts(app, read_timeout_s, shutdown_timeout_s)

    class Stopped(Exception):
        pass

    def stopped(signum: int, frame: Any) -> None:
        raise Stopped

    # After its graceful shutdown uvicorn re-raises the signal it caught under the previous handlers;
    # these turn that into a normal return (exit status 0), not a kill by SIGTERM or a KeyboardInterrupt.
    previous = {sig: signal.signal(sig, stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        config = uvicorn_config(app, read_timeout_s, shutdown_timeout_s, host=host, port=port, log_level=log_level)
        uvicorn.Server(config).run()
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

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        log_level: str = "warning",
        read_timeout_s: float | None = None,
        shutdown_timeout_s: float | None = None,
    ) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))  # the OS picks a free port; no race between choosing and binding
        self.host, self.port = self.sock.getsockname()[:2]
        read_timeout_s, shutdown_timeout_s = _timeouts(app, read_timeout_s, shutdown_timeout_s)
        self.server = uvicorn.Server(uvicorn_config(app, read_timeout_s, shutdown_timeout_s, log_level=log_level, lifespan="on"))
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
